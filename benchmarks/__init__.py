"""``hoplink bench``: throughput, latency and scale, each figure beside its floor."""
