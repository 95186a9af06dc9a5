"""A property-based fuzz of every operation in ``/openapi.json`` (schemathesis).

A real hub on an ephemeral port (uvicorn, PostgreSQL) is served from a thread of its own,
since schemathesis calls it with a blocking client from Hypothesis tests. Each operation
gets valid and invalid requests (positive and negative generation) four ways: as a
user, as an admin (JWT), as a service (API key), and without credentials; in demo mode,
``/demo/token`` too. No answer may be a 5xx, and every answer must be one the document
lists, with its content type and, for JSON (and each SSE event), its schema.
Derandomized: every run sends the same cases, ``EXAMPLES`` per operation and credential.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import API_KEY, SECRET, auth, scratch_database
from tests.live.conftest import live_hub

#: Examples per operation and credential (valid and invalid ones): ~26 operations x 4.
EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
CREDENTIALS: dict[str, dict[str, str]] = {
    "user": auth("fuzz-user"),
    "admin": auth("fuzz-admin", admin=True),
    "service": {"X-API-Key": API_KEY},
    "none": {},
}


@dataclass
class ThreadHub:
    """A hub served by its own event loop in a thread; ``url`` while it runs."""

    url: str
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


#: Rate limits the fuzz cannot reach (it checks answers, not the limiter).
UNLIMITED = {
    f"rate_limit{kind}_{unit}": 100_000
    for kind in ("", "_ip", "_writes")
    for unit in ("per_second", "burst")
}


@contextmanager
def hub_in_thread(pg_admin_dsn: str, pg_template: str, **settings: Any) -> Iterator[ThreadHub]:
    """A hub built from ``settings`` on a database of its own, served from a thread."""
    ready: list[ThreadHub] = []
    failed: list[BaseException] = []
    started = threading.Event()

    async def serve() -> None:
        stop = asyncio.Event()
        async with scratch_database(pg_admin_dsn, "f_", pg_template) as url:
            async with live_hub(database_url=url, **UNLIMITED, **settings) as hub:
                ready.append(ThreadHub(hub.url, asyncio.get_running_loop(), stop))
                started.set()
                await stop.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, name="fuzz-hub", daemon=True)
    thread.start()
    assert started.wait(90), "the hub did not start"
    if failed:
        raise failed[0]
    hub = ready[0]
    try:
        yield hub
    finally:
        hub.loop.call_soon_threadsafe(hub.stop.set)
        thread.join(60)
        assert not thread.is_alive(), "the hub did not stop"
        if failed:
            raise failed[0]


@pytest.fixture(scope="module")
def fuzz_hub(pg_admin_dsn: str, pg_template: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadHub]:
    """A hub with a JWT secret and an API key."""
    with hub_in_thread(pg_admin_dsn, pg_template, data_dir=tmp_path_factory.mktemp("fuzz"),
                       jwt_secret=SECRET, api_keys=[API_KEY]) as hub:
        yield hub


def load_schema(url: str) -> tuple[Any, dict[str, Any]]:
    """The running hub's own ``/openapi.json``, as schemathesis and as JSON. Every
    operation is included (loaded from its URL, schemathesis would leave out the one
    that serves it)."""
    response = requests.get(url + "/openapi.json", timeout=15)
    assert response.status_code == 200
    doc = response.json()
    loaded = schemathesis.openapi.from_dict(doc)
    loaded.config.max_stream_events = 1  # /api/stream: `hello`, then the next case
    return loaded, doc


def without_api_key(doc: dict[str, Any]) -> set[str]:
    """The operations that need credentials but do not take an API key (the caller's own
    inbox, preferences, messages, stream): a service gets 403 there."""
    return {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if op["security"] and not any("apiKey" in need for need in op["security"])
    }


def fuzz(schema: Any, base_url: str, headers: dict[str, str]) -> tuple[list[str], set[str]]:
    """Run every operation's cases with ``headers``: the failures found (one entry per
    operation, the failing case in it) and the operations that answered 2xx."""
    failures: list[str] = []
    succeeded: set[str] = set()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            strategy = st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE),
                operation.as_strategy(GenerationMode.NEGATIVE),
            )

            @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, session=session, headers=headers,
                                     timeout=15)
                case.validate_response(response, checks=CHECKS, headers=headers)
                if response.status_code < 300:
                    succeeded.add(case.operation.label)

            try:
                run()
            except Exception as exc:  # reported below, with the failing case
                failures.append(f"{operation.label}: {exc}")
    return failures, succeeded


#: Operations anyone may call; no other may answer 2xx without credentials.
PUBLIC = {"GET /health", "GET /ready", "GET /metrics", "GET /openapi.json"}


@pytest.mark.parametrize("who", list(CREDENTIALS))
def test_no_operation_answers_5xx_or_off_its_documented_schema(
    fuzz_hub: ThreadHub, who: str
) -> None:
    schema, doc = load_schema(fuzz_hub.url)
    assert len(list(schema.get_all_operations())) >= 26
    failures, succeeded = fuzz(schema, fuzz_hub.url, CREDENTIALS[who])
    assert not failures, "\n\n".join(failures)
    # The cases reached the handlers (the credentials worked), and succeeded only where
    # the document says these credentials may.
    if who == "none":
        assert succeeded == PUBLIC
        return
    assert PUBLIC < succeeded
    assert len(succeeded) >= {"user": 14, "admin": 16, "service": 8}[who], succeeded
    if who == "service":
        assert not succeeded & without_api_key(doc)


def test_demo_mode_token_route_answers_no_5xx_or_off_its_schema(
    pg_admin_dsn: str, pg_template: str, tmp_path: Any
) -> None:
    with hub_in_thread(pg_admin_dsn, pg_template, data_dir=tmp_path / "demo") as hub:
        schema, _ = load_schema(hub.url)
        failures, _ = fuzz(schema.include(path="/demo/token"), hub.url, {})
    assert not failures, "\n\n".join(failures)
