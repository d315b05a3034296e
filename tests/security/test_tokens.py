"""What a token must be to prove anything: signed with the right key, HS256, for this
service, unexpired, naming a known subject. Everything else is refused alike."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from svc_runtime import auth
from svc_runtime.auth import Kind, Operator, Refused, Role, Verifier

USER_SECRET = "u" * 48
SERVICE_KEY = "s" * 48
OPERATORS = {
    "admin": Operator("admin", Role.ADMIN, "a" * 48),
    "auditor": Operator("auditor", Role.READ_ONLY, "r" * 48),
}


@pytest.fixture
def verifier() -> Verifier:
    return Verifier("svc_funds", user_secret=USER_SECRET, service_key=SERVICE_KEY, operators=OPERATORS)


USER_KID = {"kid": "user:0"}


def user_claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "brokermesh",
        "aud": "brokermesh-api",
        "sub": "u1",
        "sid": "s1",
        "iat": now,
        "exp": now + 600,
    }


def user_token(key: str = USER_SECRET, **changes: Any) -> str:
    claims = {**user_claims(), **changes}
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None}, key, algorithm="HS256", headers=USER_KID
    )


def service_token(key: str = SERVICE_KEY, kid: str = "service", **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "brokermesh-service",
        "aud": "svc_funds",
        "sub": "svc_orders",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": kid})


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refused(verifier: Verifier, authorization: str) -> str:
    with pytest.raises(Refused) as raised:
        verifier.verify(authorization)
    return raised.value.why


def test_each_kind_of_good_token_names_its_principal(verifier: Verifier) -> None:
    assert verifier.verify(bearer(user_token())) == auth.Principal(Kind.USER, "u1", session="s1")
    assert verifier.verify(bearer(service_token())) == auth.Principal(Kind.SERVICE, "svc_orders")
    minted = auth.operator_signer(OPERATORS["auditor"]).token_for("svc_funds")
    assert verifier.verify(bearer(minted)) == auth.Principal(Kind.OPERATOR, "auditor", Role.READ_ONLY)


def test_expired_tokens_are_refused(verifier: Verifier) -> None:
    past = int(time.time()) - 3600
    assert refused(verifier, bearer(user_token(iat=past - 600, exp=past))) == "expired"
    assert refused(verifier, bearer(service_token(iat=past - 300, exp=past))) == "expired"


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    now = [1_000_000.0]
    verifier = Verifier(
        "svc_funds", user_secret=USER_SECRET, service_key=SERVICE_KEY, operators={}, clock=lambda: now[0]
    )
    token = bearer(user_token(iat=1_000_000, exp=1_000_060))
    assert verifier.verify(token).name == "u1"
    now[0] += 120
    assert refused(verifier, token) == "expired"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer " + "x" * 5000,
    ],
)
def test_malformed_credentials_are_refused(verifier: Verifier, authorization: str) -> None:
    refused(verifier, authorization)


def test_a_token_signed_with_another_key_is_refused(verifier: Verifier) -> None:
    assert refused(verifier, bearer(user_token(key="w" * 48))) == "invalid"
    assert refused(verifier, bearer(service_token(key="w" * 48))) == "invalid"
    # A user token's key does not make a service token, nor the other way round.
    assert refused(verifier, bearer(service_token(key=USER_SECRET))) == "invalid"
    assert refused(verifier, bearer(user_token(key=SERVICE_KEY))) == "invalid"


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def test_alg_none_is_refused(verifier: Verifier) -> None:
    user = user_claims()
    assert refused(verifier, bearer(_unsigned({"alg": "none", "typ": "JWT", **USER_KID}, user))) == "invalid"
    service = {**user, "iss": "brokermesh-service", "aud": "svc_funds", "sub": "svc_orders"}
    assert refused(verifier, bearer(_unsigned({"alg": "none", "kid": "service"}, service))) == "invalid"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_other_algorithms_are_refused(verifier: Verifier) -> None:
    token = jwt.encode(user_claims(), USER_SECRET, algorithm="HS512", headers=USER_KID)
    assert refused(verifier, bearer(token)) == "invalid"


def test_a_token_for_another_audience_or_issuer_is_refused(verifier: Verifier) -> None:
    assert refused(verifier, bearer(service_token(aud="svc_orders"))) == "invalid"
    assert refused(verifier, bearer(user_token(aud="somebody-else"))) == "invalid"
    assert refused(verifier, bearer(user_token(iss="brokermesh-service"))) == "invalid"
    minted = auth.operator_signer(OPERATORS["admin"]).token_for("svc_orders")
    assert refused(verifier, bearer(minted)) == "invalid"


def test_tokens_missing_a_required_claim_are_refused(verifier: Verifier) -> None:
    for claim in ("exp", "iat", "sub", "iss", "aud", "sid"):
        assert refused(verifier, bearer(user_token(**{claim: None}))) == "invalid", claim


def test_a_service_that_is_not_one_of_ours_or_lives_too_long_is_refused(verifier: Verifier) -> None:
    assert refused(verifier, bearer(service_token(sub="mallory"))) == "unknown service"
    now = int(time.time())
    assert refused(verifier, bearer(service_token(iat=now, exp=now + 86_400))) == "lifetime too long"


def test_operator_tokens_need_the_operators_own_key_and_take_the_role_from_the_file(
    verifier: Verifier,
) -> None:
    forged = auth.MintingSigner(
        issuer=auth.OPERATOR_ISSUER, subject="admin", key=OPERATORS["auditor"].key, kid="operator:admin"
    ).token_for("svc_funds")
    assert refused(verifier, bearer(forged)) == "invalid"
    unknown = auth.MintingSigner(
        issuer=auth.OPERATOR_ISSUER, subject="eve", key="e" * 48, kid="operator:eve"
    ).token_for("svc_funds")
    assert refused(verifier, bearer(unknown)) == "unknown operator"
    # The auditor's token claiming another name under its own key id.
    renamed = auth.MintingSigner(
        issuer=auth.OPERATOR_ISSUER, subject="admin", key=OPERATORS["auditor"].key, kid="operator:auditor"
    ).token_for("svc_funds")
    assert refused(verifier, bearer(renamed)) == "operator mismatch"


def test_a_user_id_with_a_slash_is_refused(verifier: Verifier) -> None:
    assert refused(verifier, bearer(user_token(sub="u1/orders/o2"))) == "invalid subject"


def test_credentials_files_are_private(tmp_path: Any) -> None:
    credentials = auth.ensure_credentials(tmp_path)
    directory = tmp_path / auth.CREDENTIALS_DIR
    assert directory.stat().st_mode & 0o777 == 0o700
    for path in (directory / auth.SERVICE_KEY_FILE, credentials.operators_file):
        assert path.stat().st_mode & 0o777 == 0o600
    assert {o.role for o in auth.load_operators(credentials.operators_file).values()} == set(Role)
    # Made once: a second call keeps the same secrets.
    assert auth.ensure_credentials(tmp_path) == credentials
