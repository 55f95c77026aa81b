"""Benchmark harness: the same workloads on tasknest, dask.distributed and Ray.

Run ``python -m benchmarks.run`` from the repository root; see ``run.py``.
"""
