"""The web trader's files as the gateway serves them: types, caching, the security policy,
and nothing outside gateway/web/ reachable."""

from __future__ import annotations

import re

import httpx
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from gateway.transport.web import WEB_DIR, WebFiles, load_files


async def api(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("api", status_code=401)(scope, receive, send)


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=WebFiles(api, load_files())), base_url="http://t"
    )


async def test_the_page_and_its_modules_are_served_with_their_types_and_a_strict_policy() -> None:
    async with client() as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "unsafe" not in policy and "default-src 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        for asset in re.findall(r'(?:src|href)="(/web/[^"]+)"', page.text):
            answer = await http.get(asset)
            assert answer.status_code == 200, asset
            assert answer.headers["content-security-policy"] == policy
        script = await http.get("/web/app.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        style = await http.get("/web/app.css")
        assert style.headers["content-type"] == "text/css; charset=utf-8"


async def test_an_unchanged_file_is_revalidated_with_its_etag() -> None:
    async with client() as http:
        first = await http.get("/web/app.js")
        again = await http.get("/web/app.js", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        changed = await http.get("/web/app.js", headers={"If-None-Match": '"other"'})
        assert changed.status_code == 200 and changed.content == first.content
        head = await http.head("/")
        assert head.status_code == 200 and head.content == b""


async def test_only_the_apps_files_are_reachable_and_the_api_is_untouched() -> None:
    async with client() as http:
        for path in (
            "/web/nope.js",
            "/web/..%2Ftransport%2Fweb.py",
            "/web/%2e%2e/main.py",
            "/web/",
            "/web/index.html",
        ):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post("/web/app.js")).status_code == 405
        passed = await http.get("/v1/funds")
        assert (passed.status_code, passed.text) == (401, "api")


def test_the_app_has_no_inline_script_or_style_and_is_small() -> None:
    page = (WEB_DIR / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert "src=" in tag, tag
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", page)
    total = sum(f.stat().st_size for f in WEB_DIR.iterdir() if f.is_file())
    # First load is every file once, uncompressed: well under the 300 KB budget.
    assert total < 150_000, total
