"""The OpenAPI document is complete: summaries, error schemas, examples."""

from __future__ import annotations

from typing import Any

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
