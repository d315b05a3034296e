"""Scenario modules: each exports `SCENARIOS: list[bench.api.Scenario]`."""
