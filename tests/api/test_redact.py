"""Secrets in URLs and log lines (``api.redact``): names read as the hub reads them."""

from __future__ import annotations

import logging

import pytest

from api.redact import redact_query, redact_record


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/ws?token=eyJ.a.b&since=3", "/ws?token=[redacted]&since=3"),
        ("/ws?%74oken=eyJ.a.b", "/ws?%74oken=[redacted]"),
        ("/ws?%74%6F%6b%65%6E=eyJ.a.b", "/ws?%74%6F%6b%65%6E=[redacted]"),
        ("/ws?TOKEN=x&Token=y", "/ws?TOKEN=[redacted]&Token=[redacted]"),
        ("/ws?to+ken=x&tok%2Ben=y", "/ws?to+ken=x&tok%2Ben=y"),  # "to ken", "tok+en"
        ("/ws?token+=x", "/ws?token+=[redacted]"),  # "token "
        ("/ws?token=%65%79%4A.a.b", "/ws?token=[redacted]"),
        ("/ws?token=a&token=b&since=1&token=c", "/ws?token=[redacted]&token=[redacted]&since=1"
         "&token=[redacted]"),
        ("/ws??token=x", "/ws??token=[redacted]"),
        ("/ws?since=1#&token=x", "/ws?since=1#&token=[redacted]"),
        ("/ws?token=a;b=c", "/ws?token=[redacted]"),
        ('"GET /api/stream?token=abc HTTP/1.1" 200',
         '"GET /api/stream?token=[redacted] HTTP/1.1" 200'),
        ('"WebSocket /ws?token=abc" [accepted]', '"WebSocket /ws?token=[redacted]" [accepted]'),
        ("/api/notifications?api_key=k&access_token=t&x-auth=a", "/api/notifications?"
         "api_key=[redacted]&access_token=[redacted]&x-auth=[redacted]"),
        ("/api/notifications?since=1&q=token", "/api/notifications?since=1&q=token"),
        ("no query here", "no query here"),
    ],
)
def test_every_spelling_of_a_secret_parameter_is_redacted(text: str, shown: str) -> None:
    assert redact_query(text) == shown


def test_a_log_record_is_redacted_in_its_message_and_its_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "GET %s" %d',
        ("127.0.0.1:5", "/api/stream?%74oken=eyJ.a.b", 200), None,
    )
    redact_record(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /api/stream?%74oken=[redacted]" 200'
    record = logging.LogRecord(
        "notifyhub", logging.INFO, __file__, 1, "opened /ws?token=eyJ.a.b as %(user)s",
        None, None,
    )
    record.args = {"user": "/x?password=s3cret"}
    redact_record(record)
    assert record.getMessage() == "opened /ws?token=[redacted] as /x?password=[redacted]"
