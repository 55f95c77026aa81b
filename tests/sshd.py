"""A real OpenSSH server for tests: throwaway host and user keys, started by the test
in a network namespace (one per "host") or on loopback, and stopped with it."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

SSHD = "/usr/sbin/sshd"


def missing() -> str:
    if not os.path.exists(SSHD) or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH (Debian packages openssh-server and openssh-client) is not installed"
    if os.geteuid() != 0:
        return "an sshd that lets the test log in as itself needs root here"
    return ""


class Keys:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.host_key = os.path.join(directory, "host_ed25519")
        self.user_key = os.path.join(directory, "user_ed25519")
        for path in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path],
                           check=True, capture_output=True)
        self.authorized = os.path.join(directory, "authorized_keys")
        shutil.copy(self.user_key + ".pub", self.authorized)
        os.chmod(self.authorized, 0o600)


class Sshd:
    """``sshd -D`` listening on ``address:port``, inside ``netns`` if given."""

    def __init__(self, keys: Keys, address: str, port: int, netns: str | None = None) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # its privilege separation dir
        self.address, self.port = address, port
        self.config = os.path.join(keys.dir, f"sshd_{address}_{port}.conf")
        with open(self.config, "w") as f:
            f.write(f"Port {port}\nListenAddress {address}\nHostKey {keys.host_key}\n"
                    f"AuthorizedKeysFile {keys.authorized}\nPidFile none\n"
                    "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "UsePAM no\nStrictModes no\nAcceptEnv none\nMaxStartups 50\n"
                    "MaxSessions 50\nLogLevel ERROR\n")
        cmd = [SSHD, "-D", "-e", "-f", self.config]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)

    def wait_ready(self, keys: Keys, netns_prefix: list[str], timeout: float = 20.0) -> None:
        """Until a login works (an sshd that is listening answers a real ssh)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.proc.stderr.read().decode()}")
            r = subprocess.run([*netns_prefix, "ssh", *client_options(keys, self.port),
                                self.address, "true"], capture_output=True, timeout=20)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot log in to the test sshd: {r.stderr.decode()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def client_options(keys: Keys, port: int) -> list[str]:
    return ["-T", "-o", "BatchMode=yes", "-p", str(port), "-i", keys.user_key,
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
