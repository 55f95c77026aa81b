"""``tasknest status [ADDRESS]``: the cluster at a glance, in a terminal."""
from __future__ import annotations

from collections import Counter
from typing import Any


def status_text(client: Any) -> str:
    workers = client.scheduler_info(-1)["workers"]
    states = Counter(client._query("tasks").values())
    running = client.processing()
    lines = [f"scheduler {client.scheduler_address}"
             + (f"  dashboard {client.dashboard_link.split('?')[0]}"
                if client.dashboard_link else ""),
             f"{len(workers)} workers, {sum(w['nthreads'] for w in workers.values())} threads"]
    for address, w in sorted(workers.items()):
        lines.append(f"  {w['name']:<16} {address:<24} {w['nthreads']} threads  "
                     f"{w['processing']} tasks  {w['keys']} results  "
                     f"{w['memory'] / 2**20:.0f} MiB{'  paused' if w['paused'] else ''}")
    lines.append("tasks: " + (", ".join(f"{n} {s}" for s, n in sorted(states.items()))
                              or "none"))
    for address, keys in sorted(running.items()):
        if keys:
            shown = ", ".join(keys[:5]) + (f" … ({len(keys)} in all)" if len(keys) > 5 else "")
            lines.append(f"  running on {address}: {shown}")
    return "\n".join(lines)


def main(address: str, token: str | None, security: Any) -> int:
    from ..client.client import Client
    with Client(address, token=token, security=security, set_as_default=False) as c:
        print(status_text(c))
    return 0
