"""Web push through the delivery core: a notification created over REST is pushed by the
hub's workers to the user's subscribed browser, and a user without a subscription gets
no push delivery at all (docs/delivery.md, "Channels")."""

from __future__ import annotations

import httpx
import orjson

from tests.conftest import SERVICE, auth
from tests.hub.test_push import (  # noqa: F401 - fixtures
    app,
    push_env,
    service,
    subscribe,
    vapid_key,
)
from tests.waiting import eventually


async def test_a_rest_create_is_pushed_to_subscribers_only(app, service):  # noqa: F811
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hub") as client:
        await subscribe(client, service.browser("phone"), user="ann")
        await client.patch("/api/notifications/preferences",
                           json={"channels": {"push": True}}, headers=auth("ann"))
        await client.patch("/api/notifications/preferences",
                           json={"channels": {"push": True}}, headers=auth("bob"))
        r = await client.post("/api/notifications", headers=SERVICE, json={
            "user_ids": ["ann", "bob"], "type": "grade_posted", "title": "Graded"})
        assert r.status_code == 201, r.text
        ids = {i["user_id"]: i["id"] for i in r.json()["items"]}
        [push] = await service.wait(1)
        assert push.error is None
        assert orjson.loads(push.plaintext or b"{}")["id"] == ids["ann"]

        async def state(user: str) -> list[tuple[str, str]]:
            r = await client.get(f"/api/notifications/{ids[user]}/deliveries",
                                 headers=SERVICE)
            return [(d["channel"], d["state"]) for d in r.json()["items"]]

        async def ann_sent() -> bool:
            return await state("ann") == [("push", "sent")]

        await eventually(ann_sent)
        assert await state("bob") == []  # no subscription: nothing scheduled
