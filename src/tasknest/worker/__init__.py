"""The worker: a pure state machine (state.py), the task thread pool (pool.py), the
in-task client (client.py), the task context API (context.py) and the shell (server.py)."""
