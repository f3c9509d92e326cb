"""Template sources and cursors the checks refuse with a 4xx: templates nesting deeper than
Jinja2's parser or Python's compiler go, and forged version cursors."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SCENARIO, Platform

# 20,000 characters are allowed in a body; a few hundred nested parentheses (or filters,
# or unary minus, or nested ifs) exceed Python's recursion limit in Jinja2's parser
DEEP_BODIES = {
    "parentheses": "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    "filters": "{{ amount" + "|upper" * 3000 + " }}",
    "ifs": "{% if 1 %}" * 500 + "x" + "{% endif %}" * 500,
    # Python's compiler refuses the generated code (SyntaxError: too many nested parentheses)
    "products": "{{ amount" + " * amount" * 250 + " }}",
}


def _client(platform: Platform) -> httpx.AsyncClient:
    """Like platform.client("marketer"), but an unhandled error comes back as the 500 a
    real server would answer rather than raising in the test."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=platform.app, raise_app_exceptions=False),
        base_url="http://icc.test",
        headers={"Authorization": f"Bearer {platform.keys['marketer']}"},
    )


def _client_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert {"error", "detail"} <= set(response.json())


@pytest.mark.parametrize("shape", sorted(DEEP_BODIES))
async def test_a_deeply_nested_template_is_a_4xx_not_a_500(platform: Platform, shape: str) -> None:
    """Preview and a scenario's inline template answer "nests too deeply" as a 4xx."""
    body = DEEP_BODIES[shape]
    variables = [{"name": "amount", "type": "decimal"}]
    async with _client(platform) as client:
        preview = await client.post(
            "/v1/templates/preview",
            json={
                "draft": {"channel": "sms", "variables": variables, "content": {"body": body}},
                "variables": {"amount": "1"},
            },
        )
        _client_error(preview)
        assert "nests too deeply" in preview.json()["detail"], preview.text[:300]

        scenario = await client.post(
            "/v1/scenarios",
            json={
                **SCENARIO,
                "key": "deep",
                "channels": ["sms"],
                "templates": {"sms": {"body": body}},
            },
        )
        _client_error(scenario)


async def test_a_deeply_nested_draft_does_not_break_the_version_list(platform: Platform) -> None:
    """A draft too deeply nested may be saved; the version list still answers (the draft's
    `problems` say why it cannot be published) and publishing it is a 4xx."""
    body = DEEP_BODIES["parentheses"]
    async with _client(platform) as client:
        created = await client.post(
            "/v1/templates", json={"key": "deep_sms", "channel": "sms", "content": {"body": body}}
        )
        if created.status_code == 201:
            listed = await client.get("/v1/templates/deep_sms/versions")
            assert listed.status_code == 200, (listed.status_code, listed.text[:300])
            problems = listed.json()["items"][0]["problems"]
            assert any("nests too deeply" in p["message"] for p in problems), problems
            publish = await client.post("/v1/templates/deep_sms/versions/1/publish")
            _client_error(publish)
        else:
            _client_error(created)


def _cursor(position: str) -> str:
    import base64

    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "position",
    [
        "²",  # str.isdigit() is true for superscripts, int() refuses them
        "99999999999999999999",  # past PostgreSQL's integer (and SQLite's 64-bit) range
    ],
)
async def test_a_forged_versions_cursor_is_a_4xx(platform: Platform, position: str) -> None:
    """A versions cursor that is not a version number in the column's range is a 4xx."""
    async with _client(platform) as client:
        created = await client.post(
            "/v1/templates", json={"key": "plain_sms", "channel": "sms", "content": {"body": "x"}}
        )
        assert created.status_code == 201, created.text
        listed = await client.get(
            "/v1/templates/plain_sms/versions", params={"cursor": _cursor(position)}
        )
        _client_error(listed)
