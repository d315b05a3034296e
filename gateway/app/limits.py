"""Every limit of the edge in one place, enforced where it applies and published as numbers
(GET /v1/limits, and `RateLimit` / `RateLimit-Policy` headers).

One rule for what exceeding a limit answers: a limit on *rate or concurrency* (requests,
orders, failed logins or authentications, open streams) is 429 with `Retry-After`, because
the same request succeeds later; a limit on the *shape* of one request (body bytes, JSON
bounds, page size, symbols per stream, order size) is 400 (413 for body bytes), because it
never will.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gateway.app.admission import Admission
from gateway.app.ports import RequestRatePort, StreamSlotsPort
from gateway.domain.jsonmoney import LIMITS, JsonLimits
from gateway.domain.limits import LoginGuard, RateLimiter
from gateway.settings import OrderLimits, StreamSettings

REQUESTS_POLICY = "requests"
ORDERS_POLICY = "orders"
AUTH_FAILURES_POLICY = "failed-authentication"
MAX_PAGE_SIZE = 100


def policy_item(name: str, quota: int, window_seconds: float) -> str:
    """One RateLimit-Policy member (draft-ietf-httpapi-ratelimit-headers): a token bucket of
    `quota` requests refilled over `window_seconds` is published as that quota per window."""
    return f'"{name}";q={quota};w={max(1, math.ceil(window_seconds))}'


def state_item(name: str, remaining: int, reset_seconds: float) -> str:
    """One RateLimit member: requests left now, and whole seconds until the quota is full."""
    return f'"{name}";r={max(0, remaining)};t={max(0, math.ceil(reset_seconds))}'


@dataclass
class EdgeLimits:
    requests: RequestRatePort
    auth_failures: RateLimiter
    logins: LoginGuard
    slots: StreamSlotsPort
    streams: StreamSettings
    orders: OrderLimits
    max_body_bytes: int
    json: JsonLimits = field(default=LIMITS)
    # Order placements in progress in this process: past it, 429 before anything is done.
    placements: Admission = field(default_factory=Admission)

    def request_key(self, user_id: str, client_ip: str) -> str:
        # Anonymous requests (login) are limited per client address instead.
        return f"user:{user_id}" if user_id else f"ip:{client_ip}"

    def request_policy(self) -> str:
        return policy_item(REQUESTS_POLICY, self.requests.burst, self.requests.window_seconds)

    def order_policy(self) -> str:
        burst = self.orders.order_burst
        return policy_item(ORDERS_POLICY, burst, burst / float(self.orders.orders_per_second))

    def auth_failure_policy(self) -> str:
        return policy_item(AUTH_FAILURES_POLICY, self.auth_failures.burst, self.auth_failures.window_seconds)

    def request_state(self, key: str, now: float) -> str:
        remaining, reset = self.requests.remaining(key, now)
        return state_item(REQUESTS_POLICY, remaining, reset)

    def for_caller(self, user_id: str, client_ip: str, now: float) -> dict[str, Any]:
        remaining, reset = self.requests.remaining(self.request_key(user_id, client_ip), now)
        return {
            "requests": {
                "perSecond": self.requests.rate,
                "burst": self.requests.burst,
                "remaining": remaining,
                "resetSeconds": math.ceil(reset),
                "scope": "user",
            },
            "orders": {
                "perSecond": self.orders.orders_per_second,
                "burst": self.orders.order_burst,
                "maxQuantity": self.orders.max_quantity,
                "maxValue": self.orders.max_value,
                "priceCollarPercent": self.orders.price_collar * 100,
                "scope": "user",
            },
            "streams": {
                "concurrent": self.slots.per_user,
                "open": self.slots.open_streams(user_id),
                "symbolsPerStream": self.streams.symbols_per_stream,
                "pushesPerSecond": self.streams.pushes_per_second,
            },
            "bodies": {
                "maxBytes": self.max_body_bytes,
                "maxDepth": self.json.max_depth,
                "maxStringChars": self.json.max_string_chars,
                "maxArrayItems": self.json.max_array_items,
                "maxObjectMembers": self.json.max_object_members,
                "maxNumberChars": self.json.max_number_chars,
            },
            "pages": {"maxPageSize": MAX_PAGE_SIZE},
            "logins": {
                "freeFailuresPerUsernameAndAddress": self.logins.free_failures,
                "failuresPerAddress": self.logins.address_failures,
                "failuresPerUsername": self.logins.user_failures,
                "maxLockSeconds": self.logins.max_lock,
                "scope": "username and address",
            },
            "failedAuthentication": {
                "perSecond": self.auth_failures.rate,
                "burst": self.auth_failures.burst,
                "scope": "address",
            },
        }
