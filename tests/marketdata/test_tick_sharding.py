"""The tick shard function consumers share (svc_runtime.messaging.Topology)."""

from __future__ import annotations

from svc_runtime.messaging import TICK_SHARDS, Topology


def test_shards_are_stable_and_spread() -> None:
    symbols = [f"S{n}" for n in range(2000)]
    shards = [Topology.tick_shard(s) for s in symbols]
    # Fixed values: a consumer in another process (or release) must compute the same shard.
    assert Topology.tick_shard("INFY") == "02"
    assert Topology.tick_shard("RELIANCE") == "08"
    counts = {shard: shards.count(shard) for shard in set(shards)}
    assert len(counts) == TICK_SHARDS
    assert max(counts.values()) < 2 * min(counts.values())


def test_subjects_for_a_set_of_symbols() -> None:
    topology = Topology("ns")
    subjects = topology.tick_subjects_for(["INFY", "TCS", "INFY"])
    assert subjects == sorted(set(subjects))
    assert topology.tick_subject_for("INFY") in subjects
    assert all(s.startswith("ns.md.ticks.") for s in subjects)


def test_quote_keys_are_kv_safe() -> None:
    assert Topology.quote_key("M&M") == "M=26M"
    assert Topology.quote_key("BAJAJ-AUTO") == "BAJAJ-AUTO"
    assert Topology("ns").quotes_bucket == "ns_quotes"
