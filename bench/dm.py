"""A DM round-trip process across two hub instances sharing PostgreSQL and Redis.

``python -m bench.dm --a URL --b URL --pairs P --rate R --seconds S``: user ``dma<i>``
is connected to hub A and ``dmb<i>`` to hub B. At ``R`` round trips per second
(round robin over the pairs) ``dma<i>`` sends ``message.send`` over its WebSocket;
when ``dmb<i>`` gets the ``message.created`` it answers with a ``message.send`` of the
same body; the round trip ends when ``dma<i>`` gets that answer's ``message.created``.
Prints one JSON line ``{"sent", "completed", "seconds", "lat_ms"}``.

With ``--target peer`` the same round trips run between two instances of the
python-socketio peer (``bench.peer``): a ``message`` event out, the instance's
``message`` event back, Engine.IO pings answered; the peer stores nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from bench.clients import hub_client, peer_client, peer_events, raise_nofile


def send_frame(client_id: str, recipient: str, body: str) -> str:
    """The hub's ``message.send`` frame."""
    return orjson.dumps({"type": "message.send", "client_id": client_id,
                         "data": {"recipient_id": recipient, "body": body}}).decode()


def peer_send_frame(_client_id: str, recipient: str, body: str) -> str:
    """The peer's Socket.IO ``message`` event (the peer has no client ids)."""
    return "42" + orjson.dumps(["message", {"recipient_id": recipient, "body": body}]).decode()


async def hub_messages(ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
    """The data of each ``message.created`` the hub sends ``ws``."""
    async for raw in ws:
        frame = orjson.loads(raw)
        if frame.get("type") == "message.created":
            yield frame["data"]


async def peer_messages(ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
    """The data of each ``message`` event the peer sends ``ws``."""
    async for event, data in peer_events(ws):
        if event == "message":
            yield data


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    ids = itertools.count()
    latencies: list[float] = []
    hub = args.target == "hub"
    opener, messages = (hub_client, hub_messages) if hub else (peer_client, peer_messages)
    frame = send_frame if hub else peer_send_frame

    async def sender_reader(ws: ClientConnection, partner: str) -> None:
        with contextlib.suppress(Exception):
            async for data in messages(ws):
                if data["sender_id"] == partner:
                    latencies.append((time.time() - float(data["body"])) * 1000)

    async def echo_reader(ws: ClientConnection, partner: str) -> None:
        with contextlib.suppress(Exception):
            async for data in messages(ws):
                if data["sender_id"] == partner:
                    await ws.send(frame(f"e{next(ids)}", partner, data["body"]))

    a_users = [f"dma{i}" for i in range(args.pairs)]
    b_users = [f"dmb{i}" for i in range(args.pairs)]
    a_side = await asyncio.gather(*[opener(args.a.replace("http", "ws", 1), u)
                                    for u in a_users])
    b_side = await asyncio.gather(*[opener(args.b.replace("http", "ws", 1), u)
                                    for u in b_users])
    tasks = [asyncio.create_task(sender_reader(ws, partner))
             for ws, partner in zip(a_side, b_users, strict=True)]
    tasks += [asyncio.create_task(echo_reader(ws, partner))
              for ws, partner in zip(b_side, a_users, strict=True)]
    total = int(args.rate * args.seconds)
    sent = 0
    start = time.time()
    while sent < total and time.time() < start + args.seconds + 5:
        due = min(total, int((time.time() - start) * args.rate) + 1)
        while sent < due:
            pair = sent % args.pairs
            await a_side[pair].send(frame(f"s{sent}", b_users[pair], repr(time.time())))
            sent += 1
        await asyncio.sleep(0.005)
    deadline = time.time() + 15
    while len(latencies) < sent and time.time() < deadline:
        await asyncio.sleep(0.05)
    elapsed = time.time() - start
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(
            *[ws.close() for ws in [*a_side, *b_side]], return_exceptions=True), 10)
    return {"sent": sent, "completed": len(latencies), "seconds": round(elapsed, 3),
            "lat_ms": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dm")
    parser.add_argument("--target", choices=["hub", "peer"], default="hub")
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    print(orjson.dumps(asyncio.run(run(parser.parse_args()))).decode(), flush=True)


if __name__ == "__main__":
    main()
