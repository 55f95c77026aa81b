"""One exception root; subclasses say who is at fault."""
from __future__ import annotations

from concurrent.futures import CancelledError


class TasknestError(Exception):
    """Root of every error tasknest raises itself."""


class CallerError(TasknestError, ValueError, TypeError):
    """The caller used the API wrongly (bad argument, closed client, ...).

    A ValueError and a TypeError at once, so code written for either catches it."""


class BlockingCallError(CallerError, RuntimeError):
    """A blocking call on an event loop's thread (in an async task: await it instead)."""


class ClosedClientError(CallerError):
    """An operation was attempted on a client that is closed."""


class NotFoundError(CallerError, KeyError):
    """Nothing goes by that name (e.g. a dataset never published); also a KeyError."""

    def __str__(self) -> str:          # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TimedOutError(TasknestError, TimeoutError):
    """A wait ran past its timeout (also the builtin TimeoutError, as dask raises)."""


class ClusterStartError(TasknestError, RuntimeError):
    """A LocalCluster could not start its scheduler or workers (the reason is chained)."""


class CommClosedError(TasknestError, ConnectionError):
    """The peer went away or the connection was closed."""


class ConnectError(CommClosedError, TimeoutError):
    """Nothing answered at an address within the timeout (also a TimeoutError)."""


class ProtocolError(TasknestError):
    """A peer sent something that is not a valid message."""


class AuthenticationError(TasknestError, PermissionError):
    """The peer failed the shared-secret handshake."""


class RemoteError(TasknestError):
    """A failure on the cluster that is not the task's own exception."""


class SerializationError(RemoteError):
    """An argument or result could not be pickled or unpickled."""


class FutureCancelledError(TasknestError, CancelledError):
    """The future was cancelled (also a ``concurrent.futures.CancelledError``)."""


class LostError(RemoteError):
    """A result was lost and cannot be recomputed (e.g. scattered data on a dead worker)."""


class KilledWorker(RemoteError):
    """A task was running on too many workers that died."""


class SchedulerLostError(RemoteError, ConnectionError):
    """The connection to the scheduler was lost."""


class RemoteTraceback(Exception):
    """Carries a task's remote traceback text; chained as the __cause__."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class SubmissionError(TasknestError, RuntimeError):
    """The batch system refused to take the cluster's jobs (sbatch failed)."""
