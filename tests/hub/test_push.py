"""Web push (docs/delivery.md, "Web push"): subscriptions over REST, pushes to a push
service on loopback that checks the VAPID JWT and decrypts what a browser would show."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from hub.channels import Delivery, Permanent, Temporary
from hub.channels.push import MAX_PLAINTEXT_BYTES, PushChannel, RetryLater
from hub.push_subscriptions import MAX_PER_USER
from hub.settings import SettingsError, load_settings
from hub.vapid import Vapid, b64url, load_private_key, resolve
from tests.conftest import auth, running_app
from tests.hub.pushservice import PushService, b64, push_service, unb64

SUBJECT = "mailto:ops@example.com"


def raw_key() -> str:
    """A VAPID private key as guides print it: base64url of the 32-byte scalar."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


@pytest.fixture
def vapid_key() -> str:
    return raw_key()


@pytest.fixture
def push_env(settings_env: dict[str, Any], vapid_key: str) -> dict[str, Any]:
    return {**settings_env, "vapid_private_key": vapid_key, "vapid_subject": SUBJECT,
            "push_allow_http_loopback": True}


@pytest.fixture
async def app(push_env: dict[str, Any]) -> AsyncIterator[Any]:
    async with running_app(**push_env) as app:
        yield app


@pytest.fixture
async def service() -> AsyncIterator[PushService]:
    async with push_service() as service:
        yield service


@pytest.fixture
async def channel(app: Any) -> AsyncIterator[PushChannel]:
    svc = app.state.services
    vapid = resolve(svc.settings)
    assert vapid is not None
    channel = PushChannel(svc.pool, vapid, ttl=svc.settings.push_ttl_seconds)
    try:
        yield channel
    finally:
        await channel.close()


def note(id_: int = 7, user: str = "alice", **fields: Any) -> Delivery:
    notification = {"id": id_, "user_id": user, "type": "grade_posted", "title": "Grade posted",
                    "body": "Essay 2: A-", "link": "/grades/5", "data": {},
                    "priority": "normal", "created_at": "2025-01-01T00:00:00Z", **fields}
    return Delivery(id=1, channel="push", attempt=1, notification=notification)


async def subscribe(client: httpx.AsyncClient, sub: dict[str, Any], user: str = "alice") -> Any:
    r = await client.post("/api/push/subscriptions", json=sub, headers=auth(user))
    assert r.status_code == 201, r.text
    return r.json()


async def subscriptions(app: Any, user: str) -> list[str]:
    rows = await app.state.services.pool.fetch(
        "SELECT endpoint FROM push_subscriptions WHERE user_id = $1 ORDER BY id", user)
    return [r["endpoint"] for r in rows]


# ---- sending -------------------------------------------------------------------------


async def test_a_push_reaches_the_browser_decrypted_with_a_valid_vapid_jwt(
    client, channel, service, vapid_key
):
    await subscribe(client, service.browser("phone"))
    await channel.send(note(priority="high"))
    [push] = await service.wait(1)
    assert push.error is None, push.error
    assert orjson.loads(push.plaintext or b"") == {
        "id": 7, "type": "grade_posted", "title": "Grade posted", "body": "Essay 2: A-",
        "link": "/grades/5", "priority": "high"}
    # RFC 8292: signed by the hub's key, for the push service's origin, within 24 h.
    expected_k = b64url(load_private_key(vapid_key).public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint))
    assert push.vapid_key == expected_k
    assert push.claims is not None
    assert push.claims["aud"] == service.url and push.claims["sub"] == SUBJECT
    assert time.time() < push.claims["exp"] <= time.time() + 24 * 3600


async def test_a_push_carries_ttl_urgency_from_priority_and_a_topic_of_the_notification(
    client, channel, service
):
    await subscribe(client, service.browser("phone"))
    for id_, priority in ((11, "high"), (12, "normal"), (13, "low")):
        await channel.send(note(id_, priority=priority))
    pushes = await service.wait(3)
    assert [p.headers["urgency"] for p in pushes] == ["high", "normal", "low"]
    assert [p.headers["topic"] for p in pushes] == ["n11", "n12", "n13"]
    assert {p.headers["ttl"] for p in pushes} == {"86400"}
    assert {p.headers["content-encoding"] for p in pushes} == {"aes128gcm"}


async def test_the_ttl_is_the_setting(push_env, service):
    async with running_app(**push_env, push_ttl_seconds=600) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await subscribe(client, service.browser("phone"))
        svc = app.state.services
        channel = PushChannel(svc.pool, resolve(svc.settings), ttl=600)  # type: ignore[arg-type]
        try:
            await channel.send(note())
        finally:
            await channel.close()
    [push] = await service.wait(1)
    assert push.headers["ttl"] == "600"


async def test_every_subscription_of_the_user_gets_the_push(client, app, channel, service):
    await subscribe(client, service.browser("phone"))
    await subscribe(client, service.browser("laptop"))
    await subscribe(client, service.browser("bobs"), user="bob")
    await channel.send(note())
    pushes = await service.wait(2)
    assert sorted(p.name for p in pushes) == ["laptop", "phone"]
    assert all(p.plaintext and orjson.loads(p.plaintext)["id"] == 7 for p in pushes)
    used = await app.state.services.pool.fetchval(
        "SELECT count(*) FROM push_subscriptions WHERE last_used_at IS NOT NULL")
    assert used == 2


@pytest.mark.parametrize("status", [404, 410])
async def test_a_subscription_answered_gone_is_deleted_and_the_delivery_fails_for_good(
    client, app, channel, service, status
):
    await subscribe(client, service.browser("phone"))
    service.answers["phone"] = (status, {})
    with pytest.raises(Permanent, match="subscription gone"):
        await channel.send(note())
    assert await subscriptions(app, "alice") == []
    with pytest.raises(Permanent, match="no push subscription"):
        await channel.send(note())


async def test_a_gone_subscription_beside_a_live_one_is_deleted_and_the_push_is_sent(
    client, app, channel, service
):
    await subscribe(client, service.browser("old"))
    await subscribe(client, service.browser("new"))
    service.answers["old"] = (410, {})
    await channel.send(note())
    assert await subscriptions(app, "alice") == [service.endpoint("new")]


async def test_a_push_service_error_is_temporary_and_keeps_the_subscription(
    client, app, channel, service
):
    await subscribe(client, service.browser("phone"))
    service.answers["phone"] = (500, {})
    with pytest.raises(Temporary, match="500"):
        await channel.send(note())
    assert await subscriptions(app, "alice") == [service.endpoint("phone")]
    service.answers["phone"] = (201, {})
    await channel.send(note())  # the retry goes through
    assert len(await service.wait(2)) == 2


async def test_a_push_service_asking_to_wait_is_temporary_with_its_retry_after(
    client, channel, service
):
    await subscribe(client, service.browser("phone"))
    service.answers["phone"] = (429, {"Retry-After": "120"})
    with pytest.raises(RetryLater) as caught:
        await channel.send(note())
    assert caught.value.retry_after == 120.0


async def test_a_push_service_that_is_down_is_temporary(client, app, channel):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from tests.hub.pushservice import Browser

    sub = Browser().subscription(f"http://127.0.0.1:{port}/push/x")
    await subscribe(client, sub)
    with pytest.raises(Temporary, match="unreachable"):
        await channel.send(note())
    assert await subscriptions(app, "alice") == [sub["endpoint"]]


async def test_a_user_without_subscriptions_fails_for_good(channel):
    with pytest.raises(Permanent, match="no push subscription"):
        await channel.send(note(user="nobody"))


async def test_a_long_notification_is_shortened_to_fit_one_push(client, channel, service):
    await subscribe(client, service.browser("phone"))
    await channel.send(note(title="T" * 200, body="é" * 2000, link="/x/" + "y" * 1990))
    [push] = await service.wait(1)
    assert push.error is None, push.error
    assert push.plaintext is not None and len(push.plaintext) <= MAX_PLAINTEXT_BYTES
    shown = orjson.loads(push.plaintext)
    assert shown["title"] == "T" * 200 and shown["link"] == "/x/" + "y" * 1990
    assert shown["body"].endswith("…") and shown["body"].startswith("é" * 100)


# ---- subscriptions over REST ---------------------------------------------------------


async def test_the_vapid_public_key_is_the_uncompressed_point_of_the_configured_key(
    client, vapid_key
):
    r = await client.get("/api/push/vapid-public-key", headers=auth("alice"))
    assert r.status_code == 200
    point = unb64(r.json()["public_key"])
    assert len(point) == 65 and point[0] == 4
    key = load_private_key(vapid_key)
    assert point == key.public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint)


async def test_push_routes_need_a_user_token(client, service):
    assert (await client.get("/api/push/vapid-public-key")).status_code == 401
    r = await client.post("/api/push/subscriptions", json=service.browser("x"))
    assert r.status_code == 401


async def test_without_a_vapid_key_push_is_off_and_says_so_with_404(client_without_push):
    r = await client_without_push.get("/api/push/vapid-public-key", headers=auth("alice"))
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert "HUB_VAPID_PRIVATE_KEY" in r.json()["detail"]
    sub = PushService().browser("x")
    r = await client_without_push.post("/api/push/subscriptions", json=sub, headers=auth("a"))
    assert r.status_code == 404


@pytest.fixture
async def client_without_push(settings_env: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(**settings_env) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_subscribing_again_is_idempotent_on_the_endpoint(client, app, service):
    sub = service.browser("phone")
    first = await subscribe(client, sub)
    again = await subscribe(client, sub)
    assert first["id"] == again["id"] and first["endpoint"] == sub["endpoint"]
    assert await subscriptions(app, "alice") == [sub["endpoint"]]


async def test_an_endpoint_subscribed_by_another_user_moves_to_them(client, app, service):
    sub = service.browser("shared-laptop")
    await subscribe(client, sub, user="alice")
    await subscribe(client, sub, user="bob")
    assert await subscriptions(app, "alice") == []
    assert await subscriptions(app, "bob") == [sub["endpoint"]]


async def test_unsubscribing_deletes_only_the_callers_subscription(client, app, service):
    sub = service.browser("phone")
    await subscribe(client, sub)
    r = await client.request("DELETE", "/api/push/subscriptions",
                             json={"endpoint": sub["endpoint"]}, headers=auth("mallory"))
    assert r.status_code == 204
    assert await subscriptions(app, "alice") == [sub["endpoint"]]
    r = await client.request("DELETE", "/api/push/subscriptions",
                             json={"endpoint": sub["endpoint"]}, headers=auth("alice"))
    assert r.status_code == 204
    assert await subscriptions(app, "alice") == []


async def test_a_user_keeps_only_their_newest_subscriptions(client, app, service):
    endpoints = []
    for i in range(MAX_PER_USER + 2):
        sub = service.browser(f"d{i}")
        endpoints.append(sub["endpoint"])
        await subscribe(client, sub)
    assert sorted(await subscriptions(app, "alice")) == sorted(endpoints[2:])


def _bad(sub: dict[str, Any], **change: Any) -> dict[str, Any]:
    out = {**sub, "keys": dict(sub["keys"])}
    for key, value in change.items():
        if key in ("p256dh", "auth"):
            out["keys"][key] = value
        elif value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


GOOD = PushService(port=1).browser("x")
GOOD["endpoint"] = "https://push.example.com/send/abc"
BAD_SUBSCRIPTIONS = {
    "http endpoint, not loopback": _bad(GOOD, endpoint="http://push.example.com/send/abc"),
    "ftp endpoint": _bad(GOOD, endpoint="ftp://push.example.com/x"),
    # The hub POSTs wherever an endpoint points: never into its own networks.
    "https to loopback": _bad(GOOD, endpoint="https://127.0.0.1:8443/x"),
    "https to localhost": _bad(GOOD, endpoint="https://localhost/x"),
    "https to a private address": _bad(GOOD, endpoint="https://10.1.2.3/x"),
    "https to link-local metadata": _bad(GOOD, endpoint="https://169.254.169.254/x"),
    "https to ipv6 loopback": _bad(GOOD, endpoint="https://[::1]/x"),
    "not a url": _bad(GOOD, endpoint="not a url"),
    "credentials in the url": _bad(GOOD, endpoint="https://u:p@push.example.com/x"),
    "endpoint too long": _bad(GOOD, endpoint="https://push.example.com/" + "a" * 2100),
    "no endpoint": _bad(GOOD, endpoint=None),
    "no keys": _bad(GOOD, keys=None),
    "p256dh of 64 bytes": _bad(GOOD, p256dh=b64(b"\x04" + os.urandom(63))),
    "p256dh compressed": _bad(GOOD, p256dh=b64(b"\x02" + os.urandom(64))),
    "p256dh not base64url": _bad(GOOD, p256dh="+/" * 44),
    "auth of 15 bytes": _bad(GOOD, auth=b64(os.urandom(15))),
    "auth a number": _bad(GOOD, auth=12),
    "an unknown field": _bad(GOOD, extra=True),
    "expirationTime a string": _bad(GOOD, expirationTime="soon"),
}


@pytest.mark.parametrize("case", list(BAD_SUBSCRIPTIONS))
async def test_an_invalid_subscription_is_refused_with_422(client, app, case):
    r = await client.post("/api/push/subscriptions", json=BAD_SUBSCRIPTIONS[case],
                          headers=auth("alice"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await subscriptions(app, "alice") == []


async def test_an_https_subscription_is_accepted(client, app):
    await subscribe(client, GOOD)
    assert await subscriptions(app, "alice") == [GOOD["endpoint"]]


async def test_http_loopback_endpoints_need_the_setting(client_without_http, service):
    r = await client_without_http.post("/api/push/subscriptions", json=service.browser("x"),
                                       headers=auth("alice"))
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["endpoint"]


@pytest.fixture
async def client_without_http(push_env: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(**{**push_env, "push_allow_http_loopback": False}) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


# ---- settings and keys ---------------------------------------------------------------


def test_a_vapid_key_that_is_not_a_key_stops_start_up_naming_the_variable():
    with pytest.raises(SettingsError, match="^HUB_VAPID_PRIVATE_KEY: "):
        load_settings(jwt_secret="x" * 32, vapid_private_key="nope", vapid_subject=SUBJECT)


def test_a_vapid_key_needs_a_subject():
    with pytest.raises(SettingsError, match="HUB_VAPID_SUBJECT"):
        load_settings(jwt_secret="x" * 32, vapid_private_key=raw_key())


@pytest.mark.parametrize("subject", ["ops@example.com", "http://example.com", "mailto:"])
def test_a_vapid_subject_must_be_mailto_or_https(subject):
    with pytest.raises(SettingsError, match="^HUB_VAPID_SUBJECT: "):
        load_settings(jwt_secret="x" * 32, vapid_subject=subject)


def test_a_pem_vapid_key_is_accepted_and_signs_as_the_same_key():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    settings = load_settings(jwt_secret="x" * 32, vapid_private_key=pem,
                             vapid_subject="https://example.com/contact")
    vapid = resolve(settings)
    assert vapid is not None
    assert unb64(vapid.public_key) == key.public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint)


def test_without_a_key_outside_demo_mode_push_is_off(tmp_path):
    assert resolve(load_settings(jwt_secret="x" * 32, data_dir=tmp_path)) is None


def test_demo_mode_generates_a_key_once_and_keeps_it_private_in_the_data_dir(tmp_path):
    settings = load_settings(data_dir=tmp_path / "d")
    first = resolve(settings)
    assert isinstance(first, Vapid)
    path = tmp_path / "d" / "vapid_private_key"
    assert path.stat().st_mode & 0o777 == 0o600
    again = resolve(load_settings(data_dir=tmp_path / "d"))
    assert again is not None and again.public_key == first.public_key
    assert first.subject.startswith("mailto:")
