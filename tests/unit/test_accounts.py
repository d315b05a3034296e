"""Logging in, with an in-memory account store: names no account can have are refused
like unknown ones, without reaching the store (PostgreSQL refuses a NUL byte in text)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from svc_funds.app.accounts import AccountsApp
from svc_funds.app.ports import CreatedAccount
from svc_funds.domain import accounts as rules
from svc_funds.domain.accounts import Account
from svc_runtime.errors import Unauthenticated


class MemoryAccounts:
    def __init__(self) -> None:
        self.by_name: dict[str, tuple[Account, str]] = {}
        self.looked_up: list[str] = []

    async def create(
        self, user_id: str, username: str, display_name: str, password_hash: str, request_id: str
    ) -> CreatedAccount | None:
        if username in self.by_name:
            return None
        account = Account(user_id, username, display_name, datetime.now(UTC))
        self.by_name[username] = (account, password_hash)
        return CreatedAccount(account, created=True)

    async def get(self, user_id: str) -> Account | None:
        return next((a for a, _ in self.by_name.values() if a.user_id == user_id), None)

    async def credentials(self, username: str) -> tuple[Account, str] | None:
        if "\x00" in username:
            raise ValueError("invalid byte sequence for encoding UTF8: 0x00")  # as PostgreSQL
        self.looked_up.append(username)
        return self.by_name.get(username)

    async def list(self, after: str, limit: int) -> list[Account]:
        return sorted((a for a, _ in self.by_name.values()), key=lambda a: a.user_id)[:limit]


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "SCRYPT_N", 2**4)
    monkeypatch.setattr(rules, "DUMMY_HASH", rules.hash_password("not-a-password"))


async def test_a_name_no_account_can_have_is_refused_as_unknown_without_a_lookup() -> None:
    store = MemoryAccounts()
    app = AccountsApp(store)
    await app.create("asha", "correct horse", "Asha", "req_1")
    assert (await app.verify(" asha ", "correct horse")).username == "asha"
    for name in ("\x000$R", "asha\x00", "x" * 10_000, "Asha", ""):
        with pytest.raises(Unauthenticated) as refused:
            await app.verify(name, "correct horse")
        assert refused.value.reason == "INVALID_CREDENTIALS"
    assert store.looked_up == ["asha"]
