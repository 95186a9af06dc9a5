"""notifyhub.js's protocol tables, read in Chromium, against the hub's own lists.

The client's CLOSE_POLICY must name exactly the close codes the hub can send (plus the
two the browser and the client make up themselves), and its ERROR_STATUS must give each
WebSocket error code the status REST answers for the same error; so the two sides cannot
drift apart unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from api.errors import ANSWERS, INTERNAL
from hub.connection import Close
from tests.ui.conftest import OpenPage

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
#: uvicorn's own close when it restarts without the hub's drain (docs/live.md).
UVICORN_RESTART = 1012
#: 1006: the browser's code for a connection that ended without a close frame;
#: 4000: notifyhub.js's own, when the hub stopped answering pings.
NOT_FROM_THE_HUB = {1006: "browser", 4000: "client"}


async def tables(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        """async () => {
          const m = await import("/static/notifyhub.js");
          return { close: m.CLOSE_POLICY, errors: m.ERROR_STATUS };
        }"""
    )
    return result


def hub_close_codes() -> set[int]:
    """Every close code the hub sends: its one enum (each close site uses it)."""
    for path in [*ROOT.glob("api/*.py"), *ROOT.glob("hub/*.py")]:
        literal = re.search(r"\bclose\(\s*\d{4}", path.read_text())
        assert literal is None, f"{path.name} closes with a bare number: {literal.group(0)}"
    answered = {answer.close for answer in ANSWERS.values()} | {INTERNAL.close}
    assert answered - {None} <= {int(code) for code in Close}
    return {int(code) for code in Close} | {UVICORN_RESTART}


def documented_close_codes() -> set[int]:
    """The codes of docs/live.md's close-code table."""
    text = (ROOT / "docs" / "live.md").read_text()
    section = text.split("### Close codes (WebSocket)", 1)[1].split("\n\n", 2)[1]
    return {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, re.MULTILINE)}


def ws_only_error_codes() -> set[str]:
    """The error-frame codes api/ws.py sends that no error class of the table has."""
    sent = set(re.findall(r'error_frame\(\s*"(\w+)"', (ROOT / "api" / "ws.py").read_text()))
    return sent - {answer.code for answer in ANSWERS.values()} - {INTERNAL.code}


async def test_close_policy_covers_exactly_the_close_codes_the_hub_sends(
    open_page: OpenPage,
) -> None:
    page = await open_page("alice")
    policy = (await tables(page))["close"]
    from_hub = {int(code) for code, row in policy.items() if row["from"] == "hub"}
    assert from_hub == hub_close_codes()
    others = {int(code): row["from"] for code, row in policy.items() if row["from"] != "hub"}
    assert others == NOT_FROM_THE_HUB
    # live.md documents every code but 1000 (the hub's answer to a client that left).
    assert documented_close_codes() == hub_close_codes() - {Close.NORMAL}
    for code, row in policy.items():
        if row["reconnect"]:
            assert row["backoff"] in {"normal", "slow", "token"}, code
        else:
            assert row["reason"], code
    # Each refusal of the error table that ends a connection is handled by its row.
    assert policy[str(int(Close.UNAUTHORIZED))]["reauth"] is True
    assert policy[str(int(Close.TRY_AGAIN))]["backoff"] == "slow"
    assert policy[str(int(Close.TOO_MANY))]["backoff"] == "slow"


async def test_error_status_gives_each_websocket_error_code_its_rest_status(
    open_page: OpenPage,
) -> None:
    page = await open_page("alice")
    statuses = (await tables(page))["errors"]
    expected = {answer.code: answer.status for answer in ANSWERS.values()}
    expected[INTERNAL.code] = INTERNAL.status
    only_ws = ws_only_error_codes()
    assert only_ws == {"invalid_json", "invalid_frame", "unknown_type"}
    expected |= {code: 400 for code in only_ws}
    assert statuses == expected
