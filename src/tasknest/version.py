"""The package's version: one place, read by the public API and by every handshake."""
from __future__ import annotations

__version__ = "0.1.0"
