"""The web trader's static files, served from the API's own origin (so no CORS is needed).

`/` is the app's page and `/web/<file>` its scripts and styles, read once at start-up from
`gateway/web/`; nothing else on disk is reachable. Every answer carries a strict
Content-Security-Policy (scripts, styles and connections from this origin only, no inline
script), and an ETag: files are not content-hashed, so browsers revalidate on each load
(`no-cache`) and get `304 Not Modified` while the file is unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PREFIX = "/web/"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
)


@dataclass(frozen=True)
class WebFile:
    body: bytes
    content_type: str
    etag: str


def load_files(root: Path = WEB_DIR) -> dict[str, WebFile]:
    """URL path → file, for every servable file under `root` (index.html is `/`)."""
    files: dict[str, WebFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if not path.is_file() or content_type is None:
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        relative = path.relative_to(root).as_posix()
        url = "/" if relative == "index.html" else PREFIX + relative
        files[url] = WebFile(body, content_type, etag)
    return files


class WebFiles:
    """Answers GET/HEAD for the app's files; passes every other request to the API."""

    def __init__(self, app: ASGIApp, files: dict[str, WebFile]) -> None:
        self.app = app
        self.files = files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(PREFIX)):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "")
        found = self.files.get(path)
        if found is None:
            await self._plain(send, 404, b"not found\n")
            return
        if method not in ("GET", "HEAD"):
            await self._plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        headers = [(b"etag", found.etag.encode()), *SECURITY_HEADERS]
        offered = dict(scope.get("headers", ())).get(b"if-none-match", b"").decode("latin-1")
        if found.etag in {tag.strip() for tag in offered.split(",")}:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [
            (b"content-type", found.content_type.encode()),
            (b"content-length", str(len(found.body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else found.body})

    @staticmethod
    async def _plain(
        send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
