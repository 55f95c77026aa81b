"""tasknest: distributed futures for Python in which tasks can launch tasks."""
from __future__ import annotations

from .version import __version__  # noqa: E402
from .client.client import Client, Executor  # noqa: E402
from .registry import default_client  # noqa: E402
from .client.actor import Actor  # noqa: E402
from .client.coordination import Event, Lock, Queue, Semaphore, Variable  # noqa: E402
from .client.future import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION,  # noqa: E402
                            Future, as_completed, fire_and_forget, wait)
from .deploy.cluster import Cluster  # noqa: E402
from .deploy.local import LocalCluster  # noqa: E402
from .deploy.slurm import SLURMCluster, SubmissionError  # noqa: E402
from .deploy.ssh import SSHCluster  # noqa: E402
from .deploy.security import Security  # noqa: E402
from .errors import (AuthenticationError, BlockingCallError, CallerError,  # noqa: E402
                     ClosedClientError, ClusterStartError, CommClosedError, ConnectError,
                     FutureCancelledError, KilledWorker, LostError, NotFoundError,
                     ProtocolError, RemoteError, SchedulerLostError, SerializationError,
                     TasknestError, TimedOutError)
from .dashboard.report import performance_report  # noqa: E402
from .progress import progress  # noqa: E402
from .worker.context import (get_client, get_worker, local_executor, rejoin,  # noqa: E402
                             secede, worker_client)

__all__ = [
    "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "Actor",
    "AuthenticationError", "BlockingCallError", "CallerError", "Client", "ClosedClientError",
    "Cluster", "ClusterStartError", "CommClosedError", "ConnectError", "Event", "Executor",
    "Future", "FutureCancelledError", "KilledWorker", "LocalCluster", "Lock", "LostError",
    "NotFoundError", "ProtocolError", "Queue", "RemoteError", "SLURMCluster", "SSHCluster",
    "SchedulerLostError", "Security", "Semaphore", "SerializationError", "SubmissionError",
    "TasknestError", "TimedOutError", "Variable",
    "as_completed", "default_client", "fire_and_forget", "get_client", "get_worker",
    "local_executor", "performance_report", "progress", "rejoin", "secede", "wait", "worker_client", "__version__",
]
