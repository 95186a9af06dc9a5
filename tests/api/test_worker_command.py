"""``notifyhub worker``: delivery workers in a process of their own, no HTTP (docs/cli.md).

Run as a real subprocess; it sends through the real webhook channel to a receiver on
loopback that verifies the signatures (tests/hub/test_webhook.py)."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.api.test_cli import CLI, cli_env
from tests.conftest import SERVICE, auth, running_app
from tests.hub.test_webhook import SECRET, receiver
from tests.waiting import eventually

T = 60.0


async def test_the_worker_command_sends_what_serve_scheduled_and_stops_at_sigterm(
    settings_env, database_url, tmp_path
):
    async with receiver() as rec:
        hook = {"webhook_url": rec.url, "webhook_secret": SECRET}
        # A hub without workers of its own schedules the delivery...
        async with running_app(**settings_env, **hook, delivery_workers=0) as app:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://hub", timeout=T) as client:
                await client.patch("/api/notifications/preferences",
                                   json={"channels": {"webhook": True}}, headers=auth("ann"))
                r = await client.post("/api/notifications", headers=SERVICE, json={
                    "user_id": "ann", "type": "grade_posted", "title": "Graded"})
                assert r.status_code == 201, r.text
                created = r.json()["items"][0]
        await asyncio.sleep(0.3)
        assert rec.received == []
        # ...and the worker process sends it.
        env = cli_env(tmp_path, HUB_DATABASE_URL=database_url, HUB_WEBHOOK_URL=rec.url,
                      HUB_WEBHOOK_SECRET=SECRET, HUB_DELIVERY_POLL_SECONDS="0.2",
                      HUB_JWT_SECRET="x" * 40)
        proc = await asyncio.create_subprocess_exec(
            *CLI, "worker", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await eventually(lambda: rec.received, timeout=T)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), T)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert rec.verdicts == [None]
    assert f'"id":{created["id"]}' in rec.received[0].body.decode()
    log = err.decode()
    assert "delivery worker running: 4 concurrent sends on webhook" in log
    assert "delivery channel sms is off" in log
    assert "Traceback" not in log


async def test_the_worker_command_refuses_to_run_without_workers(tmp_path, database_url):
    env = cli_env(tmp_path, HUB_DATABASE_URL=database_url, HUB_DELIVERY_WORKERS="0")
    proc = await asyncio.create_subprocess_exec(
        *CLI, "worker", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), T)
    assert proc.returncode == 2
    assert err.decode().strip() == (
        "notifyhub: HUB_DELIVERY_WORKERS is 0: this worker would send nothing"
    )
