"""``/openapi.json``: an OpenAPI 3.1 document of every REST route (the table in docs/api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from api.openapi import ROUTES
from tests.conftest import running_app

DOCUMENTED = [
    ("get", "/api/notifications"),
    ("post", "/api/notifications"),
    ("post", "/api/notifications/mark-read"),
    ("post", "/api/notifications/mark-all-read"),
    ("delete", "/api/notifications/{id}"),
    ("get", "/api/notifications/unread-count"),
    ("get", "/api/notifications/preferences"),
    ("put", "/api/notifications/preferences"),
    ("post", "/api/messages/send"),
    ("get", "/api/messages/conversations"),
    ("get", "/api/messages/conversation/{user_id}"),
    ("post", "/api/messages/mark-read"),
    ("delete", "/api/messages/{id}"),
    ("get", "/api/announcements"),
    ("post", "/api/announcements"),
    ("delete", "/api/announcements/{id}"),
    ("get", "/api/templates"),
    ("put", "/api/templates/{key}"),
    ("get", "/api/stream"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
]


@pytest.fixture
async def doc(client) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    return r.json()


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` anywhere in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def test_document_is_openapi_3_1_without_credentials(doc):
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "notifyhub" and doc["info"]["version"]
    assert isinstance(doc["paths"], dict)


@pytest.mark.parametrize(("method", "path"), DOCUMENTED)
async def test_every_listed_route_is_in_the_document(doc, method, path):
    op = doc["paths"][path][method]
    assert op["summary"] and op["operationId"] and op["responses"]
    for status in op["responses"]:
        assert status.isdigit() and 200 <= int(status) < 600


async def test_every_route_of_the_app_is_documented(app, doc):
    for route in app.routes:
        if not isinstance(route, Route):
            continue  # the WebSocket and static files are not REST
        if not route.path.startswith("/api/"):
            continue  # the pages; ops routes are checked against the list above
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"].get(route.path, {}), (method, route.path)


def test_the_route_table_of_docs_api_md_lists_every_operation() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for op in ROUTES:
        assert f"| `{op.method}` | `{op.path}` |" in text, (op.method, op.path)


async def test_every_ref_resolves(doc):
    found = list(refs(doc))
    assert found
    for ref in found:
        target = resolve(doc, ref)
        assert isinstance(target, dict) and target, ref


async def test_operation_ids_are_unique(doc):
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_security_schemes_are_bearer_jwt_and_api_key_header(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http",
                                     "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header",
                                 "name": "X-API-Key"}


async def test_operations_name_who_may_call_them(doc):
    paths = doc["paths"]
    assert paths["/health"]["get"]["security"] == []
    assert paths["/api/notifications/unread-count"]["get"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/announcements"]["post"]["security"] == [{"bearerAuth": []},
                                                               {"apiKey": []}]
    for item in paths.values():
        for op in item.values():
            for requirement in op["security"]:
                assert set(requirement) <= set(doc["components"]["securitySchemes"])


async def test_request_and_response_models_come_from_the_hub_models(doc):
    create = doc["paths"]["/api/announcements"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert resolve(doc, body["$ref"])["required"] == ["title"]
    created = create["responses"]["201"]["content"]["application/json"]["schema"]
    announcement = resolve(doc, created["$ref"])
    assert set(announcement["properties"]) == {
        "id", "title", "body", "level", "starts_at", "ends_at", "created_at"
    }
    assert create["responses"]["422"]["content"]["application/problem+json"]
    assert "401" in create["responses"] and "403" in create["responses"]


async def test_route_table_paths_and_methods_are_unique():
    keys = [(op.method, op.path) for op in ROUTES]
    assert len(keys) == len(set(keys))


async def test_demo_token_is_listed_only_in_demo_mode(doc, database_url, tmp_path):
    assert "/demo/token" not in doc["paths"]
    async with running_app(database_url=database_url, data_dir=tmp_path / "d") as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            demo = (await c.get("/openapi.json")).json()
    assert demo["paths"]["/demo/token"]["get"]["security"] == []
    assert set(demo["paths"]) - set(doc["paths"]) == {"/demo/token"}


async def test_the_stream_documents_its_token_query_form_and_its_refusals(doc):
    stream = doc["paths"]["/api/stream"]["get"]
    # Either credential opens it: the bearer header, or ?token= (EventSource sets no headers).
    assert stream["security"] == [{"bearerAuth": []}, {"queryToken": []}]
    scheme = doc["components"]["securitySchemes"]["queryToken"]
    assert scheme == {**scheme, "type": "apiKey", "in": "query", "name": "token"}
    params = {(p["in"], p["name"]): p for p in stream["parameters"]}
    assert {("query", "token"), ("query", "since"), ("header", "Last-Event-ID")} <= set(params)
    assert params[("query", "since")]["schema"] == {"type": "integer", "minimum": 0}
    # docs/live.md: 401/403/422/429 problem+json before the stream starts.
    for status in ("401", "403", "422", "429", "503"):
        assert "application/problem+json" in stream["responses"][status]["content"], status
    assert "text/event-stream" in stream["responses"]["200"]["content"]
