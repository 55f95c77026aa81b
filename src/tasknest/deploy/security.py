"""TLS settings: certificate files, or a temporary self-signed certificate."""
from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field

from ..errors import CallerError
from ..tls import client_ssl_context, server_ssl_context

__all__ = ["Security", "client_ssl_context", "server_ssl_context"]


@dataclass
class Security:
    """Where the TLS certificate, key and CA live. ``Security.temporary()`` makes them."""

    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    temporary_dir: str | None = field(default=None, repr=False)   # made by temporary()

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.tls_ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls_cert is None:
            raise CallerError("a server's Security needs tls_cert (and tls_key, unless "
                              "the certificate file holds the key)")
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False      # peers are addressed by IP; the CA pins identity
        if self.tls_cert and self.tls_key:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    @classmethod
    def temporary(cls, directory: str | None = None) -> "Security":
        """A fresh self-signed certificate (its own CA), for a LocalCluster over TLS."""
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import NameOID
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("temporary TLS certificates need the 'cryptography' package: "
                              "pip install 'tasknest[tls]'") from exc
        import datetime
        import ipaddress
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tasknest")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=7))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                    critical=False)
                .sign(key, hashes.SHA256()))
        made = directory is None
        d = directory or tempfile.mkdtemp(prefix="tasknest-tls-")
        cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return cls(cert_path, key_path, cert_path, d if made else None)

    def cleanup(self) -> None:
        """Delete the files of a temporary certificate (no-op for your own files)."""
        if self.temporary_dir:
            shutil.rmtree(self.temporary_dir, ignore_errors=True)
            self.temporary_dir = None

    def cli_args(self) -> list[str]:
        out = []
        for flag, value in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                            ("--tls-ca", self.tls_ca)):
            if value:
                out += [flag, value]
        return out
