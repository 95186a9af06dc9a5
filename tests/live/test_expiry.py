"""Expiring notifications reach live clients as ``notification.deleted`` (docs/live.md,
docs/delivery.md "Expiring notifications"): a real hub over a real WebSocket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import SERVICE
from tests.live.conftest import live_hub, recv, recv_until, ws_connect


async def create(hub: Any, user: str, **body: Any) -> dict[str, Any]:
    r = await hub.http.post("/api/notifications", headers=SERVICE,
                            json={"user_id": user, "type": "t", "title": "x", **body})
    assert r.status_code == 201, r.text
    return r.json()["items"][0]  # type: ignore[no-any-return]


async def test_a_connected_client_gets_notification_deleted_when_one_expires(
    settings_env: dict[str, Any],
) -> None:
    async with live_hub(**settings_env, expiry_sweep_seconds=0.2) as hub:
        async with ws_connect(hub.ws_url("ann")) as ws:
            assert (await recv(ws))["type"] == "hello"
            soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
            short = await create(hub, "ann", expires_at=soon)
            kept = await create(hub, "ann")
            first = await recv(ws)
            assert first["type"] == "notification.created"
            assert first["data"]["expires_at"] is not None
            assert first["data"] == short
            second = await recv(ws)
            assert second["data"]["expires_at"] is None
            deleted = await recv_until(ws, "notification.deleted", timeout=15)
            assert deleted == {"type": "notification.deleted", "seq": second["seq"] + 1,
                               "data": {"id": short["id"], "unread_count": 1,
                                        "unseen_count": 1}}
        r = await hub.http.get("/api/notifications/unread-count",
                               headers={"Authorization": _bearer("ann")})
        assert r.json() == {"count": 1, "unseen": 1}
        assert kept["id"] != short["id"]


def _bearer(user: str) -> str:
    from tests.conftest import make_token

    return f"Bearer {make_token(user)}"
