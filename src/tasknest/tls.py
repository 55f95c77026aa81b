"""TLS contexts for an address: what the client, the worker and the scheduler share.

``security`` is anything with ``client_context()`` / ``server_context()`` (the public
``Security`` of deploy/security.py, which makes certificates)."""
from __future__ import annotations

import ssl
from typing import Any

from .errors import CallerError


def client_ssl_context(security: Any, address: str) -> ssl.SSLContext | None:
    """The context to connect to ``address`` with: None for tcp://.

    Raises:
        CallerError: a tls:// address without TLS settings.
    """
    if address.startswith("tls://"):
        if security is None:
            raise CallerError(f"{address} is a tls:// address: pass security=Security(...)")
        return security.client_context()
    return None


def server_ssl_context(security: Any) -> ssl.SSLContext | None:
    """The context to listen with: None without TLS settings."""
    return None if security is None else security.server_context()
