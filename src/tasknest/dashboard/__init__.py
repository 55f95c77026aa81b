"""The web dashboard: served from the scheduler's process, in its own thread."""
from __future__ import annotations

from typing import Any


async def serve_dashboard(scheduler: Any, address: str) -> Any:
    """A scheduler's ``dashboard_factory``: aiohttp is imported only when one starts."""
    from .server import serve
    return await serve(scheduler, address)
