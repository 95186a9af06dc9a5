"""Standard EventSource clients, not notifyhub.js, on the SSE stream: Chromium's native
``EventSource`` and Node's ``eventsource`` npm package (vendored in tests/ui/node).

Each connects, gets ``hello``, and loses its connection before any event; events are
created while it is away, and it reconnects by itself (``retry:``, with the
``Last-Event-ID`` that ``hello``'s ``id:`` gave it) and receives every event exactly
once, in order. The connection runs through a TCP proxy the test cuts, and holds
(stalls) while the events are created, so the reconnect cannot come before them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from tests.conftest import make_token
from tests.proxy import StallableProxy
from tests.ui.conftest import TIMEOUT_MS, HubServer, notify

T = TIMEOUT_MS / 1000
NODE = shutil.which("node")
CLIENT = Path(__file__).parent / "node" / "eventsource_client.mjs"


@pytest.fixture
def proxy(hub: HubServer) -> Any:
    with StallableProxy("127.0.0.1", hub.port) as running:
        yield running


def stream_url(proxy: StallableProxy, user: str) -> str:
    return f"http://127.0.0.1:{proxy.port}/api/stream?token={make_token(user)}"


async def cut_while_creating(
    proxy: StallableProxy, api: httpx.AsyncClient, user: str, count: int
) -> list[int]:
    """Cut the client's connection; create ``count`` notifications while it cannot get
    back (its reconnect is held by the stalled proxy), then let it through; their ids."""
    proxy.stall()
    proxy.cut()
    ids = [(await notify(api, user, title=f"while away {i}"))["id"] for i in range(count)]
    proxy.resume()
    return ids


async def test_chromium_eventsource_reconnecting_before_any_event_gets_every_event_once(
    browser: Browser, hub: HubServer, api: httpx.AsyncClient, proxy: StallableProxy
) -> None:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{proxy.port}/health")  # the stream's origin
        await page.evaluate(
            """(url) => {
                window.got = [];
                const source = new EventSource(url);
                for (const type of ["hello", "notification.created"]) {
                    source.addEventListener(type, (event) => window.got.push(
                        {type, lastEventId: event.lastEventId, data: JSON.parse(event.data)}));
                }
            }""",
            stream_url(proxy, "u1"),
        )

        async def events(count: int) -> list[dict[str, Any]]:
            await page.wait_for_function(f"window.got.length >= {count}")
            return await page.evaluate("window.got")  # type: ignore[no-any-return]

        [hello] = await events(1)
        # The hello event itself carries the position the stream continues after.
        assert (hello["type"], hello["lastEventId"]) == ("hello", "0")
        ids = await cut_while_creating(proxy, api, "u1", 3)
        got = await events(5)
        assert [(e["type"], e["lastEventId"]) for e in got[1:5]] == [
            ("hello", "0"),
            ("notification.created", "1"),
            ("notification.created", "2"),
            ("notification.created", "3"),
        ]
        assert [e["data"]["id"] for e in got[2:5]] == ids
        # Live again, with nothing repeated: the next event is the next seq.
        live = await notify(api, "u1", title="live")
        got = await events(6)
        assert (got[5]["lastEventId"], got[5]["data"]["id"]) == ("4", live["id"])
        assert len(await page.evaluate("window.got")) == 6
    finally:
        await context.close()


class NodeClient:
    """``node eventsource_client.mjs <url>``: the events it prints, one per line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def next(self, skip: tuple[str, ...] = ("open",)) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(T):
            while True:
                line = await self.proc.stdout.readline()
                assert line, "the node client exited"
                event: dict[str, Any] = json.loads(line)
                if event["type"] not in skip:
                    return event


@pytest.fixture
async def node_client(proxy: StallableProxy) -> AsyncIterator[NodeClient]:
    assert NODE is not None, "node is not installed (.ci/run installs Debian's nodejs)"
    proc = await asyncio.create_subprocess_exec(
        NODE, str(CLIENT), stream_url(proxy, "u1"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeClient(proc)
    finally:
        proc.kill()
        await proc.wait()


async def test_node_eventsource_reconnecting_before_any_event_gets_every_event_once(
    node_client: NodeClient, api: httpx.AsyncClient, proxy: StallableProxy
) -> None:
    hello = await node_client.next()
    assert (hello["type"], hello["lastEventId"]) == ("hello", "0")
    ids = await cut_while_creating(proxy, api, "u1", 3)
    # It reconnects with Last-Event-ID: 0, so the stream resumes there.
    assert (await node_client.next())["type"] == "hello"
    got = [await node_client.next() for _ in range(3)]
    assert [(e["type"], e["lastEventId"]) for e in got] == [
        ("notification.created", "1"),
        ("notification.created", "2"),
        ("notification.created", "3"),
    ]
    assert [e["data"]["id"] for e in got] == ids
    live = await notify(api, "u1", title="live")
    following = await node_client.next()
    assert (following["lastEventId"], following["data"]["id"]) == ("4", live["id"])
