"""Comparison benchmark: fl-broker against Flower on the workloads of issue 10 (run `python -m bench.compare`)."""
