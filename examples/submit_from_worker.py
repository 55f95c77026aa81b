"""Option 3 of "launch tasks from tasks": a task that submits tasks from its worker.

Run: python examples/submit_from_worker.py
"""
from __future__ import annotations

from tasknest import Client, worker_client


def download_and_convert_to_list(uri: str) -> list[int]:
    return [len(uri) * i for i in range(20)]      # stands in for a real download


def process_element(x: int) -> int:
    return x * 2 + 1


def aggregate(values: list[int]) -> int:
    return sum(values)


def process_all(data: list[int]) -> int:
    with worker_client() as e:                      # the worker's own client
        elements = e.scatter(data)                  # stays on this worker
        futures = e.map(process_element, elements)
        analysis = e.submit(aggregate, futures)
        result = analysis.result()                  # waits without holding a slot
    return result


def main() -> int:
    with Client() as e:
        data = e.submit(download_and_convert_to_list, "s3://bucket/data")
        analysis = e.submit(process_all, data)      # spawns many tasks
        result = analysis.result()
    print(result)
    return result


if __name__ == "__main__":
    main()
