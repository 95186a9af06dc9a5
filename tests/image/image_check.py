"""The container image (.ci/image/Dockerfile) on the tests' own PostgreSQL and Redis.

Run by ``make image-test`` only, after ``.ci/image/build.sh`` built the image named by
``NOTIFYHUB_IMAGE`` (default ``notifyhub:local``): this file's name does not match
pytest's ``test_*.py``, so ``make test`` never collects it, and naming it on the command
line does. Each test runs the image as it ships (user 10001, ``notifyhub serve --host
0.0.0.0`` as PID 1) with host networking, on a port of its own (``NOTIFYHUB_PORT``).
The tests' PostgreSQL listens on a Unix socket only, so the container reaches it over
TCP through ``tests.proxy.proxied``; Redis listens on loopback TCP already.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tests.conftest import API_KEY, SECRET, SERVICE
from tests.live.conftest import closed_code, recv, recv_until, sse_stream, ws_connect, ws_url
from tests.proxy import proxied
from tests.servers import free_port
from tests.waiting import eventually

IMAGE = os.environ.get("NOTIFYHUB_IMAGE", "notifyhub:local")
#: The bound ``docker stop`` grants after SIGTERM before it sends SIGKILL (exit 137).
#: The hub exits within 10 s of SIGTERM (docs/cli.md); Docker's default is 10 s too.
STOP_SECONDS = 10
#: Longest wait for a container to listen (it migrates an empty database first), and
#: for Docker to call it healthy (the HEALTHCHECK runs every 10 s).
START_SECONDS = 60
UID = 10001


async def docker(*args: str, timeout: float = 60) -> str:
    """Run ``docker ARGS``; its stdout, stripped. Fails with its stderr on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"docker {' '.join(args[:2])}: {err.decode()}"
    return out.decode().strip()


async def inspect(target: str, template: str, kind: str = "container") -> Any:
    return orjson.loads(await docker(kind, "inspect", "--format", f"{{{{json {template}}}}}",
                                     target))


@dataclass
class Container:
    """A running notifyhub container: ``url`` on loopback, Docker's ``id``."""

    id: str
    url: str

    async def state(self) -> dict[str, Any]:
        return await inspect(self.id, ".State")  # type: ignore[no-any-return]

    async def logs(self) -> str:
        """What the hub wrote to stdout and stderr (``docker logs`` splits them)."""
        proc = await asyncio.create_subprocess_exec(
            "docker", "logs", self.id,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return out.decode()

    async def answering(self) -> bool:
        state = await self.state()
        assert state["Running"], f"the container exited:\n{await self.logs()}"
        try:
            async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
                return (await http.get(f"{self.url}/health")).status_code == 200
        except httpx.HTTPError:
            return False


@contextlib.asynccontextmanager
async def hub_container(
    database_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Container]:
    """The image running on ``database_url`` and ``redis_url``; removed when the block ends."""
    assert await docker("image", "ls", "--quiet", IMAGE), (
        f"no image {IMAGE}: build it with `bash .ci/image/build.sh` (make image-test does)"
    )
    port = free_port()
    with proxied(database_url) as (_, tcp_database_url):
        env = {
            "NOTIFYHUB_PORT": str(port),
            "HUB_DATABASE_URL": tcp_database_url,
            "HUB_REDIS_URL": redis_url,
            "HUB_REDIS_PREFIX": redis_prefix,
            "HUB_JWT_SECRET": SECRET,
            "HUB_API_KEYS": API_KEY,
        }
        options = [f"--env={name}={value}" for name, value in env.items()]
        cid = await docker("run", "--detach", "--network=host", *options, IMAGE)
        box = Container(cid, f"http://127.0.0.1:{port}")
        try:
            await eventually(box.answering, timeout=START_SECONDS)
            yield box
        finally:
            await docker("rm", "--force", cid)


async def test_the_image_runs_as_a_non_root_user_and_serves_on_all_addresses() -> None:
    config = await inspect(IMAGE, ".Config", kind="image")
    assert config["User"] == f"{UID}:{UID}"
    assert "notifyhub serve --host 0.0.0.0" in " ".join(config["Entrypoint"])
    assert "/health" in " ".join(config["Healthcheck"]["Test"])
    assert config["StopSignal"] == "SIGTERM"


async def test_the_container_migrates_serves_the_client_and_delivers_a_rest_create_live(
    empty_database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with hub_container(empty_database_url, redis_url, redis_prefix) as box:
        status = await docker("exec", box.id, "cat", "/proc/1/status")
        assert f"Uid:\t{UID}\t" in status  # the hub itself, PID 1, is not root
        async with httpx.AsyncClient(base_url=box.url, timeout=10, trust_env=False) as http:
            ready = await http.get("/ready")
            assert ready.json() == {"database": "ok", "broker": "ok"}
            # The browser client, from the wheel's data files (not a source tree).
            for path in ("/static/notifyhub.js", "/static/notifyhub/transports.js"):
                script = await http.get(path)
                assert script.status_code == 200, path
                assert "javascript" in script.headers["content-type"]
            async with ws_connect(ws_url(box.url, "alice")) as ws:
                assert (await recv(ws))["type"] == "hello"
                response = await http.post(
                    "/api/notifications", headers=SERVICE,
                    json={"user_id": "alice", "type": "grade_posted", "title": "Essay 2: A-"},
                )
                assert response.status_code == 201, response.text
                created = response.json()["items"][0]
                frame = await recv_until(ws, "notification.created")
                assert frame["data"] == created


async def test_docker_calls_the_container_healthy(
    empty_database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with hub_container(empty_database_url, redis_url, redis_prefix) as box:

        async def health() -> str:
            return (await box.state())["Health"]["Status"]  # type: ignore[no-any-return]

        assert await health() in ("starting", "healthy")
        assert await eventually(
            lambda: _is(health, "healthy"), timeout=START_SECONDS
        )


async def _is(read: Any, value: str) -> bool:
    found = await read()
    assert found != "unhealthy"
    return bool(found == value)


async def test_sigterm_drains_live_connections_and_exits_0_within_the_stop_bound(
    empty_database_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with hub_container(empty_database_url, redis_url, redis_prefix) as box:
        async with (
            ws_connect(ws_url(box.url, "alice")) as ws,
            sse_stream(box.url, "alice") as sse,
        ):
            assert (await recv(ws))["type"] == "hello"
            assert (await sse.event())["type"] == "hello"
            # SIGTERM, then SIGKILL if the container still runs after STOP_SECONDS.
            await docker("stop", f"--time={STOP_SECONDS}", box.id, timeout=STOP_SECONDS + 30)
            assert await closed_code(ws) == 1001  # "going away": reconnect elsewhere
            while (block := await sse.block()) is not None:
                assert block["event"] is None  # keep-alive comments until the stream ends
        state = await box.state()
        logs = await box.logs()
        # 137 would be Docker's SIGKILL at the bound; 0 is the hub's clean exit.
        assert (state["ExitCode"], state["OOMKilled"]) == (0, False), logs
        assert "notifyhub: stopped" in logs
