"""How the ``notifyhub`` command line fails: one line on stderr and an exit code.

Every command reports a failure as ``notifyhub: <message>``, never a traceback for a bad
value or an unreachable service. Exit codes: 0 success, 1 a runtime failure (database,
Redis or the port unavailable), 2 bad usage, configuration or input. A failure that is
not one of ``EXPECTED`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from db.errors import DatabaseError
from hub.errors import HubError, InvalidInput
from pubsub.errors import BrokerUnavailable

log = logging.getLogger("notifyhub")

#: Failures of the outside world (network, database, Redis, the embedded server):
#: reported as one line. Anything else is a bug and keeps its traceback.
EXPECTED = (
    OSError, DatabaseError, BrokerUnavailable, HubError, subprocess.SubprocessError,
)


class CliError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int) -> int:
    """Print ``message`` as the command's one-line failure; return ``code``."""
    print(f"notifyhub: {message}", file=sys.stderr)
    return code


def explain(exc: BaseException) -> str:
    """``exc`` in one line (its type and first line); the traceback goes to debug logging."""
    log.debug("details", exc_info=exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def check(validator: Callable[[str], Any], value: str, name: str) -> None:
    """Run ``validator`` on the argument ``name``; a ``ValueError`` becomes exit status 2."""
    try:
        validator(value)
    except ValueError as exc:
        raise CliError(f"invalid {name} {value!r}: {exc}", 2) from None


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as ``loc: message; ...`` on one line."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in error["loc"])
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def invalid_input_message(exc: InvalidInput) -> str:
    """The hub's ``InvalidInput`` on one line: its detail, then any field errors it omits."""
    extra = [
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
        for e in exc.errors
        if str(e["msg"]) not in exc.detail
    ]
    return exc.detail + (f" ({'; '.join(extra)})" if extra else "")
