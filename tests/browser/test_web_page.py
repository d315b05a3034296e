"""A real headless Chromium runs a web page served from another origin against a whole
stack (exchange simulator included): log in, read funds, follow live prices and order
updates over EventSource with stream tickets, place an order — and, from an origin the
gateway does not list, see the browser block the same calls.

The browser is Debian's chromium-headless-shell (or chromium), driven by Playwright with
`executable_path`; `./brokermesh test` installs the package when it can (root with
apt-get). Without a browser or Playwright these tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from svc_runtime import admin
from svc_runtime.cli import BROWSER_ENV, find_chromium
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.support.browser import trust_args
from tests.support.infra import SharedInfra, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAGE_DIR = Path(__file__).resolve().parent / "page"
CHROMIUM = os.environ.get(BROWSER_ENV) or find_chromium()
if CHROMIUM is None:
    pytest.skip(
        "no Chromium found (chromium-headless-shell or chromium): `./brokermesh test` installs "
        "Debian's chromium-headless-shell when run as root with apt-get; elsewhere install one "
        f"or set {BROWSER_ENV}",
        allow_module_level=True,
    )
async_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed (pip install -e '.[test]')"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """The page, served on its own origin (a port of 127.0.0.1) for as long as needed."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="static-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Web:
    stack: Stack
    allowed_origin: str
    forbidden_origin: str
    browser: Any

    def page_url(self, origin: str) -> str:
        return f"{origin}/index.html?api={self.stack.plan.gateway_url}/v1"


@pytest.fixture(scope="module")
async def web(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Web]:
    with static_site(PAGE_DIR) as allowed, static_site(PAGE_DIR) as forbidden:
        stack = await new_stack(
            infra, tmp_path_factory.mktemp("browser"), extra_env={"BROKERMESH_CORS_ORIGINS": allowed}
        )
        try:
            async with async_api.async_playwright() as playwright:
                assert stack.plan.tls_files is not None
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=trust_args(stack.plan.tls_files.cert)
                )
                try:
                    yield Web(stack, allowed, forbidden, browser)
                finally:
                    await browser.close()
        finally:
            with contextlib.suppress(Exception):
                await stack.stop()


async def open_account(stack: Stack, deposit: str) -> tuple[str, str]:
    username, password = unique_name("web"), "pw-" + unique_name("")
    await admin.create_user(
        stack.plan.target("svc_funds"),
        username,
        password,
        username,
        deposit,
        signer=stack.plan.operator_signer(),
    )
    return username, password


async def test_a_page_on_an_allowed_origin_trades_and_follows_prices_and_orders(web: Web) -> None:
    username, password = await open_account(web.stack, "250000.00")
    page = await web.browser.new_page()
    try:
        await page.goto(web.page_url(web.allowed_origin))
        logged_in = await page.evaluate("([u, p]) => bm.login(u, p)", [username, password])
        assert logged_in["requestId"], "X-Request-Id must be readable by the page (exposed)"
        funds = await page.evaluate("bm.funds()")
        assert funds["status"] == 200 and '"available":250000.00' in funds["text"]

        assert await page.evaluate("bm.followPrices(['INFY', 'TCS'])") == "open"
        assert await page.evaluate("bm.followOrders()") == "open"
        # The current quotes come first; then a market order of ours trades on the exchange,
        # which moves the book (and the simulator's own traders keep it moving).
        await page.wait_for_function("bm.seen.prices.length >= 2", timeout=30_000)
        first_prices = await page.evaluate("bm.seen.prices.length")
        placed = await page.evaluate(
            "bm.placeOrder({symbol: 'INFY', side: 'BUY', type: 'MARKET', quantity: 1})"
        )
        assert placed["status"] == 201 and placed["location"].endswith(placed["orderId"])
        await page.wait_for_function(
            "id => bm.seen.orders.some(u => u.order.orderId === id && u.order.status === 'FILLED')",
            arg=placed["orderId"],
            timeout=60_000,
        )
        await page.wait_for_function(f"bm.seen.prices.length > {first_prices}", timeout=60_000)
        prices = await page.evaluate("bm.seen.prices")
        assert {p["symbol"] for p in prices} <= {"INFY", "TCS"}
        assert all(
            {"symbol", "ltp", "change", "changePct", "ts", "bid", "ask", "sequence"} <= set(p) for p in prices
        )
        updates = await page.evaluate("bm.seen.orders")
        assert all(u["id"] for u in updates), "order updates carry their event id"
        assert await page.evaluate("bm.seen.errors") == []
        # A ticket opens a stream once; the browser's second try is refused.
        assert await page.evaluate("bm.reuseTicket()") == ["open", "refused"]
    finally:
        await page.close()


async def test_a_page_on_another_origin_is_blocked_by_the_browser(web: Web) -> None:
    username, password = await open_account(web.stack, "1000.00")
    page = await web.browser.new_page()
    try:
        await page.goto(web.page_url(web.forbidden_origin))
        # A JSON POST needs a preflight, which the gateway refuses for this origin.
        blocked = await page.evaluate("([u, p]) => bm.attempt(() => bm.login(u, p))", [username, password])
        assert blocked["ok"] is False and blocked["name"] == "TypeError", blocked
        read = await page.evaluate("bm.attempt(() => bm.funds())")
        assert read["ok"] is False and read["name"] == "TypeError", read
        # Even a simple GET (no preflight) is answered without CORS headers: hidden from the page.
        simple = await page.evaluate("bm.attempt(() => fetch(`${api}/openapi.json`).then(r => r.status))")
        assert simple["ok"] is False and simple["name"] == "TypeError", simple
        # The same call from the allowed origin goes through: the block is the origin's alone.
        await page.goto(web.page_url(web.allowed_origin))
        allowed = await page.evaluate("bm.attempt(() => fetch(`${api}/openapi.json`).then(r => r.status))")
        assert allowed == {"ok": True, "value": 200}
    finally:
        await page.close()
