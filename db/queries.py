"""Named SQL blocks loaded once from ``db/queries/*.sql``.

A file holds blocks that start with ``-- name: <name>``; ``load("messages").send``
is the text of the block named ``send`` in ``messages.sql``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUERY_DIR = Path(__file__).parent / "queries"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class Queries:
    """The named queries of one file, as attributes."""

    def __init__(self, blocks: dict[str, str]) -> None:
        self._blocks = blocks

    def __getattr__(self, name: str) -> str:
        try:
            return self._blocks[name]
        except KeyError:
            raise AttributeError(name) from None


def parse(text: str) -> dict[str, str]:
    """Split SQL text into its ``-- name:`` blocks."""
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def load(module: str) -> Queries:
    """The queries of ``db/queries/<module>.sql``, read once per process."""
    return Queries(parse((QUERY_DIR / f"{module}.sql").read_text()))
