"""Benchmarks: one harness, scenarios per area, same-run baselines, a table, JSON and a report."""
