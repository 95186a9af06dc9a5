"""The event envelope of the live protocol (CONTRACT §5) and its channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

BROADCAST = "broadcast"


def user_channel(user_id: str) -> str:
    """The broker channel carrying ``user_id``'s events."""
    return f"user:{user_id}"


def encode(type_: str, seq: int | None, data: Any) -> bytes:
    """The wire form ``{"type","seq","data"}``, encoded once and shared by every reader."""
    return orjson.dumps({"type": type_, "seq": seq, "data": data}, option=orjson.OPT_UTC_Z)


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A committed change of one user's state, with its place ``seq`` in their log."""

    user_id: str
    seq: int
    type: str
    data: Any

    def encode(self) -> bytes:
        return encode(self.type, self.seq, self.data)
