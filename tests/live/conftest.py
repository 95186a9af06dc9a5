"""Hubs on real sockets, and clients for them: reusable by the live and cluster tests.

- ``live_hub(**settings)``: an app served by ``api.server.HubServer`` on an ephemeral
  loopback port inside the test's event loop; ``hub.stop()`` runs the real shutdown
  (drain, then uvicorn's). The ``hub`` fixture is one on this test's database.
- ``HubProcess(env)``: ``python -m api.cli serve --port 0`` as a child process, for
  tests that kill processes (SIGTERM, SIGKILL).
- ``ws_connect``, ``recv``, ``closed_code``: a ``websockets`` client with timeouts.
- ``sse_stream`` / ``SSE``: an httpx stream parsed into SSE blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.server import HubServer, server_config
from hub.events import encode, user_channel
from tests.conftest import SERVICE, make_token

T = 10.0
REPO = Path(__file__).resolve().parents[2]


class _TestServer(HubServer):
    # The test process keeps its own SIGINT/SIGTERM handling; tests call stop().
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@dataclass
class LiveHub:
    """A running hub: ``url``, its ``app`` (``node``, ``svc``) and an ``http`` client."""

    app: Any
    server: HubServer
    task: asyncio.Task[None]
    http: httpx.AsyncClient = field(init=False)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node(self) -> Any:
        return self.app.state.node

    @property
    def svc(self) -> Any:
        return self.app.state.services

    def ws_url(self, user: str | None = None, *, token: str | None = None, **params: Any) -> str:
        return ws_url(self.url, user, token=token, **params)

    async def stop(self) -> None:
        """Shut down as on SIGTERM (drain, then uvicorn's shutdown and the lifespan)."""
        self.server.should_exit = True
        await asyncio.wait_for(asyncio.shield(self.task), 30)


def ws_url(base: str, user: str | None = None, *, token: str | None = None, **params: Any) -> str:
    """``/ws`` on ``base`` with ``user``'s token (or ``token``) and ``params`` (None dropped)."""
    query = {k: v for k, v in params.items() if v is not None}
    if token is None and user is not None:
        token = make_token(user)
    if token is not None:
        query = {"token": token, **query}
    return base.replace("http", "ws", 1) + "/ws" + ("?" + urlencode(query) if query else "")


@contextlib.asynccontextmanager
async def live_hub(
    *, server_options: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[LiveHub]:
    """Serve a hub built from ``settings`` on 127.0.0.1:<ephemeral> until the block ends."""
    from api.app import create_app
    from hub.settings import Settings

    config_settings = Settings(**settings)
    app = create_app(config_settings)
    options = {"log_level": "warning", **(server_options or {})}
    server = _TestServer(server_config(app, "127.0.0.1", 0, config_settings, **options), app)
    task = asyncio.create_task(server.serve(), name="live-hub")
    try:
        async with asyncio.timeout(60):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the hub stopped before it started")
                await asyncio.sleep(0.01)
        hub = LiveHub(app, server, task)
        async with httpx.AsyncClient(base_url=hub.url, timeout=T, trust_env=False) as http:
            hub.http = http
            yield hub
    finally:
        server.should_exit = True
        await asyncio.wait_for(asyncio.shield(task), 30)


@pytest.fixture
async def hub(settings_env: dict[str, Any]) -> AsyncIterator[LiveHub]:
    """A hub on this test's database, in-process broker."""
    async with live_hub(**settings_env) as running:
        yield running


async def notify(hub: LiveHub, user: str, title: str = "Grade posted") -> dict[str, Any]:
    """Create a notification for ``user`` through the REST API; returns it."""
    response = await hub.http.post(
        "/api/notifications", headers=SERVICE, json={"user_id": user, "type": "t", "title": title}
    )
    assert response.status_code == 201, response.text
    return response.json()["items"][0]  # type: ignore[no-any-return]


async def flood_until_slow(hub: LiveHub, user: str, *, forgotten: bool = True) -> Any:
    """Publish 60 KB frames to ``user``'s only connection (whose client does not read)
    until the node closes it as slow, then (``forgotten``) wait until it is forgotten;
    returns it. A writer whose send waits on the full socket at the close keeps the
    connection until the client reads again or the close grace (5 s) ends."""
    async with asyncio.timeout(T):
        while len(hub.node.registry) == 0:
            await asyncio.sleep(0.01)
    [conn] = list(hub.node.registry)
    big = encode("typing", None, {"pad": "x" * 60_000})
    async with asyncio.timeout(30):
        while not conn.closed:
            await hub.svc.broker.publish(user_channel(user), big)
            await asyncio.sleep(0)
        while forgotten and len(hub.node.registry):
            await asyncio.sleep(0.01)
    return conn


def counted(svc: Any, name: str) -> float:
    """The value of counter ``notifyhub_<name>_total`` of ``svc``'s metrics."""
    return svc.metrics.registry.get_sample_value(f"notifyhub_{name}_total") or 0.0


def ws_connect(url: str, **kwargs: Any) -> connect:
    """A websockets client for ``url`` (no proxy, no compression, bounded timeouts)."""
    options: dict[str, Any] = {
        "proxy": None, "compression": None, "open_timeout": T, "close_timeout": T,
    }
    options.update(kwargs)
    return connect(url, **options)


async def recv(ws: ClientConnection, timeout: float = T) -> dict[str, Any]:
    """The next frame, parsed."""
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def recv_until(ws: ClientConnection, type_: str, timeout: float = T) -> dict[str, Any]:
    """The next frame of ``type_``, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == type_:
                return frame  # type: ignore[no-any-return]


async def closed_code(ws: ClientConnection, timeout: float = T) -> int | None:
    """Read until the server closes; the close code it sent (None if none was received)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


@dataclass
class SSE:
    """Blocks of an SSE response: ``{"id","event","data","comments"}`` (absent -> None),
    and ``retry`` when the block has one."""

    response: httpx.Response
    _lines: AsyncIterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self._lines = self.response.aiter_lines()

    async def block(self, timeout: float = T) -> dict[str, Any] | None:
        """The next block, or None when the stream ended."""
        block: dict[str, Any] = {"id": None, "event": None, "data": None, "comments": []}
        data: list[str] = []
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line == "":
                    if data:
                        block["data"] = orjson.loads("\n".join(data))
                    return block
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    block["comments"].append(value)
                elif name == "data":
                    data.append(value)
                elif name in ("id", "event", "retry"):
                    block[name] = value
        return None

    async def event(self, timeout: float = T) -> dict[str, Any]:
        """The next block carrying an event, as ``{"type","seq","data"}``."""
        async with asyncio.timeout(timeout):
            while True:
                block = await self.block(timeout)
                assert block is not None, "the stream ended"
                if block["event"] is not None:
                    return sse_frame(block)


def sse_frame(block: dict[str, Any]) -> dict[str, Any]:
    """An SSE block carrying an event as ``{"type","seq","data"}``: its ``id:`` is the
    event's seq, except on ``hello``, where it is the position the stream continues
    after (docs/live.md)."""
    has_seq = block["id"] is not None and block["event"] != "hello"
    seq = int(block["id"]) if has_seq else None
    return {"type": block["event"], "seq": seq, "data": block["data"]}


@contextlib.asynccontextmanager
async def sse_stream(
    base: str, user: str | None = None, *, headers: dict[str, str] | None = None,
    **params: Any,
) -> AsyncIterator[SSE]:
    """``GET /api/stream`` as ``user`` (Bearer header) with ``params``; yields the parser."""
    all_headers = {"Authorization": f"Bearer {make_token(user)}"} if user else {}
    all_headers.update(headers or {})
    query = {k: v for k, v in params.items() if v is not None}
    async with (
        httpx.AsyncClient(base_url=base, timeout=T, trust_env=False) as http,
        http.stream("GET", "/api/stream", headers=all_headers, params=query) as response,
    ):
        yield SSE(response)


# ---- a hub in a child process --------------------------------------------------------


def hub_env(**settings: Any) -> dict[str, str]:
    """This environment without HUB_* variables, plus ``settings`` as HUB_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for name, value in settings.items():
        if isinstance(value, list):
            value = ",".join(value)
        env[f"HUB_{name.upper()}"] = str(value)
    return env


class HubProcess:
    """``notifyhub serve --port 0`` as a child; ``url`` once ``start`` returned.

    ``env`` is a complete environment (see ``hub_env``); stderr goes to ``log_path``.
    """

    def __init__(
        self, env: dict[str, str], log_path: Path, cwd: Path | None = None,
        module: str = "api.cli",
    ) -> None:
        self.env = env
        self.module = module
        self.log_path = log_path
        self.cwd = cwd or log_path.parent
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self._log: Any = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60) -> HubProcess:
        self._log = open(self.log_path, "ab")  # closed by wait()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, "serve", "--port", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=self._log, env=self.env, cwd=self.cwd,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"hub exited before listening; see {self.log_path}")
                match = re.match(r"notifyhub listening on (http://\S+)", line)
                if match:
                    self.url = match[1]
                    break
        # Keep reading stdout so the child never blocks on a full pipe.
        self._drain = asyncio.create_task(self._discard(self.proc.stdout))
        return self

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30) -> int:
        """Wait for exit (killing it after ``timeout``); the exit code."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        finally:
            if self._drain is not None:
                await asyncio.wait({self._drain}, timeout=5)
            if self._log is not None:
                self._log.close()
                self._log = None
        return code

    async def stop(self) -> int:
        """SIGTERM, then wait."""
        if self.proc is not None and self.proc.returncode is None:
            self.signal(signal.SIGTERM)
        return await self.wait()

    async def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        await self.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

