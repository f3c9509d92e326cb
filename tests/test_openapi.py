"""The OpenAPI document is complete: summaries, error schemas, examples."""

from __future__ import annotations

from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings

OPEN = {"/healthz", "/readyz", "/v1/callbacks/{provider_name}", "/t/{token}", "/o/{token}"}


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = create_app(Settings()).openapi()
    return spec


def test_every_operation_is_described_with_its_errors() -> None:
    for path, operations in _spec()["paths"].items():
        for method, op in operations.items():
            assert op.get("summary"), (method, path)
            if path in OPEN:
                continue
            assert {"401", "403", "422"} <= set(op["responses"]), (method, path)
            for code in ("401", "403", "404", "409", "413", "422"):
                if code in op["responses"]:
                    schema = op["responses"][code]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (
                        method,
                        path,
                        code,
                    )
            assert op.get("security"), (method, path)


def test_request_bodies_have_examples() -> None:
    schemas = _spec()["components"]["schemas"]
    names = (
        *("MessageCreate", "BatchCreate", "ScenarioCreate", "ErrorBody", "BatchResult"),
        *("TemplateCreate", "VersionCreate", "VersionUpdate", "PreviewRequest", "PreviewOut"),
        *("CustomerIn", "CustomerOut", "AttributeIn", "ConsentChange", "ImportSummary"),
        *("ErasureResult", "SegmentIn", "StrategyIn", "ExplainIn", "DryRunIn"),
    )
    for name in names:
        assert schemas[name].get("examples"), name


def test_csv_import_documents_its_body() -> None:
    op = _spec()["paths"]["/v1/customers/import"]["post"]
    content = op["requestBody"]["content"]["text/csv"]
    assert content["examples"]
    assert {"413", "415"} <= set(op["responses"])


async def test_a_405_names_every_method_of_its_path() -> None:
    """Starlette's Allow names the methods of the path's first route only."""
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://icc.test") as client:
        campaigns = await client.delete("/v1/campaigns")
        one = await client.delete("/v1/campaigns/autumn")
        docs = await client.post("/docs")  # not in the document: Starlette's answer
    assert campaigns.status_code == one.status_code == docs.status_code == 405
    assert campaigns.headers["allow"] == "GET, HEAD, POST"
    assert one.headers["allow"] == "GET, HEAD, PATCH"
    assert set(docs.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert campaigns.json()["error"] == "MethodNotAllowed"


async def test_a_body_that_is_not_utf8_is_a_422() -> None:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://icc.test") as client:
        response = await client.post(
            "/v1/segments", content=b'{"key": "\xe9"}', headers={"content-type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == "body"
