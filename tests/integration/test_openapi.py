"""GET /openapi.json: a valid OpenAPI 3.1 document whose paths are exactly the gateway's routes,
with request schemas taken from the models that validate requests."""
import tomllib

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from router import settings as settings_module
from router.requests import SendRequest
from tests.engine import SANDBOX_CARRIERS
from workers.gateway import openapi
from workers.gateway.app import build_app

ERROR_STATUSES = {"400", "401", "403", "413", "415", "429", "503"}


def served(app) -> set[tuple[str, str]]:
    """(method, path) the gateway routes, walked straight from aiohttp's router."""
    return {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def documented(doc: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return {(method, path) for path, item in doc["paths"].items() for method in item if method in methods}


@pytest.fixture
def app():
    settings = settings_module.from_dict(tomllib.loads(SANDBOX_CARRIERS))
    return build_app(settings)


async def test_live_document_is_valid_and_matches_the_routes(make_engine, sqlite_url, app):
    engine = make_engine(sqlite_url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{engine.base_url}/openapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            doc = await resp.json()
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"].startswith("3.1")
    assert documented(doc) == served(app)
    assert {path for _, path in served(app)} == set(doc["paths"])


def test_document_covers_every_route_of_the_app(app):
    doc = openapi.document(app)
    validate(doc)
    assert documented(doc) == served(app)


def test_a_route_added_later_is_documented_too(app):
    async def handler(request):  # pragma: no cover - never called
        raise NotImplementedError

    app.router.add_get("/admin/carriers/{name}/health", handler)
    doc = openapi.document(app)
    validate(doc)
    operation = doc["paths"]["/admin/carriers/{name}/health"]["get"]
    assert operation["security"] == [{"adminToken": []}]
    assert [p["name"] for p in operation["parameters"]] == ["name"]


def test_send_schema_is_the_validating_model(app):
    doc = openapi.document(app)
    schemas = doc["components"]["schemas"]
    assert schemas["SendRequest"] == {k: v for k, v in SendRequest.model_json_schema(
        ref_template="#/components/schemas/{model}").items() if k != "$defs"}
    post = doc["paths"]["/v1/messages"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SendRequest"}
    # a bad batch item (a non-object too) is answered inside the 202: items are unconstrained and
    # point at SendRequest in their description
    batch = schemas["BatchRequest"]["properties"]["messages"]
    assert set(batch["items"]) == {"description"} and "SendRequest" in batch["items"]["description"]
    assert batch["maxItems"] == 1000
    assert {"202", *ERROR_STATUSES} <= set(post["responses"])
    assert post["security"] == [{"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "the account's API key"}
    error = schemas["Error"]
    assert error["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "field"}
    for status in ERROR_STATUSES:
        assert post["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert "Retry-After" in post["responses"]["503"]["headers"]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert doc["paths"][path]["get"]["security"] == []


async def test_the_document_is_rendered_once_at_startup(app):
    app.on_startup.clear()  # no broker or store here: keep only the document's own start-up step
    app.on_startup.append(openapi._render)
    async with TestClient(TestServer(app)) as client:
        rendered = app[openapi.CACHE].body
        assert rendered, "not rendered at start-up"
        resp = await client.get("/openapi.json")
        assert resp.status == 200 and await resp.read() == rendered
