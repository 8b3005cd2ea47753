"""Benchmarks: engine (db_bench style), cluster (latency/throughput vs raw Ray), YCSB workloads."""
