"""Every operation of the OpenAPI document, fed generated requests (schemathesis, property
based on the schema: valid and invalid bodies, parameters and headers) against a real
``icc serve`` on the demo data, on SQLite and on PostgreSQL, with an admin key: no request
gets a 500, and every status answered is one the document lists.

Deterministic (a fixed seed) and small in the suite; ``ICC_FUZZ_EXAMPLES`` runs more.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.conftest import new_postgres_database

ICC = Path(sys.executable).with_name("icc")
EXAMPLES = int(os.environ.get("ICC_FUZZ_EXAMPLES", "3"))
# revoking keys would revoke the run's own key (its operations are covered in test_auth)
SKIPPED = "/v1/keys"
CHECKS = [not_a_server_error, status_code_conformance]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh SQLite file, or a fresh PostgreSQL database (which refuses more: NUL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'icc.db'}"
        return
    with new_postgres_database("icc_fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of ``icc serve`` on the database, seeded by ``icc demo``."""
    folder = tmp_path_factory.mktemp("fuzz")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
    env |= {"ICC_DATABASE_URL": database_url, "ICC_LOG_LEVEL": "WARNING"}
    subprocess.run([str(ICC), "demo"], cwd=folder, env=env, check=True, capture_output=True)
    keys = dict(
        line.split("=", 1) for line in (folder / "var/demo-keys.env").read_text().splitlines()
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (folder / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(ICC), "serve", "--port", str(port)], cwd=folder, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(server, base)
        yield base, keys["DEMO_ADMIN_KEY"]
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


def _wait_ready(server: subprocess.Popen[bytes], base: str) -> None:
    for _ in range(300):
        assert server.poll() is None, "icc serve exited"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("icc serve did not get ready")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_only_documented_statuses(
    api: tuple[str, str], mode: GenerationMode
) -> None:
    """Valid requests (by the schema), then invalid ones, for each operation."""
    base, key = api
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(path_regex=SKIPPED)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    failures: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation schemathesis cannot read is a defect too
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(session=session, checks=CHECKS)

        try:
            run()
        except Unsatisfiable as exc:  # nothing of it can be made invalid (no input at all)
            if mode is not GenerationMode.NEGATIVE:
                failures.append(f"{operation.label}: {exc}")
        except Exception as exc:  # one line per operation: all of them are run
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
