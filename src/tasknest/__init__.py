"""tasknest: distributed futures for Python in which tasks can launch tasks."""
from __future__ import annotations

__version__ = "0.1.0"

from .client.client import Client, Executor, default_client  # noqa: E402
from .client.actor import Actor  # noqa: E402
from .client.coordination import Event, Lock, Queue, Semaphore, Variable  # noqa: E402
from .client.future import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION,  # noqa: E402
                            Future, as_completed, fire_and_forget, wait)
from .deploy.local import LocalCluster  # noqa: E402
from .deploy.security import Security  # noqa: E402
from .errors import (AuthenticationError, CallerError, ClosedClientError,  # noqa: E402
                     CommClosedError, FutureCancelledError, KilledWorker, LostError,
                     ProtocolError, RemoteError, SchedulerLostError, SerializationError,
                     TasknestError)
from .dashboard.report import performance_report  # noqa: E402
from .progress import progress  # noqa: E402
from .worker.context import (get_client, get_worker, local_executor, rejoin,  # noqa: E402
                             secede, worker_client)

__all__ = [
    "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "Actor",
    "AuthenticationError", "CallerError", "Client", "ClosedClientError", "CommClosedError",
    "Event", "Executor", "Future", "FutureCancelledError", "KilledWorker", "LocalCluster",
    "Lock", "LostError", "ProtocolError", "Queue", "RemoteError", "SchedulerLostError",
    "Security", "Semaphore", "SerializationError", "TasknestError", "Variable",
    "as_completed", "default_client", "fire_and_forget", "get_client", "get_worker",
    "local_executor", "performance_report", "progress", "rejoin", "secede", "wait", "worker_client", "__version__",
]
