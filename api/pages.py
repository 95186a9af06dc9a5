"""The demo page at ``/`` and its files under ``/static``, served with a strict CSP.

The page is plain files (no build step); every response carries a Content-Security-Policy
that allows only same-origin scripts, styles and connections, so even a rendering bug
cannot run injected markup.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.errors import NotFound


def static_dir() -> Path:
    """Where the page's files are: the source tree (editable install), else the data
    files a wheel installs under ``<prefix>/share/notifyhub/static``."""
    candidates = [
        Path(__file__).resolve().parent.parent / "static",
        Path(sys.prefix) / "share" / "notifyhub" / "static",
        Path(site.getuserbase()) / "share" / "notifyhub" / "static",  # pip install --user
    ]
    for candidate in candidates:
        if (candidate / "index.html").is_file():
            return candidate
    return candidates[0]


def _host(headers: dict[bytes, bytes]) -> str | None:
    host = headers.get(b"host", b"").decode("latin-1")
    # A Host header is attacker-controlled text going into a header value: accept only
    # what a host[:port] can look like.
    if host and all(c.isalnum() or c in ".-:[]" for c in host):
        return host
    return None


def security_headers(host: str | None) -> dict[str, str]:
    """The CSP and friends for a page served to ``host`` (the exact same-origin socket)."""
    connect = "'self'" + (f" ws://{host} wss://{host}" if host else "")
    policy = "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"connect-src {connect}",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # No build step means no hashed file names: revalidate (ETag) on every load.
        "Cache-Control": "no-cache",
    }


class SecureStatic:
    """An ASGI wrapper adding ``security_headers`` to every response of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        extra = [
            (k.lower().encode(), v.encode())
            for k, v in security_headers(_host(headers)).items()
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def index(request: Request) -> Response:
    """``GET /``: the demo page (bell, inbox, chat, preferences)."""
    page = static_dir() / "index.html"
    if not page.is_file():
        raise NotFound("the demo page is not installed")
    host = _host({b"host": request.headers.get("host", "").encode("latin-1")})
    return FileResponse(page, media_type="text/html; charset=utf-8",
                        headers=security_headers(host))


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Mount("/static", app=SecureStatic(StaticFiles(directory=static_dir(), check_dir=False)),
          name="static"),
]
