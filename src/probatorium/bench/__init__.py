"""The bench tier: cells (workloads), competitors, verification, latency_at_slo,
the server observer, the runner and bench-since."""
