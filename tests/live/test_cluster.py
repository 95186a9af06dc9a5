"""The delivery guarantee across real hub processes sharing PostgreSQL and Redis.

Each test runs two ``notifyhub serve`` child processes on one database and one Redis
prefix, with real WebSocket and SSE clients. The helpers here (``cluster``, ``two_hubs``,
``Feed``, ``notify``, ...) are reused by ``test_faults_*.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import API_KEY, SECRET, SERVICE
from tests.live.conftest import (
    SSE,
    HubProcess,
    T,
    hub_env,
    recv,
    sse_frame,
    sse_stream,
    ws_connect,
    ws_url,
)

Frame = dict[str, Any]


# ---- helpers shared with test_faults_*.py ----------------------------------------------


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, n: int = 2, *, module: str = "api.cli", **settings: Any
) -> AsyncIterator[list[HubProcess]]:
    """``n`` hub processes on ``settings`` (database, Redis); all killed when it ends."""
    env = hub_env(
        jwt_secret=SECRET, api_keys=[API_KEY], data_dir=tmp_path / "data", **settings
    )
    hubs = [HubProcess(env, tmp_path / f"hub{i}.log", module=module) for i in range(n)]
    try:
        # All starts finish (or fail) before any failure is raised, so none is left
        # running while the finally below kills the processes.
        started = await asyncio.gather(*(hub.start() for hub in hubs), return_exceptions=True)
        for result in started:
            if isinstance(result, BaseException):
                raise result
        yield hubs
    finally:
        for hub in hubs:
            if hub.proc is not None:
                await hub.kill()


@contextlib.asynccontextmanager
async def two_hubs(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str, **settings: Any
) -> AsyncIterator[tuple[HubProcess, HubProcess, httpx.AsyncClient, httpx.AsyncClient]]:
    """A ``cluster`` of two hubs sharing one database and one Redis, and a client of each."""
    async with (
        cluster(tmp_path, database_url=database_url, redis_url=redis_url,
                redis_prefix=redis_prefix, **settings) as (a, b),
        http_client(a) as http_a,
        http_client(b) as http_b,
    ):
        yield a, b, http_a, http_b


def no_tracebacks(*hubs: HubProcess) -> None:
    """Fail on any traceback in the hubs' logs: an expected failure is one log line."""
    for hub in hubs:
        assert "Traceback" not in hub.log(), hub.log()


@contextlib.asynccontextmanager
async def http_client(hub: HubProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hub.url, timeout=T, trust_env=False) as http:
        yield http


async def notify(http: httpx.AsyncClient, user: str | list[str], title: str) -> Frame:
    """Create a notification for ``user`` (or several) as a service; the first item."""
    target = {"user_ids": user} if isinstance(user, list) else {"user_id": user}
    response = await http.post(
        "/api/notifications", headers=SERVICE, json={**target, "type": "t", "title": title}
    )
    assert response.status_code == 201, response.text
    return response.json()["items"][0]  # type: ignore[no-any-return]


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 20) -> None:
    """Poll ``check`` every 20 ms until it holds; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def greeted(*clients: ClientConnection | SSE) -> None:
    """Read the ``hello`` that each WebSocket or SSE client gets first, in the order given."""
    for client in clients:
        first = await client.event() if isinstance(client, SSE) else await recv(client)
        assert first["type"] == "hello"


async def quiet(ws: ClientConnection) -> None:
    """Nothing is queued before the answer to a ping: no duplicate, nothing extra."""
    await ws.send('{"type":"ping"}')
    assert await recv(ws) == {"type": "pong", "seq": None, "data": {}}


class Feed:
    """Every frame of one live client, read in the background until the stream ends.

    Reading all the time keeps the client from ever looking slow to the hub, so what a
    test sees is the delivery guarantee, not backpressure.
    """

    def __init__(self, source: Callable[[], Awaitable[Frame | None]]) -> None:
        self.frames: list[Frame] = []
        self.task = asyncio.create_task(self._run(source), name="feed")

    @classmethod
    def of_ws(cls, ws: ClientConnection) -> Feed:
        async def next_frame() -> Frame | None:
            try:
                return orjson.loads(await ws.recv())  # type: ignore[no-any-return]
            except ConnectionClosed:
                return None

        return cls(next_frame)

    @classmethod
    def of_sse(cls, sse: SSE) -> Feed:
        async def next_frame() -> Frame | None:
            try:
                while (block := await sse.block(3600)) is not None:
                    if block["event"] is not None:
                        return sse_frame(block)
            except httpx.HTTPError:
                pass  # the server went away without ending the stream (SIGKILL)
            return None

        return cls(next_frame)

    async def _run(self, source: Callable[[], Awaitable[Frame | None]]) -> None:
        while (frame := await source()) is not None:
            self.frames.append(frame)

    @property
    def ended(self) -> bool:
        return self.task.done()

    @property
    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["seq"] is not None]

    async def reach(self, seq: int, timeout: float = 20) -> list[int]:
        """Wait until event ``seq`` arrived (or the stream ended); the seqs seen."""
        await until(lambda: self.ended or (bool(self.seqs) and self.seqs[-1] >= seq), timeout)
        if self.task.done() and not self.task.cancelled() and self.task.exception():
            raise self.task.exception()  # type: ignore[misc]
        return self.seqs

    async def quiet(self, ws: ClientConnection) -> None:
        """``quiet`` for a socket this feed reads: the pong is the only new frame."""
        seen = len(self.frames)
        await ws.send('{"type":"ping"}')
        await until(lambda: self.ended or len(self.frames) > seen, T)
        assert self.frames[seen:] == [{"type": "pong", "seq": None, "data": {}}]

    async def end(self, timeout: float = 20) -> None:
        """Wait until the stream ended."""
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.wait({self.task})


@contextlib.asynccontextmanager
async def feeds() -> AsyncIterator[list[Feed]]:
    """A list to put Feeds in; each is stopped when the block ends."""
    running: list[Feed] = []
    try:
        yield running
    finally:
        for feed in running:
            await feed.close()


# ---- two instances -------------------------------------------------------------------


async def test_events_from_either_instance_reach_clients_on_both_exactly_once(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(a.url, "u1")) as u1_a,
        ws_connect(ws_url(b.url, "u1")) as u1_b,
        ws_connect(ws_url(b.url, "u2")) as u2_b,
        ws_connect(ws_url(a.url, "u3")) as u3_a,
        sse_stream(b.url, "u1") as u1_b_sse,
    ):
        sockets = (u1_a, u1_b, u2_b, u3_a)
        await greeted(*sockets, u1_b_sse)  # each subscribed on its instance

        # A notification created through A reaches u1 on A and on B.
        created = await notify(http_a, "u1", "from A")
        for ws in (u1_a, u1_b):
            assert await recv(ws) == {"type": "notification.created", "seq": 1, "data": created}
        assert await u1_b_sse.event() == {
            "type": "notification.created", "seq": 1, "data": created
        }

        # A direct message sent over B's WebSocket reaches the recipient on A.
        await u2_b.send(orjson.dumps({
            "type": "message.send", "client_id": "c1",
            "data": {"recipient_id": "u1", "body": "hi from B"},
        }))
        mine = sorted([await recv(u2_b), await recv(u2_b)], key=lambda f: f["type"])
        assert [f["type"] for f in mine] == ["ack", "message.created"]
        message = mine[0]["data"]["message"]
        assert mine[1] == {"type": "message.created", "seq": 1, "data": message}
        for ws in (u1_a, u1_b):
            assert await recv(ws) == {"type": "message.created", "seq": 2, "data": message}
            note = await recv(ws)  # and the recipient's new_message notification
            assert (note["type"], note["seq"], note["data"]["type"]) == (
                "notification.created", 3, "new_message"
            )
        assert [(await u1_b_sse.event())["seq"] for _ in range(2)] == [2, 3]

        # An announcement created on A reaches everyone connected, on both instances.
        response = await http_a.post("/api/announcements", headers=SERVICE,
                                     json={"title": "Maintenance"})
        assert response.status_code == 201, response.text
        announced = {"type": "announcement.created", "seq": None, "data": response.json()}
        for ws in sockets:
            assert await recv(ws) == announced
        assert await u1_b_sse.event() == announced

        # Exactly once: a marker created last (through B) is each client's next frame,
        # so no copy of anything earlier was queued in between.
        marker = await notify(http_b, ["u1", "u2", "u3"], "marker")
        expected = {"u1": 4, "u2": 2, "u3": 1}
        for user, ws in zip(("u1", "u1", "u2", "u3"), sockets, strict=True):
            frame = await recv(ws)
            assert (frame["type"], frame["seq"], frame["data"]["title"]) == (
                "notification.created", expected[user], marker["title"]
            )
            await quiet(ws)
        assert (await u1_b_sse.event())["seq"] == 4
    no_tracebacks(a, b)


async def test_concurrent_creates_through_both_instances_arrive_once_in_seq_order(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    n = 100
    async with (
        two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b),
        ws_connect(ws_url(a.url, "u1")) as on_a,
        ws_connect(ws_url(b.url, "u1")) as on_b,
        sse_stream(b.url, "u1") as sse_b,
    ):
        await greeted(on_a, on_b, sse_b)
        async with feeds() as running:
            running += [Feed.of_ws(on_a), Feed.of_ws(on_b), Feed.of_sse(sse_b)]
            # Interleaved so that publishes from the two instances race each other.
            await asyncio.wait_for(asyncio.gather(*(
                notify(http_a if i % 2 else http_b, "u1", f"c{i}") for i in range(n)
            )), 60)
            for feed in running:
                assert await feed.reach(n) == list(range(1, n + 1))
                titles = [f["data"]["title"] for f in feed.frames if f["seq"] is not None]
                assert sorted(titles) == sorted(f"c{i}" for i in range(n))
            for feed, ws in zip(running, (on_a, on_b), strict=False):
                await feed.quiet(ws)
    no_tracebacks(a, b)


async def test_a_client_that_missed_30_events_on_one_instance_resumes_on_the_other(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with two_hubs(tmp_path, database_url, redis_url, redis_prefix) as (a, b, http_a, http_b):
        async with ws_connect(ws_url(a.url, "u1")) as ws:
            assert (await recv(ws))["type"] == "hello"
            await notify(http_b, "u1", "seen")
            assert (await recv(ws))["seq"] == 1
        for i in range(30):  # through both instances while the client is away
            await notify(http_a if i % 2 else http_b, "u1", f"missed {i}")
        async with (
            ws_connect(ws_url(b.url, "u1", since=1)) as ws,
            sse_stream(b.url, "u1", headers={"Last-Event-ID": "1"}) as sse,
        ):
            hello = await recv(ws)
            assert (hello["type"], hello["data"]["last_seq"]) == ("hello", 31)
            assert (await sse.event())["type"] == "hello"
            for frames in (
                [await recv(ws) for _ in range(30)],
                [await sse.event() for _ in range(30)],
            ):
                assert [f["seq"] for f in frames] == list(range(2, 32))
                assert [f["data"]["title"] for f in frames] == [f"missed {i}" for i in range(30)]
            live = await notify(http_a, "u1", "live")  # created on the instance it left
            assert await recv(ws) == {"type": "notification.created", "seq": 32, "data": live}
            assert await sse.event() == {"type": "notification.created", "seq": 32, "data": live}
            await quiet(ws)
    no_tracebacks(a, b)
