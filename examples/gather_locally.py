"""Option 1 of "launch tasks from tasks": gather the data locally, submit from here.

Run: python examples/gather_locally.py
"""
from __future__ import annotations

from tasknest import Client


def download_and_convert_to_list(uri: str) -> list[int]:
    return [len(uri) * i for i in range(20)]      # stands in for a real download


def process_element(x: int) -> int:
    return x * 2 + 1


def aggregate(values: list[int]) -> int:
    return sum(values)


def main() -> int:
    with Client() as e:                               # starts a local cluster
        future = e.submit(download_and_convert_to_list, "s3://bucket/data")
        data = future.result()                      # gather data to local process
        futures = e.map(process_element, data)      # submit new tasks on data
        analysis = e.submit(aggregate, futures)     # submit final aggregation task
        result = analysis.result()
    print(result)
    return result


if __name__ == "__main__":
    main()
