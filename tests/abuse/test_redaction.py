"""No form of a token reaches the hub's log: a real ``notifyhub serve --access-log``.

Browsers must put the JWT in the URL (``/ws?token=``, ``/api/stream?token=``), and the
hub decodes the query string before it reads ``token``: every spelling it accepts as the
token (percent-encoded names and values, repeated parameters) is one the log must hide.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from tests.conftest import API_KEY, SECRET, make_token
from tests.live.conftest import REPO, T, closed_code, hub_env, recv, ws_connect


class Served:
    """``notifyhub serve --access-log`` as a child process; its whole output in ``log``."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, log: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    env = hub_env(
        database_url=database_url, jwt_secret=SECRET, api_keys=API_KEY,
        data_dir=tmp_path / "data",
    )
    log_path = tmp_path / "hub.log"
    with open(log_path, "ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.cli", "serve", "--port", "0", "--access-log",
            "--log-level", "info",
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=REPO,
        )
        try:
            async with asyncio.timeout(60):
                while "notifyhub listening on " not in log_path.read_text():
                    assert proc.returncode is None, log_path.read_text()
                    await asyncio.sleep(0.05)
            line = next(x for x in log_path.read_text().splitlines() if "listening on" in x)
            yield Served(proc, line.rsplit(" ", 1)[1], log_path)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def http_status(port: int, target: str) -> int:
    """The status of ``GET target`` sent byte for byte (no client re-encodes it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), T)
        return int(status.split()[1])
    finally:
        writer.close()


def encoded(text: str) -> str:
    """Every character of ``text`` percent-encoded."""
    return "".join(f"%{b:02X}" for b in text.encode())


def secret_parts(token: str) -> list[str]:
    """What of a JWT must never be seen: its payload and its signature."""
    _, payload, signature = token.split(".")
    return [payload, signature]


def assert_hidden(log: str, tokens: dict[str, str]) -> None:
    decoded = unquote_plus(log)
    for form, token in tokens.items():
        for part in secret_parts(token):
            assert part not in log and part not in decoded, f"the {form!r} token was logged"


#: Query strings the hub reads a token from, as a client could spell them.
ACCEPTED = {
    "plain": "token={}",
    "encoded name": "%74oken={}",
    "fully encoded name": "%74%6f%6B%65%6e={}",
    "encoded value": "token={enc}",
    "after another parameter": "since=0&token={}",
    "repeated": "token=junk&token={}",
    "encoded name repeated": "token=junk&%74oken={}",
}


def forms(user_prefix: str) -> dict[str, str]:
    """One token per form (each its own user, so a leak names its form)."""
    return {form: make_token(f"{user_prefix}{i}") for i, form in enumerate(ACCEPTED)}


def query(form: str, token: str) -> str:
    return ACCEPTED[form].replace("{enc}", encoded(token)).replace("{}", token)


async def test_no_accepted_form_of_a_websocket_token_is_logged(served: Served) -> None:
    tokens = forms("ws")
    base = served.url.replace("http", "ws", 1)
    for form, token in tokens.items():
        async with ws_connect(f"{base}/ws?{query(form, token)}") as ws:
            hello = await recv(ws)
            assert hello["type"] == "hello", (form, hello)
    expired = make_token("late", ttl=-3600)
    async with ws_connect(f"{base}/ws?%74oken={expired}") as ws:
        assert await closed_code(ws) == 4401
    await served_stop(served)
    assert_hidden(served.log(), {**tokens, "expired": expired})


async def test_no_accepted_form_of_an_sse_or_rest_token_is_in_the_access_log(
    served: Served,
) -> None:
    tokens = forms("sse")
    for form, token in tokens.items():
        assert await http_status(served.port, f"/api/stream?{query(form, token)}") == 200, form
    rest = {form: make_token("r", ttl=60 + i) for i, form in enumerate(ACCEPTED)}
    for form, token in rest.items():
        status = await http_status(served.port, f"/api/notifications?{query(form, token)}")
        assert status == 401, form  # REST takes no ?token=, yet its access line has it
    upper = make_token("upper")
    assert await http_status(served.port, f"/api/notifications?TOKEN={upper}&x=1") == 401
    await served_stop(served)
    log = served.log()
    assert '"GET /api/stream?' in log, "the access log is on"
    assert_hidden(log, tokens)
    assert_hidden(log, {**{f"REST {f}": t for f, t in rest.items()}, "upper case": upper})


async def served_stop(served: Served) -> Any:
    served.proc.terminate()
    return await asyncio.wait_for(served.proc.wait(), 30)
