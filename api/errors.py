"""The one table from errors to what each edge answers (docs/api.md, docs/live.md).

Every error the hub raises on purpose (``hub.errors``) and every dependency failure, as
``db`` and ``pubsub`` name the drivers' exceptions (``db.errors``, ``pubsub.errors``),
has one ``Answer``: the HTTP status and problem type of REST, the ``code`` of a
WebSocket ``error`` frame, and the close code when it refuses or ends a live
connection. Anything else is a bug: ``INTERNAL`` (500, ``internal``, 1011), logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.errors import DatabaseRejected, DatabaseUnavailable
from hub import errors
from hub.connection import Close
from pubsub.errors import BrokerUnavailable

#: A problem's ``type`` is this followed by its code, e.g. ``urn:notifyhub:problem:not_found``.
PROBLEM_TYPE = "urn:notifyhub:problem:"


@dataclass(frozen=True, slots=True)
class Answer:
    """How one kind of error is answered: HTTP status, error code, WebSocket close code."""

    status: int
    code: str
    #: None where the error never refuses or ends a connection (a frame's own error).
    close: int | None = None

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPE + self.code


UNAVAILABLE = Answer(503, "unavailable", Close.TRY_AGAIN)
INTERNAL = Answer(500, "internal", Close.INTERNAL)

ANSWERS: dict[type[Exception], Answer] = {
    errors.Unauthorized: Answer(401, "unauthorized", Close.UNAUTHORIZED),
    errors.Forbidden: Answer(403, "forbidden", Close.FORBIDDEN),
    errors.NotFound: Answer(404, "not_found"),
    errors.Conflict: Answer(409, "conflict"),
    errors.PayloadTooLarge: Answer(413, "too_large", Close.TOO_BIG),
    errors.UnsupportedMediaType: Answer(415, "unsupported_media_type"),
    errors.InvalidInput: Answer(422, "invalid_input", Close.BAD_REQUEST),
    # The database refused a value that validation let through: still the input's fault.
    DatabaseRejected: Answer(422, "invalid_input", Close.BAD_REQUEST),
    errors.RateLimited: Answer(429, "rate_limited", Close.TOO_MANY),
    errors.Unavailable: UNAVAILABLE,
    DatabaseUnavailable: UNAVAILABLE,
    BrokerUnavailable: UNAVAILABLE,
}

#: The dependency failures: a client should retry later (with ``since``), not give up.
DOWN: tuple[type[Exception], ...] = tuple(
    cls for cls, answer in ANSWERS.items() if answer is UNAVAILABLE
)
#: Every class the table names, for ``except`` clauses and exception handlers.
KNOWN: tuple[type[Exception], ...] = tuple(ANSWERS)


def answer_for(exc: BaseException) -> Answer:
    """The answer for ``exc``: its class's row, or its nearest base's; else ``INTERNAL``."""
    for cls in type(exc).__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None:
            return answer
    return INTERNAL
