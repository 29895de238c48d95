"""Helpers of ``benchmarks/bench_network.py``: the workload (issue 17), the Flower side, process sampling."""
