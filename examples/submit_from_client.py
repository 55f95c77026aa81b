"""Option 2 of "launch tasks from tasks": bring back only the length, split remotely.

Run: python examples/submit_from_client.py
"""
from __future__ import annotations

from operator import getitem

from tasknest import Client


def download_and_convert_to_list(uri: str) -> list[int]:
    return [len(uri) * i for i in range(20)]      # stands in for a real download


def process_element(x: int) -> int:
    return x * 2 + 1


def aggregate(values: list[int]) -> int:
    return sum(values)


def main() -> int:
    with Client() as e:
        data = e.submit(download_and_convert_to_list, "s3://bucket/data")  # stays remote
        n = e.submit(len, data)                     # compute number of elements
        n = n.result()                              # gather n (small) locally
        elements = [e.submit(getitem, data, i) for i in range(n)]  # split data
        futures = e.map(process_element, elements)
        analysis = e.submit(aggregate, futures)
        result = analysis.result()
    print(result)
    return result


if __name__ == "__main__":
    main()
