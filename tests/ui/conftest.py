"""A hub served by uvicorn in the test loop, and real headless Chromium pages on it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import API_KEY, make_token
from tests.servers import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Every Playwright wait in these tests is bounded by this (milliseconds).
TIMEOUT_MS = 10_000
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


class HubServer:
    """A notifyhub app under uvicorn on a fixed loopback port; stops and starts again."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.port = free_port()
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from api.app import create_app
        from hub.settings import Settings

        settings = Settings(**self.settings)
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level="warning",
            ws_max_size=settings.ws_max_frame_bytes,
            ws_per_message_deflate=settings.ws_per_message_deflate,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(), name="uvicorn")
        async with asyncio.timeout(20):
            while not server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await asyncio.wait_for(self._task, timeout=20)
        self._server = self._task = None

    @property
    def services(self) -> Any:
        return self.app.state.services


@pytest.fixture
async def hub(settings_env: dict[str, Any]) -> AsyncIterator[HubServer]:
    """A running hub on this test's database (HS256 with tests.conftest.SECRET)."""
    server = HubServer(settings_env)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def api(hub: HubServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the running hub, over the loopback socket."""
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
        yield client


async def notify(api: httpx.AsyncClient, user_id: str, **fields: Any) -> dict[str, Any]:
    """Create one notification for ``user_id`` as a backend service would."""
    body = {"user_id": user_id, "type": "grade_posted", "title": "Grade posted", **fields}
    response = await api.post("/api/notifications", json=body, headers={"X-API-Key": API_KEY})
    assert response.status_code == 201, response.text
    return response.json()["items"][0]


class Console:
    """Console errors and uncaught exceptions of every page; any is a test failure."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def watch(self, page: Page, label: str) -> None:
        page.on("console", lambda m: self._console(label, m.type, m.text))
        page.on("pageerror", lambda exc: self.errors.append(f"{label}: uncaught {exc}"))

    def _console(self, label: str, type_: str, text: str) -> None:
        if type_ == "error":
            self.errors.append(f"{label}: {text}")

    def allow(self, pattern: str) -> None:
        """Tolerate console errors matching ``pattern`` (e.g. refused connections while
        the test has the hub stopped on purpose)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium (never a downloaded one), offline."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


OpenPage = Callable[..., Awaitable[Page]]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
async def open_page(
    browser: Browser, hub: HubServer, console: Console
) -> AsyncIterator[OpenPage]:
    """``await open_page("alice")``: the demo page signed in as alice, in a context of its
    own (``context=`` to share one, ``width=`` for a narrow screen, ``fragment="&k=v"`` for
    more page options, ``prepare=`` to set up routes before it loads). Fails the test on
    any console error or uncaught exception."""
    contexts: list[BrowserContext] = []

    async def open_(
        user_id: str,
        *,
        context: BrowserContext | None = None,
        width: int = 1280,
        height: int = 860,
        fragment: str = "",
        wait_connected: bool = True,
        fake_clock: bool = False,
        token: str | None = None,
        prepare: Callable[[Page], Awaitable[None]] | None = None,
    ) -> Page:
        if context is None:
            context = await browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=1
            )
            context.set_default_timeout(TIMEOUT_MS)
            contexts.append(context)
            if fake_clock:
                # Timers still run in real time; the test may jump over a backoff delay.
                await context.clock.install()
        page = await context.new_page()
        console.watch(page, f"{user_id}#{len(context.pages)}")
        if prepare is not None:
            await prepare(page)
        await page.goto(f"{hub.url}/#token={token or make_token(user_id)}{fragment}")
        if wait_connected:
            await until_connected(page)
        return page

    yield open_
    for context in contexts:
        await context.close()
    unexpected = console.unexpected()
    assert not unexpected, "console errors:\n" + "\n".join(unexpected)


async def until_connected(page: Page) -> None:
    """Wait until the page's live connection says "connected"."""
    await expect(page.get_by_test_id("connection-status")).to_have_text(
        "connected", timeout=TIMEOUT_MS
    )
