"""gRPC callers for tests, each with a credential the stack's services accept.

Tests that stand in for a neighbour service call as that service (its signed identity);
tests of the operator tools call as an operator; tests of what a trading desktop may do
call with a user's access token, as issued at `POST /v1/sessions`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import grpc

from svc_runtime.auth import BearerToken, Credentials, Signer, configure_process
from svc_runtime.grpc_client import channel, raw_channel, signing_interceptors
from svc_runtime.stack import StackPlan
from svc_runtime.tokens import KeySet, UserTokens

# Who a test calls as when it plays the broker's own services (any of them is accepted).
TEST_CALLER = "gateway"


def as_service(plan: StackPlan, caller: str = TEST_CALLER) -> Signer:
    return plan.service_signer(caller)


def service_channel(plan: StackPlan, service: str, *, caller: str = TEST_CALLER) -> grpc.aio.Channel:
    """A channel to the stack's `service`, calling as the service `caller`."""
    return channel(plan.target(service), signer=as_service(plan, caller))


def plain_channel(
    plan: StackPlan, service: str, *, caller: str = TEST_CALLER, options: Any = ()
) -> grpc.aio.Channel:
    """Like `service_channel` but without the shared retry policy, with these options."""
    return raw_channel(
        plan.target(service),
        options=list(options),
        interceptors=signing_interceptors(as_service(plan, caller)),
    )


def user_token(plan: StackPlan, user_id: str, *, ttl_seconds: int = 900, session: str = "") -> str:
    """An access token for `user_id` in a session of its own (or `session`), made as the
    gateway makes them at login."""
    # A test's own server rig may stand in for a plan with just its secret.
    keys = plan.signing_keys() if isinstance(plan, StackPlan) else KeySet.single(plan.jwt_secret)
    tokens = UserTokens(keys, ttl_seconds=ttl_seconds)
    return tokens.issue(user_id, session or secrets.token_hex(16)).token


def user_channel(plan: StackPlan, service: str, user_id: str) -> grpc.aio.Channel:
    return channel(plan.target(service), signer=BearerToken(user_token(plan, user_id)))


@contextlib.contextmanager
def process_identity(name: str, credentials: Credentials) -> Iterator[None]:
    """Run a service's composition root inside the test process: this process then serves
    and calls as `name`, with `credentials` (as `svc_runtime.service.run` would set up)."""
    saved = {key: os.environ.get(key) for key in credentials.env()}
    os.environ.update(credentials.env())
    configure_process(name)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        configure_process("")
