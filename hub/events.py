"""The event envelope of the live protocol (docs/live.md) and its channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

BROADCAST = "broadcast"
#: The live protocol's version, in every ``hello`` (docs/live.md): it grows by
#: additions only (new event types, new fields), which clients ignore until they know
#: them; a change a client could not ignore would be a new version.
PROTOCOL_VERSION = 1


def user_channel(user_id: str) -> str:
    """The broker channel carrying ``user_id``'s events."""
    return f"user:{user_id}"


def encode(type_: str, seq: int | None, data: Any) -> bytes:
    """The wire form ``{"type","seq","data"}``, encoded once and shared by every reader."""
    frame = orjson.dumps({"type": type_, "seq": seq, "data": data}, option=orjson.OPT_UTC_Z)
    # orjson hands back its whole output buffer (at least 4 KiB, whatever the length);
    # a frame may sit in outboxes and held buffers, so keep an exact-size copy.
    return bytes(memoryview(frame))


def sse_block(frame: bytes) -> bytes:
    """The SSE block (``id:``, ``event:``, ``data:``) of an event encoded by ``encode``.

    Cut from the frame's bytes, never decoded: ``encode`` writes the keys in the order
    type, seq, data, and inside a JSON string every ``"`` is escaped, so the first
    ``,"seq":`` and the ``,"data":`` after it are the keys themselves. ``id:`` only for
    events with a seq; ``data:`` is split on line breaks so that no payload can end the
    block early (orjson escapes them; this is the belt to its braces). A frame of any
    other layout is decoded instead.
    """
    seq_at = frame.find(b',"seq":')
    data_at = frame.find(b',"data":', seq_at)
    if (
        seq_at < 10 or data_at < 0 or not frame.startswith(b'{"type":"')
        or frame[seq_at - 1] != 0x22 or frame[-1] != 0x7D
    ):
        return _decoded_sse_block(frame)
    kind, seq = frame[9 : seq_at - 1], frame[seq_at + 7 : data_at]
    if b"\\" in kind or not (seq == b"null" or seq.isdigit()):
        return _decoded_sse_block(frame)
    data = frame[data_at + 8 : -1]
    head = b"event: " + kind if seq == b"null" else b"id: " + seq + b"\nevent: " + kind
    if b"\n" in data or b"\r" in data:
        data = b"\ndata: ".join(data.replace(b"\r\n", b"\n").splitlines())
    return head + b"\ndata: " + data + b"\n\n"


def _decoded_sse_block(frame: bytes) -> bytes:
    event = orjson.loads(frame)
    lines = []
    if event["seq"] is not None:
        lines.append(b"id: %d" % event["seq"])
    kind = str(event["type"]).replace("\r", "").replace("\n", "")
    lines.append(b"event: " + kind.encode())
    data = orjson.dumps(event["data"], option=orjson.OPT_UTC_Z)
    lines.extend(b"data: " + line for line in data.replace(b"\r\n", b"\n").splitlines())
    return b"\n".join(lines) + b"\n\n"


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A committed change of one user's state, with its place ``seq`` in their log."""

    user_id: str
    seq: int
    type: str
    data: Any

    def encode(self) -> bytes:
        return encode(self.type, self.seq, self.data)
