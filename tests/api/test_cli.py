"""The ``notifyhub`` command line, run as a real subprocess (``python -m api.cli``)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api.server import is_loopback, mask_url, print_banner
from db.migrate import available
from hub.settings import Settings
from hub.tokens import Tokens
from tests.conftest import SECRET
from tests.servers import PgBouncer

REPO = Path(__file__).resolve().parents[2]
#: The console script ``notifyhub`` runs this module's ``main``.
CLI = [sys.executable, "-m", "api.cli"]
TIMEOUT = 60.0


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def cli_env(tmp_path: Path, **hub: str) -> dict[str, str]:
    """The environment of a CLI run: this one without HUB_* variables, plus ``hub``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["HUB_DATA_DIR"] = str(tmp_path / "data")
    env.update(hub)
    return env


async def run_cli(env: dict[str, str], cwd: Path, *args: str) -> Result:
    """Run ``notifyhub ARGS`` to completion (in ``cwd``, so no stray ``.env`` is read)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, HUB_DATABASE_URL=database_url, HUB_JWT_SECRET=SECRET)


def public_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.code == code, result
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("notifyhub: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.error_lines[0]


# ---- token ---------------------------------------------------------------------------


async def test_token_prints_a_jwt_that_the_hub_verifies(tmp_path: Path) -> None:
    result = await run_cli(cli_env(tmp_path, HUB_JWT_SECRET=SECRET), tmp_path, "token", "alice")
    assert result.code == 0, result
    claims = Tokens(Settings(jwt_secret=SECRET)).verify(result.stdout.strip())
    assert claims.user_id == "alice"
    assert claims.admin is False


async def test_token_admin_flag_grants_the_admin_role_for_the_given_ttl(tmp_path: Path) -> None:
    env = cli_env(tmp_path, HUB_JWT_SECRET=SECRET)
    result = await run_cli(env, tmp_path, "token", "ops@example", "--admin", "--ttl", "120")
    assert result.code == 0, result
    token = result.stdout.strip()
    assert Tokens(Settings(jwt_secret=SECRET)).verify(token).admin is True
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 120


async def test_token_in_demo_mode_is_signed_with_the_secret_kept_in_the_data_dir(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path)
    first = await run_cli(env, tmp_path, "token", "alice")
    second = await run_cli(env, tmp_path, "token", "bob")
    assert first.code == second.code == 0
    tokens = Tokens(Settings(data_dir=tmp_path / "data"))
    assert tokens.verify(first.stdout.strip()).user_id == "alice"
    assert tokens.verify(second.stdout.strip()).user_id == "bob"
    assert "demo mode" in first.stderr


async def test_token_refuses_an_invalid_user_id(tmp_path: Path) -> None:
    env = cli_env(tmp_path, HUB_JWT_SECRET=SECRET)
    result = await run_cli(env, tmp_path, "token", "x" * 256)
    assert_one_line_error(result, 2, "USER_ID")
    assert result.stdout == ""


async def test_token_with_a_public_key_configured_cannot_sign(tmp_path: Path) -> None:
    env = cli_env(tmp_path, HUB_JWT_PUBLIC_KEY=public_key_pem())
    result = await run_cli(env, tmp_path, "token", "alice")
    assert_one_line_error(result, 2, "HUB_JWT_PUBLIC_KEY")
    assert result.stdout == ""


# ---- bad configuration ---------------------------------------------------------------

BAD_SETTINGS = [
    ("HUB_DATABASE_URL", "mysql://db.example/hub"),
    ("HUB_REDIS_URL", "redis://localhost:99999/0"),
    ("HUB_JWT_SECRET", "too-short"),
    ("HUB_JWT_PUBLIC_KEY", "not a key"),
    ("HUB_DB_POOL_MAX", "many"),
]
COMMANDS = [
    ["serve"],
    ["migrate"],
    ["token", "alice"],
    ["publish", "alice", "--type", "t", "--title", "Hi"],
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
async def test_a_bad_setting_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    result = await run_cli(cli_env(tmp_path, **{name: value}), tmp_path, "token", "alice")
    assert_one_line_error(result, 2, name)
    assert result.stdout == ""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
async def test_every_command_reports_a_bad_setting_as_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    env = cli_env(tmp_path, HUB_REDIS_URL="redis://localhost:99999/0")
    result = await run_cli(env, tmp_path, *command)
    assert_one_line_error(result, 2, "HUB_REDIS_URL")
    assert result.stdout == ""


async def test_settings_come_from_a_dotenv_file_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HUB_JWT_SECRET=short\n")
    result = await run_cli(cli_env(tmp_path), tmp_path, "token", "alice")
    assert_one_line_error(result, 2, "HUB_JWT_SECRET")


# ---- migrate -------------------------------------------------------------------------


async def test_migrate_applies_every_migration_once_then_reports_up_to_date(
    empty_database_url: str, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, HUB_DATABASE_URL=empty_database_url, HUB_JWT_SECRET=SECRET)
    first = await run_cli(env, tmp_path, "migrate")
    assert first.code == 0, first
    expected = [f"applied {version:04d}_{name}" for version, name, _ in available()]
    assert first.stdout.splitlines() == expected
    second = await run_cli(env, tmp_path, "migrate")
    assert second.code == 0, second
    assert second.stdout.strip() == "database is up to date"


async def test_migrate_through_pgbouncer_in_transaction_mode_applies_every_migration(
    empty_database_url: str, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, HUB_DATABASE_URL=pgbouncer.url_for(empty_database_url),
                  HUB_DATABASE_POOLER="transaction", HUB_JWT_SECRET=SECRET)
    first = await run_cli(env, tmp_path, "migrate")
    assert first.code == 0, first
    assert len(first.stdout.splitlines()) == len(available())
    second = await run_cli(env, tmp_path, "migrate")
    assert (second.code, second.stdout.strip()) == (0, "database is up to date"), second


def test_the_banner_says_when_the_database_is_behind_a_transaction_pooler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(database_url="postgresql://hub:pw@bouncer:6432/hub",
                        database_pooler="transaction")
    print_banner(settings, "127.0.0.1", 8000)
    assert capsys.readouterr().out.splitlines()[1] == (
        "database: postgresql://hub:***@bouncer:6432/hub (through a pooler in transaction mode)"
    )


async def test_migrate_with_an_unreachable_database_fails_with_one_line(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    dsn = f"postgresql://hub:s3cret@127.0.0.1:{unused_tcp_port}/hub"
    result = await run_cli(cli_env(tmp_path, HUB_DATABASE_URL=dsn), tmp_path, "migrate")
    assert_one_line_error(result, 1, "database")
    assert "s3cret" not in result.stderr


# ---- publish -------------------------------------------------------------------------


async def test_publish_stores_a_notification_and_its_event_and_prints_it(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    result = await run_cli(
        env, tmp_path, "publish", "alice", "--type", "grade_posted", "--title", "Grade posted",
        "--body", "Essay 2: A-", "--data", '{"course": "Bio"}', "--link", "/grades/5",
        "--priority", "high",
    )
    assert result.code == 0, result
    printed = orjson.loads(result.stdout)
    assert printed["suppressed"] == []
    [item] = printed["items"]
    assert item["user_id"] == "alice"
    assert item["title"] == "Grade posted"
    assert item["data"] == {"course": "Bio"}
    assert item["priority"] == "high"
    assert item["created_at"].endswith("Z")
    conn = await asyncpg.connect(database_url)
    try:
        row = await asyncio.wait_for(
            conn.fetchrow("SELECT title, body, link FROM notifications WHERE id = $1", item["id"]),
            TIMEOUT,
        )
        events = await asyncio.wait_for(
            conn.fetch("SELECT seq, type FROM user_events WHERE user_id = 'alice'"), TIMEOUT
        )
    finally:
        await conn.close()
    assert dict(row) == {"title": "Grade posted", "body": "Essay 2: A-", "link": "/grades/5"}
    assert [(e["seq"], e["type"]) for e in events] == [(1, "notification.created")]


async def test_publish_renders_a_template_from_data(env: dict[str, str], tmp_path: Path) -> None:
    data = '{"assignment": "Essay 2", "grade": "A-", "grade_id": 5}'
    result = await run_cli(
        env, tmp_path, "publish", "alice", "--type", "grade_posted",
        "--template", "grade_posted", "--data", data,
    )
    assert result.code == 0, result
    [item] = orjson.loads(result.stdout)["items"]
    assert item["body"] == "Your grade for Essay 2 is A-"
    assert item["link"] == "/grades/5"


async def test_publish_with_send_at_schedules_it_and_prints_the_schedule(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    send_at, expires_at, too_late = (
        (now + timedelta(days=days)).isoformat() for days in (30, 31, 400))
    result = await run_cli(
        env, tmp_path, "publish", "alice", "--type", "t", "--title", "Later",
        "--send-at", send_at, "--expires-at", expires_at,
    )
    assert result.code == 0, result
    printed = orjson.loads(result.stdout)
    assert printed["status"] == "scheduled" and printed["user_ids"] == ["alice"]
    assert datetime.fromisoformat(printed["send_at"]) == datetime.fromisoformat(send_at)
    conn = await asyncpg.connect(database_url)
    try:
        waiting = await asyncio.wait_for(conn.fetchval(
            "SELECT count(*) FROM scheduled_notifications WHERE id = $1", printed["id"]),
            TIMEOUT)
        stored = await asyncio.wait_for(conn.fetchval(
            "SELECT count(*) FROM notifications"), TIMEOUT)
    finally:
        await conn.close()
    assert (waiting, stored) == (1, 0)
    result = await run_cli(env, tmp_path, "publish", "alice", "--type", "t", "--title", "x",
                           "--send-at", too_late)
    assert_one_line_error(result, 2, "send_at")


async def test_publish_with_actions_stores_them_and_refuses_bad_ones(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli(env, tmp_path, "publish", "alice", "--type", "t", "--title", "Hi",
                           "--actions", '[{"id": "ok", "label": "OK", "style": "primary"}]')
    assert result.code == 0, result
    [item] = orjson.loads(result.stdout)["items"]
    assert item["actions"] == [{"id": "ok", "label": "OK", "url": None, "style": "primary"}]
    result = await run_cli(env, tmp_path, "publish", "alice", "--type", "t", "--title", "Hi",
                           "--actions", '{"id": "ok", "label": "OK"}')
    assert_one_line_error(result, 2, "--actions must be a JSON array")
    result = await run_cli(env, tmp_path, "publish", "alice", "--type", "t", "--title", "Hi",
                           "--actions", '[{"id": "o k", "label": "OK"}]')
    assert_one_line_error(result, 2, "actions")


async def test_publish_with_bad_json_data_fails_with_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli(
        env, tmp_path, "publish", "alice", "--type", "t", "--title", "Hi", "--data", "{nope"
    )
    assert_one_line_error(result, 2, "--data")
    assert result.stdout == ""


async def test_publish_with_an_invalid_notification_names_the_field(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli(env, tmp_path, "publish", "alice", "--type", "t", "--title", "x" * 201)
    assert_one_line_error(result, 2, "title")


async def test_publish_with_an_unknown_template_fails_with_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = await run_cli(
        env, tmp_path, "publish", "alice", "--type", "t", "--template", "no_such_template"
    )
    assert_one_line_error(result, 2, "no_such_template")


async def test_publish_to_a_database_without_schema_says_to_migrate(
    empty_database_url: str, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, HUB_DATABASE_URL=empty_database_url, HUB_JWT_SECRET=SECRET)
    result = await run_cli(env, tmp_path, "publish", "alice", "--type", "t", "--title", "Hi")
    assert_one_line_error(result, 1, "notifyhub migrate")


# ---- serve ---------------------------------------------------------------------------


async def read_banner(stdout: asyncio.StreamReader) -> list[str]:
    """The lines ``serve`` prints once it is serving, up to the broker line."""
    lines: list[str] = []
    while not lines or not lines[-1].startswith("broker:"):
        line = await asyncio.wait_for(stdout.readline(), TIMEOUT)
        assert line, f"serve ended before its banner; printed {lines}"
        lines.append(line.decode().rstrip("\n"))
    return lines


async def test_serve_prints_its_url_answers_health_and_exits_cleanly_on_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    with open(tmp_path / "stderr.log", "wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "serve", "--port", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env=env, cwd=tmp_path,
        )
        try:
            assert proc.stdout is not None
            banner = await read_banner(proc.stdout)
            match = re.fullmatch(r"notifyhub listening on (http://127\.0\.0\.1:(\d+))", banner[0])
            assert match, banner
            assert banner[1].startswith("database: postgresql://")
            assert banner[2] == "broker: in-process"
            async with httpx.AsyncClient(base_url=match[1], timeout=TIMEOUT) as http:
                response = await http.get("/health")
            assert response.status_code == 200
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    log = (tmp_path / "stderr.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log


async def test_serve_in_demo_mode_refuses_a_non_loopback_host(tmp_path: Path) -> None:
    result = await run_cli(cli_env(tmp_path), tmp_path, "serve", "--host", "0.0.0.0")
    assert_one_line_error(result, 2, "demo mode", "HUB_JWT_SECRET")


async def test_serve_with_an_unreachable_database_exits_1_with_one_clear_line(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    dsn = f"postgresql://hub:s3cret@127.0.0.1:{unused_tcp_port}/hub"
    env = cli_env(tmp_path, HUB_DATABASE_URL=dsn, HUB_JWT_SECRET=SECRET)
    result = await run_cli(env, tmp_path, "serve", "--port", "0", "--log-level", "warning")
    assert result.code == 1, result
    assert result.error_lines[-1].startswith("notifyhub: cannot start")
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr
    assert result.stdout == ""


async def test_serve_on_a_port_in_use_exits_1_with_one_clear_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = await run_cli(env, tmp_path, "serve", "--port", port, "--log-level", "error")
    assert result.code == 1, result
    assert result.error_lines[-1] == f"notifyhub: cannot listen on http://127.0.0.1:{port}"
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# ---- helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://hub:s3cret@db:5432/hub", "postgresql://hub:***@db:5432/hub"),
        ("postgresql://db/hub?user=hub&password=s3cret", "postgresql://db/hub?user=hub&password=***"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("postgresql://hub:p@ss@db/hub", "postgresql://hub:***@db/hub"),
        ("postgresql://db/hub?sslmode=verify-full&sslpassword=s3cret",
         "postgresql://db/hub?sslmode=verify-full&sslpassword=***"),
        ("postgresql://db/hub?SSLPassword=s3cret&user=hub", "postgresql://db/hub?SSLPassword=***&user=hub"),
        ("postgresql://db/hub?%70assword=s3cret", "postgresql://db/hub?%70assword=***"),
        ("postgresql://db/hub?password=a&password=b", "postgresql://db/hub?password=***&password=***"),
        ("rediss://cache/0?token=s3cret&api_key=s3cret&client_secret=s3cret&auth=s3cret",
         "rediss://cache/0?token=***&api_key=***&client_secret=***&auth=***"),
        ("redis://cache/0?ssl_keyfile=/k.pem&health_check_interval=5",
         "redis://cache/0?ssl_keyfile=***&health_check_interval=5"),
    ],
)
def test_urls_are_shown_with_every_secret_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown


async def test_the_banner_masks_every_secret_of_the_database_url(
    database_url: str, tmp_path: Path
) -> None:
    # The test server trusts local connections, so it ignores both passwords.
    parts = urlsplit(database_url)
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':')[0] or 'postgres'}:s3cret-user@{host}"
    query = "&".join(q for q in (parts.query, "sslmode=disable&sslpassword=s3cret-ssl") if q)
    dsn = urlunsplit(parts._replace(netloc=netloc, query=query))
    env = cli_env(tmp_path, HUB_DATABASE_URL=dsn, HUB_JWT_SECRET=SECRET)
    with open(tmp_path / "stderr.log", "wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "serve", "--port", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env=env, cwd=tmp_path,
        )
        try:
            assert proc.stdout is not None
            banner = await read_banner(proc.stdout)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert banner[1].startswith(f"database: postgresql://{netloc.split(':')[0]}:***@"), banner
    assert banner[1].endswith("sslmode=disable&sslpassword=***"), banner
    assert "s3cret" not in "\n".join(banner) + (tmp_path / "stderr.log").read_text()



@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("10.0.0.5", False), ("example.org", False)],
)
def test_only_loopback_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
