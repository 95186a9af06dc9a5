"""The comparison peer: python-socketio 5 on uvicorn, fanned out through Redis; stores nothing.

Each client connects with ``auth={"user": id}`` (or ``?user=id``) and joins the room
named for its user; publishers emit ``notification`` to that room, or ``announcement``
to everyone, through ``socketio.AsyncRedisManager(url, write_only=True)``. A client's
``message`` event ``{"recipient_id", "body"}`` is a direct message: the instance emits
``message`` ``{"sender_id", "recipient_id", "body"}`` to the recipient's room and the
sender's (the hub's ``message.created`` goes to both): to its own clients directly, to
the other instance's through one Redis publish (``bench.dm``); nothing is stored. Run it as
``python -m bench.peer --port N --redis URL``; ``GET /health`` answers 200 once it serves.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import parse_qs

import socketio
import uvicorn

EVENT = "notification"
BROADCAST = "announcement"
MESSAGE = "message"


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI endpoint answering 200 ``ok`` to any HTTP request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def make_app(redis_url: str) -> Any:
    """The Socket.IO ASGI app: one room per user, messages arrive via Redis pub/sub."""
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(redis_url),
        cors_allowed_origins=[],
        logger=False,
        engineio_logger=False,
    )
    users: dict[str, str] = {}  # sid -> user, while connected

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        user = auth.get("user") if isinstance(auth, dict) else None
        if not user:
            query = parse_qs(environ.get("QUERY_STRING", ""))
            user = (query.get("user") or [""])[0]
        if not user:
            return False
        await sio.enter_room(sid, str(user))
        users[sid] = str(user)
        return True

    @sio.event
    async def disconnect(sid: str, *_reason: Any) -> None:
        users.pop(sid, None)

    @sio.on(MESSAGE)
    async def message(sid: str, data: Any) -> None:
        sender = users.get(sid)
        if sender is None or not isinstance(data, dict):
            return
        recipient = str(data.get("recipient_id", ""))
        await sio.emit(MESSAGE, {"sender_id": sender, "recipient_id": recipient,
                                 "body": data.get("body")}, to=[recipient, sender])

    return socketio.ASGIApp(sio, other_asgi_app=health)


def publisher(redis_url: str) -> socketio.AsyncRedisManager:
    """A write-only manager that emits to the peer's rooms through Redis."""
    return socketio.AsyncRedisManager(redis_url, write_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    # Same wire setup as the hub: no per-message deflate (the hub's default), same pings.
    uvicorn.run(make_app(args.redis), host="127.0.0.1", port=args.port, log_level="warning",
                ws_per_message_deflate=False, ws_ping_interval=15, ws_ping_timeout=15)


if __name__ == "__main__":
    main()
