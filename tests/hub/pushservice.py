"""A push service on loopback, as a browser vendor runs one, and a browser's push keys.

``push_service()`` serves ``POST /push/<name>`` on 127.0.0.1:<ephemeral> (uvicorn). Each
push is checked as a real push service would (RFC 8292: ``Authorization: vapid t, k``,
an ES256 JWT signed by ``k``, ``aud`` the endpoint's origin, ``exp`` within 24 hours,
``sub`` present) and decrypted (RFC 8291 ``aes128gcm``) with the keys of the browser
that subscribed, so ``received`` holds the plaintext a service worker would get.
``answers[name]`` sets the status (and headers) a name answers with; 201 by default.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """A browser's push keys: a P-256 key pair and a 16-byte auth secret."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64(self.key.public_key().public_bytes(Encoding.X962,
                                                      PublicFormat.UncompressedPoint))

    def subscription(self, endpoint: str) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives for ``endpoint``."""
        return {"endpoint": endpoint, "expirationTime": None,
                "keys": {"p256dh": self.p256dh, "auth": b64(self.auth)}}

    def decrypt(self, body: bytes) -> bytes:
        return http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth,
                                version="aes128gcm")


@dataclass
class Push:
    """One push the service accepted or refused, as it checked it."""

    name: str
    headers: dict[str, str]
    claims: dict[str, Any] | None
    vapid_key: str | None
    plaintext: bytes | None
    error: str | None
    status: int


@dataclass
class PushService:
    """The running service: its ``url``, the ``browsers`` behind each name, what it got."""

    port: int = 0
    browsers: dict[str, Browser] = field(default_factory=dict)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    received: list[Push] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, name: str) -> str:
        return f"{self.url}/push/{name}"

    def browser(self, name: str) -> dict[str, Any]:
        """A new browser subscribed as ``name``: its ``PushSubscription`` JSON."""
        browser = self.browsers[name] = Browser()
        return browser.subscription(self.endpoint(name))

    async def wait(self, count: int, timeout: float = 10.0) -> list[Push]:
        """The first ``count`` pushes, waiting up to ``timeout`` seconds for them."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received[:count]

    async def handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        claims, key, error, plaintext = None, None, None, None
        try:
            claims, key = self._check_vapid(headers.get("authorization", ""))
            if headers.get("content-encoding") != "aes128gcm":
                raise ValueError(f"Content-Encoding {headers.get('content-encoding')!r}")
            plaintext = self.browsers[name].decrypt(body)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        status, extra = self.answers.get(name, (201, {}))
        if error is not None:
            status, extra = 400, {}
        self.received.append(Push(name, headers, claims, key, plaintext, error, status))
        self.arrived.set()
        return Response(status_code=status, headers=extra)

    def _check_vapid(self, header: str) -> tuple[dict[str, Any], str]:
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"Authorization scheme {scheme!r}, not vapid")
        params = dict(part.strip().split("=", 1) for part in rest.split(","))
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                              unb64(params["k"]))
        claims = jwt.decode(params["t"], public, algorithms=["ES256"], audience=self.url,
                            options={"require": ["exp", "aud", "sub"]})
        if claims["exp"] > time.time() + 24 * 3600:
            raise ValueError("exp more than 24 hours ahead")
        return claims, params["k"]


class _Server(uvicorn.Server):
    # The test process keeps its own signal handling.
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@asynccontextmanager
async def push_service() -> AsyncIterator[PushService]:
    """A ``PushService`` on 127.0.0.1:<ephemeral> until the block ends."""
    service = PushService()
    app = Starlette(routes=[Route("/push/{name}", service.handle, methods=["POST"])])
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        service.port = server.servers[0].sockets[0].getsockname()[1]
        yield service
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
