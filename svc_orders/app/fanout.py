"""In-process fan-out of order events to StreamOrderUpdates streams.

One subscription per process feeds every stream of every user; each stream has a bounded
queue. A stream whose client does not keep up is ended (it can resume from its last event
id) rather than buffered without bound, and the publisher never waits for a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from brokermesh.orders.v1 import orders_pb2
from svc_orders.app import metrics

log = logging.getLogger(__name__)


class StreamFellBehind(Exception):
    """The stream's queue filled up: its client is too slow."""


class Subscription:
    def __init__(self, fanout: OrderEventFanout, user_id: str, capacity: int) -> None:
        self.fanout = fanout
        self.user_id = user_id
        self.queue: asyncio.Queue[orders_pb2.OrderEvent] = asyncio.Queue(capacity)
        self.fell_behind = False
        self._wake = asyncio.Event()

    def offer(self, event: orders_pb2.OrderEvent) -> None:
        if self.fell_behind:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.fell_behind = True
            metrics.STREAMS_DROPPED.inc()
            log.warning("order update stream fell behind; ending it", extra={"user_id": self.user_id})
        self._wake.set()

    async def next(self) -> orders_pb2.OrderEvent:
        while True:
            if self.fell_behind:
                raise StreamFellBehind
            if not self.queue.empty():
                return self.queue.get_nowait()
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self.fanout.unsubscribe(self)


class OrderEventFanout:
    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._by_user: dict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, user_id: str) -> Subscription:
        subscription = Subscription(self, user_id, self.capacity)
        self._by_user[user_id].add(subscription)
        metrics.STREAMS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._by_user.get(subscription.user_id)
        if subscribers and subscription in subscribers:
            subscribers.discard(subscription)
            metrics.STREAMS.dec()
            if not subscribers:
                del self._by_user[subscription.user_id]

    def wants(self, user_id: str) -> bool:
        return user_id in self._by_user

    def publish(self, event: orders_pb2.OrderEvent) -> None:
        for subscription in list(self._by_user.get(event.order.user_id, ())):
            subscription.offer(event)
