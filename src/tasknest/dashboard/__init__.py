"""The web dashboard: served from the scheduler's process, in its own thread."""
from __future__ import annotations

from typing import Any


async def serve_dashboard(scheduler: Any, address: str) -> Any:
    """A scheduler's ``dashboard_factory``: aiohttp is imported only when one starts,
    and in a thread, so that the scheduler's loop serves its peers meanwhile (a
    restarted scheduler's workers are reconnecting at that moment)."""
    import asyncio
    import importlib
    server = await asyncio.get_running_loop().run_in_executor(
        None, importlib.import_module, f"{__name__}.server")
    return await server.serve(scheduler, address)
