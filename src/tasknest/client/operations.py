"""Operations on the cluster itself, for Client: run a function on every worker or on
the scheduler, worker plugins, uploaded files.

    client.run(fn) ──run──> scheduler ──run-on──> each worker (a thread, outside tasks)
                   <──reply {address: result}── scheduler <──run-done── each worker

A plugin (and an uploaded file, which is one) is kept by the scheduler and set up
on every worker that joins later too; a worker tears its plugins down as it closes.

They hold no state of their own: each is a function of a typed ``self: Client``,
bound as a method in Client's body (``run = operations.run``).
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Callable

from ..errors import CallerError, RemoteError
from ..protocol import messages as m
from ..protocol.calls import dumps_run
from ..protocol.serialize import loads_value

if TYPE_CHECKING:
    from .client import Client


def _setup_plugin(name: str, plugin: Any, dask_worker: Any = None) -> Any:
    """Runs on a worker: replaces a plugin of that name, then sets the new one up."""
    old = dask_worker.plugins.pop(name, None)
    if old is not None and hasattr(old, "teardown"):
        old.teardown(dask_worker)
    dask_worker.plugins[name] = plugin
    setup = getattr(plugin, "setup", None)
    return setup(dask_worker) if setup is not None else None


class UploadedFile:
    """A worker plugin that writes a .py, .zip or .egg file where the worker's Python
    imports from (a .py module already imported is reloaded)."""

    def __init__(self, filename: str, data: bytes) -> None:
        self.filename = filename
        self.data = data

    def setup(self, worker: Any) -> None:
        folder = getattr(worker, "upload_dir", None)
        if folder is None:
            folder = worker.upload_dir = tempfile.mkdtemp(prefix="tasknest-uploads-")
        path = os.path.join(folder, self.filename)
        with open(path, "wb") as fh:
            fh.write(self.data)
        entry = folder if self.filename.endswith(".py") else path
        if entry not in sys.path:
            sys.path.insert(0, entry)
        importlib.invalidate_caches()
        module = os.path.splitext(self.filename)[0]
        if self.filename.endswith(".py") and module in sys.modules:
            importlib.reload(sys.modules[module])


def _op(self: Client, msg: m.Request, post: Callable[[Any], Any],
        timeout: float | None = None) -> Any:
    """One request to the scheduler; a coroutine on an asynchronous client."""
    self._check()
    if self.asynchronous:
        async def _a() -> Any:
            return post(await self._request_async(msg, timeout))
        return _a()
    with self._lending():
        return post(self._request(msg, timeout))


def restart(self: Client, timeout: float | None = 60.0) -> Any:
    """Start every worker process anew (their nannies do).

    Every future not yet released errs with a "restarted" error; submitting again runs
    it again.

    Args:
        timeout: seconds (or a string) to wait for as many new workers to join.

    Returns:
        Once as many new workers have joined.

    Raises:
        TimedOutError: they did not join within ``timeout``.
    """
    if self._worker_side:
        raise CallerError("restart() from inside a task would stop that task's worker")
    return _op(self, m.Restart(0), lambda _: None, timeout)


def retire_workers(self: Client, workers: Any, timeout: float = 60.0) -> Any:
    """Retire these workers (addresses or names) gracefully: they get no new task,
    the results only they hold are copied to other workers (nothing is computed
    again), their running tasks finish (for up to ``timeout`` seconds; what is
    still running then runs again elsewhere), then they leave.

    Args:
        workers: an address or name, or a list of them.
        timeout: seconds the running tasks get to finish.

    Returns:
        The addresses of the workers that left.

    Raises:
        CallerError: no workers were named.
    """
    names = self._workers_arg(workers)
    if not names:
        raise CallerError("retire_workers() needs the addresses or names of workers")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise CallerError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return _op(self, m.Retire(0, list(names), max(1, int(timeout * 1000))), lambda v: v,
                    float(timeout) + 30.0)


def run(self: Client, function: Callable, *args: Any, workers: Any = None,
        on_error: str = "raise", **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` once on each worker, outside any task.

    Args:
        function: a picklable callable; a ``dask_worker`` parameter gets the worker.
        *args, **kwargs: its arguments.
        workers: addresses or names; None: every worker.
        on_error: "raise" the first exception, or "return" exceptions as results.

    Returns:
        ``{worker address: result}``.

    Raises:
        The function's exception (with ``on_error="raise"``).
    """
    if not callable(function):
        raise CallerError(f"run() needs a callable, got {function!r:.60}")
    if on_error not in ("raise", "return"):
        raise CallerError(f"on_error must be 'raise' or 'return', got {on_error!r}")
    msg = m.Run(0, dumps_run(function, args, kwargs),
                self._workers_arg(workers), "workers", "")
    return _op(self, msg, lambda answer: _results(answer, on_error))


def run_on_scheduler(self: Client, function: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` in the scheduler's process.

    Args:
        function: a picklable callable; a ``dask_scheduler`` parameter gets the scheduler.
        *args, **kwargs: its arguments.

    Returns:
        Its result.

    Raises:
        The function's exception.
    """
    if not callable(function):
        raise CallerError(f"run_on_scheduler() needs a callable, got {function!r:.60}")
    msg = m.Run(0, dumps_run(function, args, kwargs), None, "scheduler", "")
    return _op(self, msg, lambda answer: _results(answer, "raise")["scheduler"])


def register_plugin(self: Client, plugin: Any, name: str | None = None) -> Any:
    """Set ``plugin`` up on every worker, present and future.

    ``plugin.setup(worker)`` runs now (or as a worker joins), ``plugin.teardown(worker)``
    as it closes. A plugin of the same name replaces the earlier one.

    Args:
        plugin: an object with ``setup(worker)`` and optionally ``teardown(worker)``.
        name: its name (by default its ``name`` attribute, or its class and id).

    Returns:
        ``{worker address: setup's result}``.

    Raises:
        setup's own exception, raised on a worker; CallerError: a name that is not a
        string.
    """
    name = name or getattr(plugin, "name", None) or \
        f"{type(plugin).__name__}-{id(plugin):x}"
    if not isinstance(name, str):
        raise CallerError(f"a plugin name must be a string, got {name!r}")
    msg = m.Run(0, dumps_run(_setup_plugin, (name, plugin), {}), None, "workers", name)
    return _op(self, msg, lambda answer: _results(answer, "raise"))


def upload_file(self: Client, filename: str) -> Any:
    """Make a .py, .zip or .egg file importable on every worker, present and future.

    Args:
        filename: the local file's path.

    Returns:
        ``{worker address: None}``, once every present worker has it.

    Raises:
        CallerError: the file cannot be read or is not .py, .zip or .egg.
    """
    if not isinstance(filename, str) or not filename.endswith((".py", ".zip", ".egg")):
        raise CallerError(f"upload_file() takes the path of a .py, .zip or .egg file, "
                          f"got {filename!r}")
    try:
        with open(filename, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CallerError(f"upload_file() cannot read {filename!r}: {exc}") from exc
    base = os.path.basename(filename)
    return register_plugin(self, UploadedFile(base, data), name="upload:" + base)


def get_executor(self: Client, **submit_options: Any) -> Any:
    """A concurrent.futures.Executor whose submits go through this client.

    Args:
        **submit_options: passed to every ``submit`` (e.g. ``workers=``, ``retries=``).

    Returns:
        A ``concurrent.futures.Executor``.
    """
    from .executor import ClientExecutor
    return ClientExecutor(self, **submit_options)


def resources_arg(resources: Any) -> dict | None:
    """Check submit's resources= ({name: non-negative amount})."""
    if resources is None:
        return None
    if not isinstance(resources, dict) or not all(
            isinstance(k, str) and type(v) in (int, float) and v >= 0
            for k, v in resources.items()):
        raise CallerError(f"resources must map names to non-negative numbers, "
                          f"got {resources!r}")
    return dict(resources) or None


def _results(answer: dict, on_error: str) -> dict:
    out = {}
    for address, (ok, frames) in answer.items():
        if not frames:
            value: Any = RemoteError(f"worker {address} died before it answered")
        else:
            value = loads_value(frames)
        if (not ok or not frames) and on_error == "raise":
            raise value
        out[address] = value
    return out
