"""Tasks that launch tasks, for tests whose workers run anywhere (LocalCluster, SSH hosts,
SLURM jobs): a worker finds a function by its module's name, so these live in a module
of their own, which every test folder and every worker can import."""
from __future__ import annotations

from tasknest import worker_client


def fib_tasks(n, path=None):
    """Every call is its own task (pure=False); optionally one line per call in ``path``."""
    if path is not None:
        with open(path, "a") as f:
            f.write(f"{n}\n")
    if n < 2:
        return n
    with worker_client() as c:
        a = c.submit(fib_tasks, n - 1, path, pure=False)
        b = c.submit(fib_tasks, n - 2, path, pure=False)
        a, b = c.gather([a, b])
        return a + b
