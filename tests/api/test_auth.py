"""Authentication and problem+json errors at the HTTP edge (docs/api.md, "Authentication")."""

from __future__ import annotations

import time
import warnings

import httpx
import jwt
import pytest

from tests.conftest import SECRET, make_token, running_app


async def status(client, headers) -> int:
    r = await client.get("/api/notifications", headers=headers)
    if r.status_code != 200:
        assert r.headers["content-type"] == "application/problem+json"
        assert set(r.json()) >= {"type", "title", "status", "detail"}
    return r.status_code


def token(payload, key=SECRET, alg="HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HS512 with a short key is the point of one case
        return jwt.encode(payload, key, algorithm=alg)


async def test_no_credentials_is_401(client):
    assert await status(client, {}) == 401


async def test_valid_token_is_200(client):
    assert await status(client, {"Authorization": f"Bearer {make_token('u1')}"}) == 200


@pytest.mark.parametrize(
    "bad",
    [
        "Bearer not-a-jwt",
        "Basic dTE6cA==",
        "Bearer " + token({"sub": "u1", "exp": int(time.time()) + 60}, key="w" * 40),
        "Bearer " + token({"sub": "u1", "exp": int(time.time()) - 120}),
        "Bearer " + token({"sub": "u1"}),
        "Bearer " + token({"exp": int(time.time()) + 60}),
        "Bearer " + token({"sub": "bad\nuser", "exp": int(time.time()) + 60}),
        "Bearer " + jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, None, algorithm="none"),
        "Bearer " + token({"sub": "u1", "exp": int(time.time()) + 60}, alg="HS512"),
        "Bearer " + token({"sub": "u1", "exp": 10**400}),
        "Bearer " + token({"sub": "u1", "exp": 1e300}),
        "Bearer " + token({"sub": "u1", "exp": True}),
        "Bearer " + token({"sub": "", "exp": int(time.time()) + 60}),
        "Bearer " + token({"sub": "x" * 256, "exp": int(time.time()) + 60}),
        "Bearer " + token({"sub": 42, "exp": int(time.time()) + 60}),
        "Bearer " + token({"sub": "alice\n", "exp": int(time.time()) + 60}),
    ],
    ids=["garbage", "basic", "bad-signature", "expired", "no-exp", "no-sub", "bad-sub",
         "alg-none", "other-alg", "exp-10^400", "exp-1e300", "exp-bool", "empty-sub",
         "long-sub", "number-sub", "sub-trailing-newline"],
)
async def test_bad_tokens_are_401(client, bad):
    assert await status(client, {"Authorization": bad}) == 401


async def test_expiry_has_30_seconds_leeway(client):
    t = token({"sub": "u1", "exp": int(time.time()) - 10})
    assert await status(client, {"Authorization": f"Bearer {t}"}) == 200


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_a_token_from_a_clock_30_seconds_ahead_is_accepted_but_not_more(client, claim):
    now = int(time.time())
    soon = token({"sub": "u1", "exp": now + 600, claim: now + 20})
    assert await status(client, {"Authorization": f"Bearer {soon}"}) == 200
    later = token({"sub": "u1", "exp": now + 600, claim: now + 120})
    assert await status(client, {"Authorization": f"Bearer {later}"}) == 401


async def test_the_leeway_is_a_setting(settings_env):
    now = int(time.time())
    late = token({"sub": "u1", "exp": now - 100})
    early = token({"sub": "u1", "exp": now + 600, "nbf": now + 100})
    async with running_app(**settings_env, jwt_leeway_seconds=120) as app:
        async with _client(app) as client:
            assert await status(client, {"Authorization": f"Bearer {late}"}) == 200
            assert await status(client, {"Authorization": f"Bearer {early}"}) == 200
    async with running_app(**settings_env, jwt_leeway_seconds=0) as app:
        async with _client(app) as client:
            recent = token({"sub": "u1", "exp": now - 2})
            assert await status(client, {"Authorization": f"Bearer {recent}"}) == 401


@pytest.mark.parametrize("sub", [
    "auth0|5f7c8ec7c33c6c004bbafe82", "google-oauth2|1043", "ann+tag@example.com",
    "team/ann", "100%", "ann smith", "名前", "x" * 255,
])
async def test_identity_provider_subjects_are_user_ids(client, sub):
    t = token({"sub": sub, "exp": int(time.time()) + 60})
    assert await status(client, {"Authorization": f"Bearer {t}"}) == 200


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_bad_api_key_is_401(client):
    assert await status(client, {"X-API-Key": "nope"}) == 401


async def test_audience_and_issuer_are_checked_when_configured(settings_env):
    import httpx

    async with running_app(**settings_env, jwt_audience="hub", jwt_issuer="idp") as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            exp = int(time.time()) + 60
            good = token({"sub": "u1", "exp": exp, "aud": "hub", "iss": "idp"})
            wrong_aud = token({"sub": "u1", "exp": exp, "aud": "other", "iss": "idp"})
            wrong_iss = token({"sub": "u1", "exp": exp, "aud": "hub", "iss": "other"})
            missing = token({"sub": "u1", "exp": exp})
            assert await status(client, {"Authorization": f"Bearer {good}"}) == 200
            for bad in (wrong_aud, wrong_iss, missing):
                assert await status(client, {"Authorization": f"Bearer {bad}"}) == 401


async def test_rs256_public_key_verifies_provider_tokens(settings_env):
    import httpx
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    env = {**settings_env, "jwt_secret": None, "jwt_public_key": public_pem}
    async with running_app(**env) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            exp = int(time.time()) + 60
            good = jwt.encode({"sub": "u1", "exp": exp}, private, algorithm="RS256")
            hs = token({"sub": "u1", "exp": exp}, key=public_pem[:64])
            assert await status(client, {"Authorization": f"Bearer {good}"}) == 200
            assert await status(client, {"Authorization": f"Bearer {hs}"}) == 401


async def test_body_over_one_mib_is_413(client):
    body = b'{"ids": [' + b"1," * (600 * 1024) + b"1]}"
    r = await client.post("/api/notifications/mark-read", content=body,
                          headers={"Authorization": f"Bearer {make_token('u1')}",
                                   "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"


async def test_malformed_json_is_422_problem(client):
    r = await client.post("/api/notifications/mark-read", content=b"{nope",
                          headers={"Authorization": f"Bearer {make_token('u1')}"})
    assert r.status_code == 422
    assert r.json()["title"] and r.json()["status"] == 422


async def test_unknown_route_is_404_problem(client):
    r = await client.get("/api/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_wrong_method_is_405_problem(client):
    r = await client.patch("/api/notifications")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
