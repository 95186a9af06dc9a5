"""A session's own reader of its subscriber connection (``Session._read_raw``), fed bytes
as Redis would send them; the brokers' tests run it against real Redis servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from pubsub.session import Session

T = 10.0


async def read(data: bytes, *, eof: bool = True) -> tuple[list[dict[str, Any]], BaseException]:
    """What a session's reader hands on from ``data``, and the error that ends it."""
    async with Redis() as client:  # never connected: the session only needs its PubSub
        session = Session(client.pubsub())
        got: list[dict[str, Any]] = []
        session.dispatch = got.append
        stream = asyncio.StreamReader()
        stream.feed_data(data)
        if eof:
            stream.feed_eof()
        with pytest.raises(Exception) as ended:
            await asyncio.wait_for(session._read_raw(stream), T)
        return got, ended.value


async def test_messages_in_both_protocols_are_handed_on_in_order_then_the_end_ends_it() -> None:
    got, ended = await read(
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nch:a\r\n:1\r\n"  # RESP2 reply
        b"*3\r\n$7\r\nmessage\r\n$4\r\nch:a\r\n$4\r\n1\nhi\r\n"
        b">3\r\n$7\r\nmessage\r\n$4\r\nch:a\r\n$5\r\n2\nyo!\r\n"  # a RESP3 push
        b"*3\r\n$7\r\nmessage\r\n$4\r\nch:a\r\n$3\r\n3\nx"  # cut short by the close
    )
    assert got == [
        {"type": "subscribe", "channel": b"ch:a", "data": 1},
        {"type": "message", "channel": b"ch:a", "data": b"1\nhi"},
        {"type": "message", "channel": b"ch:a", "data": b"2\nyo!"},
    ]
    assert isinstance(ended, RedisConnectionError) and "closed" in str(ended)


@pytest.mark.parametrize("data", [b"-ERR unknown command\r\n", b"?not RESP at all\r\n"])
async def test_an_error_reply_or_bytes_that_are_not_resp_end_the_session(data: bytes) -> None:
    got, ended = await read(data, eof=False)
    assert got == [] and isinstance(ended, RedisConnectionError)
