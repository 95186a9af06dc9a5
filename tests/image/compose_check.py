"""The compose stack (.ci/image/compose.yaml): two hubs behind HAProxy, PostgreSQL, Redis.

Run by ``make compose-test`` only (like ``image_check.py``, its name keeps ``make test``
from collecting it), after ``.ci/image/build.sh`` built ``NOTIFYHUB_IMAGE``; compose
builds PostgreSQL, Redis and HAProxy from Debian's packages on ``DEBIAN_IMAGE``. The
stack is a compose project of this module's own, published on a loopback port, and is
removed with its volumes at the end. Clients reach the hubs only through HAProxy.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from hub.settings import Settings
from hub.tokens import Tokens
from tests.image.image_check import IMAGE
from tests.live.conftest import (
    SSE,
    recv,
    recv_until,
    ws_connect,
)
from tests.servers import free_port
from tests.waiting import eventually

COMPOSE_FILE = Path(__file__).resolve().parents[2] / ".ci" / "image" / "compose.yaml"
#: Longest wait for the stack (builds of the service images included) and for its LB.
UP_SECONDS, READY_SECONDS = 900, 120
#: WebSockets opened at once: leastconn spreads them over both hubs.
SOCKETS = 4


def compose_command() -> list[str]:
    """``docker compose`` (the plugin) when it answers, else Debian's ``docker-compose``."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


@dataclass
class Stack:
    """A running compose project: ``url`` of its load balancer, tokens and API key."""

    project: str
    env: dict[str, str]
    url: str

    def token(self, user: str) -> str:
        settings = Settings(jwt_secret=self.env["HUB_JWT_SECRET"])
        return Tokens(settings).issue(user, admin=False, ttl=3600)

    def ws_url(self, user: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"token": self.token(user), **params}.items())
        return f"{self.url.replace('http', 'ws', 1)}/ws?{query}"

    @property
    def service(self) -> dict[str, str]:
        return {"X-API-Key": self.env["HUB_API_KEYS"]}

    async def compose(self, *args: str, timeout: float = 120) -> str:
        proc = await asyncio.create_subprocess_exec(
            *compose_command(), "--project-name", self.project, "--file", str(COMPOSE_FILE),
            *args, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, f"compose {' '.join(args)}:\n{out.decode()}"
        return out.decode()

    async def lb_log(self) -> str:
        return await self.compose("logs", "--no-color", "lb")

    async def both_hubs_ready(self) -> bool:
        """Whether HAProxy has routed a ``/ready`` answered 200 to each hub: both are up
        in its eyes (it sends each new connection to the hub holding the fewest)."""
        for _ in range(2):
            try:
                async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
                    await http.get(f"{self.url}/ready")
            except httpx.HTTPError:
                return False
        served = re.findall(r"hubs/(hub[12]) \S+ 200 .*\"GET /ready ", await self.lb_log())
        return set(served) == {"hub1", "hub2"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        NOTIFYHUB_IMAGE=IMAGE,
        DEBIAN_IMAGE=os.environ.get("DEBIAN_IMAGE", "notifyhub-base:bookworm"),
        HUB_JWT_SECRET=secrets.token_urlsafe(48),
        HUB_API_KEYS=secrets.token_urlsafe(24),
        POSTGRES_PASSWORD=secrets.token_urlsafe(24),
        LB_BIND="127.0.0.1",
        LB_PORT=str(free_port()),
    )
    running = Stack(f"nhcheck{secrets.token_hex(4)}", env, f"http://127.0.0.1:{env['LB_PORT']}")
    try:
        # The services' images again (from cache when unchanged); the hubs' is IMAGE.
        asyncio.run(running.compose("build", "postgres", "redis", "lb", timeout=UP_SECONDS))
        asyncio.run(running.compose("up", "--detach", timeout=UP_SECONDS))
        asyncio.run(eventually(running.both_hubs_ready, timeout=READY_SECONDS))
        yield running
    finally:
        asyncio.run(running.compose("down", "--volumes", "--timeout", "20", timeout=120))


async def create(http: httpx.AsyncClient, stack: Stack, user: str, title: str) -> dict[str, Any]:
    response = await http.post(
        "/api/notifications", headers=stack.service,
        json={"user_id": user, "type": "grade_posted", "title": title},
    )
    assert response.status_code == 201, response.text
    return response.json()["items"][0]  # type: ignore[no-any-return]


async def open_sockets(stack: Stack, user: str, n: int) -> AsyncIterator[ClientConnection]:
    for _ in range(n):
        ws = await ws_connect(stack.ws_url(user))
        assert (await recv(ws))["type"] == "hello"
        yield ws


async def test_websockets_through_haproxy_reach_both_hubs_and_each_gets_the_event(
    stack: Stack,
) -> None:
    sockets = [ws async for ws in open_sockets(stack, "alice", SOCKETS)]
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=10, trust_env=False) as http:
            created = await create(http, stack, "alice", "Essay 2: A-")
        for ws in sockets:
            assert (await recv_until(ws, "notification.created"))["data"] == created
    finally:
        for ws in sockets:
            await ws.close()
    upgrades = re.findall(r"hubs/(hub[12]) .* 101 .*\"GET /ws HTTP/1.1\"", await stack.lb_log())
    assert set(upgrades) == {"hub1", "hub2"}


async def test_sse_through_haproxy_is_not_buffered(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token('bob')}"}
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=10, trust_env=False) as http,
        http.stream("GET", "/api/stream", headers=headers) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = SSE(response)
        assert (await sse.event())["type"] == "hello"
        created = await create(http, stack, "bob", "Quiz 3: B+")
        # A buffering proxy would hold these few hundred bytes until the stream ends.
        event = await sse.event()
        assert (event["type"], event["data"]) == ("notification.created", created)


async def test_the_load_balancer_logs_no_token(stack: Stack) -> None:
    async with ws_connect(stack.ws_url("carol")) as ws:
        assert (await recv(ws))["type"] == "hello"
    log = await stack.lb_log()
    assert '"GET /ws HTTP/1.1"' in log
    assert "token=" not in log


async def test_a_stopped_hub_sends_its_clients_to_the_other_which_resumes_them(
    stack: Stack,
) -> None:
    sockets = [ws async for ws in open_sockets(stack, "dave", SOCKETS)]
    async with httpx.AsyncClient(base_url=stack.url, timeout=10, trust_env=False) as http:
        await create(http, stack, "dave", "before")
        seqs = [(await recv_until(ws, "notification.created"))["seq"] for ws in sockets]
        await stack.compose("stop", "hub1", timeout=60)
        try:
            # hub1's clients were drained ("going away"); hub2's stay open.
            drained = await eventually(lambda: [ws for ws in sockets if ws.close_code])
            assert {ws.close_code for ws in drained} == {1001}
            assert len(drained) < len(sockets)
            second = await create(http, stack, "dave", "while reconnecting")
            async with ws_connect(stack.ws_url("dave", since=str(seqs[0]))) as ws:
                assert (await recv(ws))["type"] == "hello"
                frame = await recv_until(ws, "notification.created")
                assert (frame["seq"], frame["data"]) == (seqs[0] + 1, second)
        finally:
            for ws in sockets:
                await ws.close()
            await stack.compose("start", "hub1", timeout=60)
