"""The shared count of open streams per user, on a real NATS KV bucket: a user's streams that
close together are given back in one write, not raced against each other for the same key
(which, with many users closing at once, ran out of attempts and left slots to lapse)."""

from __future__ import annotations

from gateway.adapters.stream_slots import NatsStreamSlots
from svc_runtime import messaging
from tests.support.infra import SharedInfra, unique_name
from tests.support.polling import eventually


async def test_streams_closing_together_give_their_slots_back_in_one_write(infra: SharedInfra) -> None:
    topology = messaging.Topology(unique_name("slots"))
    slots = NatsStreamSlots(infra.nats_url, topology, per_user=5)
    slots.start()
    try:
        await eventually(lambda: slots.record.ready, timeout=15)
        assert all([await slots.take("ravi") for _ in range(5)])
        assert not await slots.take("ravi")  # the sixth is refused
        kv = slots.record.kv
        assert kv is not None
        key = messaging.Topology.quote_key("ravi")
        before = (await kv.get(key)).revision
        for _ in range(5):  # the client goes away: every stream ends at once
            slots.release("ravi")
        await eventually(lambda: not slots._tasks, timeout=10, interval=0.01)
        entry = await kv.get(key)
        assert entry.value == b"{}"
        assert entry.revision is not None and before is not None
        assert entry.revision - before == 1  # one write for the five
        assert all([await slots.take("ravi") for _ in range(5)])  # all five free again
    finally:
        await slots.stop()
