"""The periodic head check: committed events reach open connections even when their
publish never arrived (a failed publish, or a writer the broker cannot reach)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from tests.conftest import SECRET
from tests.live.conftest import live_hub, recv, recv_until, ws_connect
from tests.live.test_resume import log_unpublished


async def test_an_event_committed_without_a_publish_reaches_an_open_connection(settings_env):
    async with live_hub(**settings_env, head_check_seconds=0.1) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            assert (await recv(ws))["type"] == "hello"
            await log_unpublished(hub, "u1", 3)
            frames = [await recv(ws) for _ in range(3)]
            assert [(f["type"], f["seq"]) for f in frames] == [
                ("test.event", 1), ("test.event", 2), ("test.event", 3),
            ]


async def test_a_notification_published_from_the_cli_reaches_a_hub_on_the_in_process_broker(
    settings_env: dict[str, Any],
):
    async with live_hub(**settings_env, head_check_seconds=0.1) as hub:
        async with ws_connect(hub.ws_url("alice")) as ws:
            assert (await recv(ws))["type"] == "hello"
            env = {**os.environ, "HUB_DATABASE_URL": settings_env["database_url"],
                   "HUB_DATABASE_POOLER": settings_env.get("database_pooler", "none"),
                   "HUB_JWT_SECRET": SECRET, "HUB_DATA_DIR": str(settings_env["data_dir"])}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "api.cli", "publish", "alice", "--type", "t",
                "--title", "from the command line", env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            frame = await recv_until(ws, "notification.created")
            assert frame["data"]["title"] == "from the command line"
            assert frame["seq"] == 1


async def test_a_lag_is_caught_up_only_when_it_outlives_one_check(settings_env):
    # A long interval keeps the background check out of the way; checks run by hand.
    async with live_hub(**settings_env, head_check_seconds=3600) as hub:
        async with ws_connect(hub.ws_url("u1")) as ws:
            assert (await recv(ws))["type"] == "hello"
            await log_unpublished(hub, "u1", 1)
            assert await hub.node.check_heads() == 0  # maybe its publish is in flight
            assert await hub.node.check_heads() == 1  # still behind: read the log
            assert (await recv(ws))["seq"] == 1
            assert await hub.node.check_heads() == 0
