"""Operational routes, the HTTP metrics middleware and the demo token route."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.ops import HttpMetrics
from tests.conftest import SERVICE, auth, running_app


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text as ``{family: [(labels, value)…]}`` (raises if it does not parse)."""
    return {
        f.name: [(dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


async def test_health_is_ok_without_credentials(client):
    r = await client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_ready_reports_database_and_broker_ok(client):
    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"database": "ok", "broker": "ok"}


async def test_ready_is_503_naming_the_database_when_it_is_dropped(
    client, database_url, pg_admin_dsn
):
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"database": "down", "broker": "ok"}
    assert (await client.get("/health")).status_code == 200


async def test_ready_is_503_naming_the_broker_when_it_is_down(client, app):
    await app.state.services.broker.stop()
    r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"database": "ok", "broker": "down"}
    metrics = families((await client.get("/metrics")).text)
    assert metrics["notifyhub_broker_healthy"] == [({}, 0.0)]


async def test_metrics_is_prometheus_text_with_notifyhub_metrics(client):
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    metrics = families(r.text)
    assert "notifyhub_notifications_created" in metrics
    assert metrics["notifyhub_broker_healthy"] == [({}, 1.0)]
    assert all(name.startswith("notifyhub_") for name in metrics)


async def test_created_notifications_are_counted_in_metrics(client):
    await client.post("/api/notifications", headers=SERVICE,
                      json={"user_ids": ["a", "b"], "type": "t", "title": "x"})
    metrics = families((await client.get("/metrics")).text)
    assert ({}, 2.0) in metrics["notifyhub_notifications_created"]


async def test_http_metrics_count_requests_by_route_template_and_status(app):
    # Measure through the app's own middleware once it is wired in, else wrap the app.
    wired = any(mw.cls is HttpMetrics for mw in app.user_middleware)
    transport = httpx.ASGITransport(app=app if wired else HttpMetrics(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        await c.get("/api/notifications/unread-count", headers=auth("u1"))
        await c.delete("/api/notifications/41", headers=auth("u1"))
        await c.delete("/api/notifications/42", headers=auth("u1"))
        await c.get("/no/such/page/123")
        await c.put("/health")
        text = (await c.get("/metrics")).text
    metrics = families(text)
    counts = {
        (s["method"], s["route"], s["status"]): v
        for s, v in metrics["notifyhub_http_requests"]
    }
    assert counts[("GET", "/api/notifications/unread-count", "200")] == 1
    assert counts[("DELETE", "/api/notifications/{id}", "404")] == 2
    assert counts[("GET", "<unmatched>", "404")] == 1
    assert counts[("PUT", "/health", "405")] == 1
    [latency] = [f for f in text_string_to_metric_families(text)
                 if f.name == "notifyhub_http_request_seconds"]
    observed = {
        (s.labels["method"], s.labels["route"]): s.value
        for s in latency.samples if s.name.endswith("_count")
    }
    assert observed[("DELETE", "/api/notifications/{id}")] == 2


async def test_demo_mode_serves_tokens_that_the_hub_accepts(database_url, tmp_path):
    data_dir = tmp_path / "d"
    async with running_app(database_url=database_url, data_dir=data_dir) as app:
        assert (data_dir / "jwt_secret").exists()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            r = await c.get("/demo/token", params={"user_id": "alice"})
            assert r.status_code == 200
            assert r.headers["cache-control"] == "no-store"
            body = r.json()
            assert body["user_id"] == "alice" and body["expires_in"] > 0
            user = {"Authorization": f"Bearer {body['token']}"}
            assert (await c.get("/api/announcements", headers=user)).status_code == 200
            assert (await c.post("/api/announcements", json={"title": "x"},
                                 headers=user)).status_code == 403
            admin = (await c.get("/demo/token", params={"user_id": "root",
                                                        "admin": "true"})).json()
            r = await c.post("/api/announcements", json={"title": "x"},
                             headers={"Authorization": f"Bearer {admin['token']}"})
            assert r.status_code == 201


async def test_demo_token_for_invalid_user_id_is_422(database_url, tmp_path):
    async with running_app(database_url=database_url, data_dir=tmp_path / "d") as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            for params in ({"user_id": "not\nvalid"}, {"user_id": "x" * 256}, {}):
                r = await c.get("/demo/token", params=params)
                assert r.status_code == 422
                assert r.headers["content-type"] == "application/problem+json"


async def test_demo_token_route_does_not_exist_with_a_configured_secret(client):
    r = await client.get("/demo/token", params={"user_id": "alice"})
    assert r.status_code == 404


async def test_demo_mode_refuses_host_names_other_than_loopback(database_url, tmp_path):
    async with running_app(database_url=database_url, data_dir=tmp_path / "d") as app:
        transport = httpx.ASGITransport(app=app)
        for host, status in [("evil.example:8013", 403), ("127.0.0.1.evil.example", 403),
                             ("localhost:8013", 200), ("[::1]:8013", 200), ("127.0.0.1", 200)]:
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
                r = await c.get("/demo/token", params={"user_id": "alice"},
                                headers={"Host": host})
                assert r.status_code == status, host


async def test_configured_mode_serves_any_host_name(client):
    r = await client.get("/health", headers={"Host": "hub.example.com"})
    assert r.status_code == 200


def test_host_name_strips_ports_and_brackets():
    from api.ops import host_name

    assert host_name("[::1]:8013") == "::1"
    assert host_name("LocalHost:80") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
