"""A rolling upgrade from the previous release to this checkout, both really running
(docs/configuration.md, "Rolling upgrades").

The previous release is the commit ``PREVIOUS_RELEASE`` of this repository. The module
extracts it (``git archive``) and runs it as ``python -m api.cli serve`` with its tree as
``PYTHONPATH`` and working directory, on this venv's interpreter. As in a real upgrade it
starts first, on an empty database that it migrates itself; then a hub of this checkout
starts on the same database and Redis prefix and applies its newer migrations while the
old one serves. Both processes are shared by the module's tests (each test has its own
users); the last test drains the old one with SIGTERM.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from db.migrate import available
from tests.conftest import API_KEY, SECRET, scratch_database
from tests.live.conftest import (
    REPO,
    SSE,
    HubProcess,
    hub_env,
    recv,
    sse_stream,
    ws_connect,
    ws_url,
)
from tests.live.faults import (
    add_entries,
    consumer_of,
    count_titled,
    counted,
    creating,
    follow,
    last_seq,
    no_pending,
    pending_by_consumer,
    titles,
)
from tests.live.test_cluster import (
    Feed,
    feeds,
    greeted,
    http_client,
    no_tracebacks,
    notify,
    quiet,
    until,
)

#: The release this checkout replaces: its commit in this repository's history. Cutting
#: the next release points this at the commit of the release being replaced
#: (docs/configuration.md, "Rolling upgrades").
PREVIOUS_RELEASE = "8e66716277988ffbbc8e6b03b98c3954e389c5f8"

# One pair of processes for the module (for each pytest-xdist worker that runs some of
# its tests), so its tests run on the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

Frame = dict[str, Any]


def extract_release(commit: str, into: Path) -> Path:
    """The tree of ``commit`` of the repository the tests run in, written to ``into``."""
    try:
        found = subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True, text=True, timeout=30,
        )
    except OSError as exc:
        pytest.fail(f"git is needed to extract the previous release {commit}: {exc}",
                    pytrace=False)
    if found.returncode != 0:
        pytest.fail(
            f"the previous release {commit} is not in the history of {REPO} (a shallow "
            f"clone?): fetch the full history (`git fetch --unshallow`, or clone without "
            f"--depth) to run the rolling-upgrade tests. git: {found.stderr.strip()}",
            pytrace=False,
        )
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit],
                               stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, timeout=60)
    assert archive.stdout is not None
    archive.stdout.close()
    assert archive.wait(60) == 0 and untar.returncode == 0, "git archive | tar -x failed"
    return into


def project_version(tree: Path) -> str:
    """``version`` in the ``pyproject.toml`` of ``tree``."""
    return str(tomllib.loads((tree / "pyproject.toml").read_text())["project"]["version"])


def as_installed(tree: Path) -> None:
    """Give ``tree`` the metadata of an install of its own version, so that the release
    run from it reports that version (``/openapi.json``, ``--version``) and not the one
    of the notifyhub installed in this venv: ``importlib.metadata`` finds it on
    ``PYTHONPATH`` first."""
    version = project_version(tree)
    info = tree / f"notifyhub-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: notifyhub\nVersion: {version}\n"
    )


def imported_from(env: dict[str, str], cwd: Path) -> dict[str, Path]:
    """Where the interpreter, with ``env`` and in ``cwd``, imports the four packages from."""
    probe = subprocess.run(
        [sys.executable, "-c",
         "import api.cli, db, hub, pubsub\n"
         "for m in (api.cli, db, hub, pubsub): print(m.__name__, m.__file__)"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    return {name: Path(path) for name, path in (line.split(" ", 1)
                                                for line in probe.stdout.splitlines())}


async def migrations_applied(database_url: str) -> list[str]:
    """``NNNN_name`` of every migration recorded in the database, in order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [f"{r['version']:04d}_{r['name']}" for r in rows]


def shipped_migrations(tree: Path) -> list[str]:
    """``NNNN_name`` of the migration files of the checkout at ``tree``."""
    pattern = re.compile(r"^\d{4}_\w+$")
    return sorted(p.stem for p in (tree / "db" / "migrations").glob("*.sql")
                  if pattern.match(p.stem))


async def reported_version(hub: HubProcess) -> str:
    async with http_client(hub) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200, response.text
    return str(response.json()["info"]["version"])


@dataclass
class Releases:
    """The previous release (``old``) and this checkout (``new``) on one database and
    one Redis prefix."""

    old: HubProcess
    new: HubProcess
    database_url: str
    redis_url: str
    prefix: str

    async def running_old(self) -> HubProcess:
        """The old instance, started again if a test stopped it."""
        assert self.old.proc is not None
        if self.old.proc.returncode is not None:
            self.old = await HubProcess(
                self.old.env, self.old.log_path, cwd=self.old.cwd
            ).start()
        return self.old


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def releases(
    tmp_path_factory: pytest.TempPathFactory, pg_admin_dsn: str, redis_url: str
) -> AsyncIterator[Releases]:
    """The previous release started on an empty database, then this checkout beside it."""
    base = tmp_path_factory.mktemp("releases")
    tree = extract_release(PREVIOUS_RELEASE, base / "previous")
    as_installed(tree)
    prefix = f"r{uuid.uuid4().hex[:12]}:"
    async with scratch_database(pg_admin_dsn, "r_", None) as database_url:
        # The head check once an hour: what one release publishes reaches the other's
        # clients through Redis, in the message format both must read, not through the
        # head check's catch-up from the log (within two seconds by default).
        # One data directory, as one deployment's configuration (VAPID key) for both.
        env = hub_env(jwt_secret=SECRET, api_keys=[API_KEY], data_dir=base / "data",
                      database_url=database_url, redis_url=redis_url, redis_prefix=prefix,
                      head_check_seconds=3600)
        old_env = {**env, "PYTHONPATH": str(tree)}
        # The old release's modules come from its tree, not from this venv's install.
        for name, path in imported_from(old_env, tree).items():
            assert path.is_relative_to(tree), f"{name} imported from {path}, not {tree}"
        old = HubProcess(old_env, base / "old.log", cwd=tree)
        new = HubProcess(env, base / "new.log")
        both = Releases(old, new, database_url, redis_url, prefix)
        try:
            await old.start()
            assert await migrations_applied(database_url) == shipped_migrations(tree)
            await new.start()
            # The new release applied its own migrations (if any) while the old one serves.
            assert await migrations_applied(database_url) == [
                f"{version:04d}_{name}" for version, name, _ in available()
            ]
            old_version, new_version = project_version(tree), project_version(REPO)
            assert old_version != new_version, (
                f"the previous release {PREVIOUS_RELEASE} and this checkout are both "
                f"{new_version}: bump the version, or point PREVIOUS_RELEASE at the "
                f"release being replaced"
            )
            assert await reported_version(old) == old_version
            assert await reported_version(new) == new_version, (
                "this venv's notifyhub was installed from another version of pyproject.toml:"
                " install it again (`pip install -e .`; `make test` does)"
            )
            yield both
        finally:
            for hub in (both.new, both.old):  # the old one as restarted, if it was
                if hub.proc is not None:
                    await hub.kill()


@pytest_asyncio.fixture(loop_scope="module")
async def hubs(releases: Releases) -> AsyncIterator[tuple[HubProcess, HubProcess]]:
    """The old and the new instance, both running; no traceback in either's log after."""
    old = await releases.running_old()
    yield old, releases.new
    no_tracebacks(old, releases.new)


async def next_frame(client: ClientConnection | SSE) -> Frame:
    """The next event of a WebSocket or SSE client."""
    return await client.event() if isinstance(client, SSE) else await recv(client)


async def send_message(ws: ClientConnection, recipient: str, body: str) -> Frame:
    """Send a direct message over ``ws``; the message, from the sender's ``ack``, after
    checking the sender's own ``message.created`` of it."""
    await ws.send(orjson.dumps({
        "type": "message.send", "client_id": uuid.uuid4().hex,
        "data": {"recipient_id": recipient, "body": body},
    }))
    mine = sorted([await recv(ws), await recv(ws)], key=lambda f: str(f["type"]))
    assert [f["type"] for f in mine] == ["ack", "message.created"], mine
    message: Frame = mine[0]["data"]["message"]
    assert mine[1]["data"] == message
    return {**mine[1], "data": message}


async def new_message_noted(client: ClientConnection | SSE, seq: int) -> None:
    """The next event is the recipient's ``new_message`` notification, at ``seq``."""
    note = await next_frame(client)
    assert (note["type"], note["seq"], note["data"]["type"]) == (
        "notification.created", seq, "new_message"
    ), note


@contextlib.asynccontextmanager
async def on_both(
    old: HubProcess, new: HubProcess
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A REST client of each instance."""
    async with http_client(old) as http_old, http_client(new) as http_new:
        yield http_old, http_new


async def test_notifications_and_direct_messages_cross_between_the_releases_once_in_order(
    hubs: tuple[HubProcess, HubProcess],
) -> None:
    old, new = hubs
    ann, bob = "cross-ann", "cross-bob"
    async with (
        on_both(old, new) as (http_old, http_new),
        ws_connect(ws_url(new.url, ann)) as ann_new,
        sse_stream(old.url, ann) as ann_old,
        ws_connect(ws_url(old.url, bob)) as bob_old,
        sse_stream(new.url, bob) as bob_new,
    ):
        await greeted(ann_new, ann_old, bob_old, bob_new)

        # Created over REST on the old release, for ann on the new one; and back.
        to_ann = await notify(http_old, ann, "from the old release")
        to_bob = await notify(http_new, bob, "from the new release")
        for client, created in ((ann_new, to_ann), (ann_old, to_ann),
                                (bob_old, to_bob), (bob_new, to_bob)):
            assert await next_frame(client) == {
                "type": "notification.created", "seq": 1, "data": created,
            }

        # A direct message from ann on the new release to bob on the old one ...
        sent = await send_message(ann_new, bob, "hi from the new release")
        assert sent["seq"] == 2
        assert await next_frame(ann_old) == sent  # her own message, on her other client
        for client in (bob_old, bob_new):
            assert await next_frame(client) == {**sent, "seq": 2}
            await new_message_noted(client, 3)
        # ... and his answer from the old release to the new one.
        answer = await send_message(bob_old, ann, "hi from the old release")
        assert answer["seq"] == 4
        assert await next_frame(bob_new) == answer
        for client in (ann_new, ann_old):
            assert await next_frame(client) == {**answer, "seq": 3}
            await new_message_noted(client, 4)

        # Exactly once: a marker created last is each client's next event, and nothing
        # else is queued on the sockets before the answer to a ping.
        marker = await notify(http_old, [ann, bob], "marker")
        for client in (ann_new, ann_old, bob_old, bob_new):
            frame = await next_frame(client)
            assert (frame["type"], frame["seq"], frame["data"]["title"]) == (
                "notification.created", 5, marker["title"]
            )
        await quiet(ann_new)
        await quiet(bob_old)


async def test_ingest_entries_read_by_both_releases_in_one_group_are_each_delivered_once(
    hubs: tuple[HubProcess, HubProcess], releases: Releases,
) -> None:
    old, new = hubs
    user, n = "ingest-u", 20
    database_url, prefix = releases.database_url, releases.prefix
    async with (
        aioredis.Redis.from_url(releases.redis_url) as redis,
        ws_connect(ws_url(old.url, user)) as on_old,
        ws_connect(ws_url(new.url, user)) as on_new,
        sse_stream(new.url, user) as sse_new,
        feeds() as running,
    ):
        await greeted(on_old, on_new, sse_new)
        running += [Feed.of_ws(on_old), Feed.of_ws(on_new), Feed.of_sse(sse_new)]
        await add_entries(redis, prefix, user, 1)
        await until(lambda: counted(database_url, user, "ingest-", 1))
        # Holding the user's counter row stalls every apply mid-batch: the old release
        # and the new one each read entries of the group and hold them unacknowledged.
        blocker = await asyncpg.connect(database_url)
        try:
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute("SELECT 1 FROM user_counters WHERE user_id = $1 FOR UPDATE",
                                  user)
            await add_entries(redis, prefix, user, n, first=1)

            async def both_hold() -> bool:
                pending = await pending_by_consumer(redis, prefix)
                return consumer_of(old, pending) > 0 and consumer_of(new, pending) > 0

            await until(both_hold)
            await lock.rollback()
        finally:
            await blocker.close()
        await until(lambda: counted(database_url, user, "ingest-", n + 1))
        await until(lambda: no_pending(redis, prefix))
        assert await count_titled(database_url, user, "ingest-") == n + 1
        expected = sorted(f"ingest-{i}" for i in range(n + 1))
        for feed in running:
            assert await feed.reach(n + 1) == list(range(1, n + 2))
            assert sorted(titles(feed)) == expected
        await running[0].quiet(on_old)
        await running[1].quiet(on_new)


async def test_a_client_resuming_with_since_on_the_other_release_gets_what_it_missed_once(
    hubs: tuple[HubProcess, HubProcess],
) -> None:
    old, new = hubs
    user = "resume-u"
    async with on_both(old, new) as (http_old, http_new):
        seen = 0
        # From the old release to the new one, then back.
        for left, joined, live in ((old, new, http_old), (new, old, http_new)):
            async with ws_connect(ws_url(left.url, user, since=seen)) as ws:
                await greeted(ws)
                await notify(live, user, f"seen on {left.log_path.stem}")
                seen += 1
                assert (await recv(ws))["seq"] == seen
            missed = [f"missed {seen}-{i}" for i in range(10)]
            for i, title in enumerate(missed):  # through both while the client is away
                await notify(http_old if i % 2 else http_new, user, title)
            async with (
                ws_connect(ws_url(joined.url, user, since=seen)) as ws,
                sse_stream(joined.url, user, headers={"Last-Event-ID": str(seen)}) as sse,
            ):
                hello = await recv(ws)
                assert (hello["type"], hello["data"]["last_seq"]) == ("hello", seen + 10)
                await greeted(sse)
                for client in (ws, sse):
                    frames = [await next_frame(client) for _ in range(10)]
                    assert [f["seq"] for f in frames] == list(range(seen + 1, seen + 11))
                    assert [f["data"]["title"] for f in frames] == missed
                # Created on the release the client left: live on the one it joined.
                created = await notify(live, user, f"live {seen}")
                seen += 11
                for client in (ws, sse):
                    assert await next_frame(client) == {
                        "type": "notification.created", "seq": seen, "data": created,
                    }
                await quiet(ws)


async def test_sigterm_drains_the_old_release_and_its_clients_resume_on_the_new_losing_nothing(
    hubs: tuple[HubProcess, HubProcess], releases: Releases,
) -> None:
    old, new = hubs
    user = "drain-u"
    async with (
        on_both(old, new) as (http_old, http_new),
        # Creates through both; those through the old one stop when it is gone.
        creating([http_old, http_new], user, fragile=http_old) as creator,
        feeds() as running,
    ):
        # since=0: the creator may have been quicker than the connect.
        async with (
            ws_connect(ws_url(old.url, user, since=0)) as ws,
            sse_stream(old.url, user, since=0) as sse,
        ):
            before = await follow(running, ws, sse)
            await until(lambda: all(len(feed.seqs) >= 5 for feed in before))
            old.signal(signal.SIGTERM)
            for feed in before:
                await feed.end()  # closed by the old release as it drains
            assert ws.close_code == 1001
        assert await old.wait(15) == 0, old.log()
        await creator.more(5)  # through the new release, while the clients are away
        since = [str(feed.seqs[-1]) for feed in before]
        async with (
            ws_connect(ws_url(new.url, user, since=since[0])) as ws,
            sse_stream(new.url, user, headers={"Last-Event-ID": since[1]}) as sse,
        ):
            after = await follow(running, ws, sse)
            await creator.more(5)
            created = await creator.stop()
            total = await last_seq(releases.database_url, user)
            for old_feed, new_feed in zip(before, after, strict=True):
                await new_feed.reach(total)
                assert old_feed.seqs + new_feed.seqs == list(range(1, total + 1))
                got = titles(old_feed) + titles(new_feed)
                assert len(got) == len(set(got)) == total
                assert set(created) <= set(got)  # every 201, and through the old maybe more
            await after[0].quiet(ws)

