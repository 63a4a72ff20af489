"""Benchmark harness: the gateway against a naive MediaRelay baseline, same load, same run."""
