"""Account rules: login names, passwords and their salted scrypt hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import datetime

from svc_runtime.errors import FieldViolation, InvalidArgument

_USERNAME = re.compile(r"^[a-z0-9_.-]{3,32}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_DISPLAY_NAME = 100

# scrypt's interactive-login cost (RFC 7914 §2): 16 MiB and tens of milliseconds per hash.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
_SCHEME = "scrypt"


@dataclass(frozen=True)
class Account:
    user_id: str
    username: str
    display_name: str
    created_at: datetime


@dataclass(frozen=True)
class NewAccount:
    username: str
    password: str
    display_name: str
    request_id: str


def is_username(name: str) -> bool:
    """Whether `name` has the form every account's login name has (and so could be one)."""
    return bool(_USERNAME.match(name))


def check_new_account(username: str, password: str, display_name: str, request_id: str) -> NewAccount:
    violations = []
    if not is_username(username or ""):
        violations.append(("username", "username must be 3–32 characters of a–z, 0–9, '_', '.' or '-'"))
    if not MIN_PASSWORD <= len(password or "") <= MAX_PASSWORD:
        violations.append(("password", f"password must be {MIN_PASSWORD}–{MAX_PASSWORD} characters"))
    display_name = (display_name or "").strip() or username
    if len(display_name) > MAX_DISPLAY_NAME:
        violations.append(("display_name", f"display_name must be at most {MAX_DISPLAY_NAME} characters"))
    if len(request_id or "") > 128:
        violations.append(("request_id", "request_id must be at most 128 characters"))
    if violations:
        raise InvalidArgument(
            violations[0][1],
            reason="INVALID_ACCOUNT",
            violations=[FieldViolation(field, message) for field, message in violations],
        )
    return NewAccount(username, password, display_name, request_id)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _derive(password: str, salt: bytes, *, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * 1024 * 1024)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash`, the parameters kept so they can be raised later."""
    salt = salt if salt is not None else os.urandom(16)
    digest = _derive(password, salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_DKLEN)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a stored hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        if scheme != _SCHEME:
            return False
        actual = _derive(password, base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Checked when the username is unknown, so that a miss costs the same time as a wrong password.
DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)
