"""Account use cases: open, look up, list, verify credentials."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from svc_funds.app.ports import AccountStore
from svc_funds.domain import accounts as rules
from svc_funds.domain.accounts import Account
from svc_runtime.errors import AlreadyExists, NotFound, Unauthenticated
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

# scrypt is CPU-heavy by design; bound how many hashes run at once so logins cannot starve
# the event loop's other work.
_HASHING = asyncio.Semaphore(2)
T = TypeVar("T")


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    async with _HASHING:
        return await asyncio.to_thread(fn, *args)


class AccountsApp:
    def __init__(self, store: AccountStore) -> None:
        self.store = store

    async def create(self, username: str, password: str, display_name: str, request_id: str) -> Account:
        new = rules.check_new_account(username, password, display_name, request_id)
        password_hash = await _in_thread(rules.hash_password, new.password)
        created = await self.store.create(
            new_id("u"), new.username, new.display_name, password_hash, new.request_id
        )
        if created is None:
            raise AlreadyExists(
                f"username {new.username} is taken",
                reason="USERNAME_TAKEN",
                metadata={"username": new.username},
            )
        if created.created:
            log.info("account opened", extra={"user_id": created.account.user_id, "username": new.username})
        return created.account

    async def get(self, user_id: str) -> Account:
        account = await self.store.get(user_id)
        if account is None:
            raise NotFound(
                f"user {user_id} not found", reason="USER_NOT_FOUND", metadata={"user_id": user_id}
            )
        return account

    async def list(self, after: str, limit: int) -> list[Account]:
        return await self.store.list(after, limit)

    async def verify(self, username: str, password: str) -> Account:
        username = (username or "").strip()
        # A name no account can have (a NUL byte, 10 kB) is never looked up: the answer is
        # the same as for an unknown name, after the same hashing time.
        found = await self.store.credentials(username) if rules.is_username(username) else None
        stored = found[1] if found is not None else rules.DUMMY_HASH
        ok = await _in_thread(rules.verify_password, password or "", stored)
        if found is None or not ok:
            raise Unauthenticated("wrong username or password", reason="INVALID_CREDENTIALS")
        return found[0]
