"""The ``icc`` command: serve, worker, migrate, keys, demo, send."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from app.logging import configure_logging
from app.settings import Settings, get_settings

DEMO_KEYS_FILE = Path("var/demo-keys.env")


def _settings() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as exc:  # a bad ICC_* value: say which, without a traceback
        raise click.ClickException(_configuration_errors(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _configuration_errors(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        name = "ICC_" + "__".join(str(part) for part in error["loc"]).upper()
        lines.append(f"  {name}: {error['msg']}")
    return "\n".join(lines)


@click.group()
def main() -> None:
    """ICC omnichannel messaging platform."""


@main.command()
def migrate() -> None:
    """Apply database migrations."""
    from app.migrate import upgrade

    upgrade(_settings().database_url)
    click.echo("database is at the newest revision")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Migrate, then serve the API (and, without Redis, the in-process workers)."""
    import uvicorn

    from app.main import create_app
    from app.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    uvicorn.run(
        create_app(settings, tune_gc=True), host=host, port=port, log_config=None, access_log=False
    )


@main.command()
@click.option("--burst", is_flag=True, help="stop when the queue is empty")
def worker(burst: bool) -> None:
    """Consume the arq queue on Redis (needs ICC_REDIS_URL) and run the sweeper."""
    settings = _settings()
    if not settings.redis_url:
        raise click.UsageError("icc worker needs ICC_REDIS_URL; without Redis, icc serve sends")
    _run_fast(_run_worker(settings, burst=burst))


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (uvicorn[standard] brings it), as `icc serve` does."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def _run_worker(settings: Settings, *, burst: bool) -> None:
    from app.gctune import freeze_startup_heap
    from app.queue.arq_backend import build_worker, run_worker
    from app.runtime import Runtime

    async def handler_factory() -> Any:
        runtime = Runtime(settings, run_workers=True)
        await runtime.start()
        freeze_startup_heap()
        return runtime.process, runtime.close

    assert settings.redis_url is not None
    worker = build_worker(
        redis_url=settings.redis_url,
        queue_name=settings.queue.name,
        handler_factory=handler_factory,
        max_jobs=settings.queue.workers,
        burst=burst,
    )
    await run_worker(worker)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9100, show_default=True, type=int, help="HTTP port (0: any)")
@click.option("--smtp-port", default=2525, show_default=True, type=int, help="SMTP port (0: any)")
@click.option("--latency", default=0.0, show_default=True, help="seconds added to each request")
@click.option("--error-rate", default=0.0, show_default=True, help="share of transient errors")
@click.option(
    "--callback-base",
    default=None,
    help="where to push delivery reports, e.g. http://127.0.0.1:8000/v1/callbacks",
)
@click.option("--callback-token", default="simulator-callback-token", show_default=True)
@click.option(
    "--write-providers",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write a providers file (ICC_PROVIDERS_FILE) pointing at this simulator",
)
def simulator(
    host: str,
    port: int,
    smtp_port: int,
    latency: float,
    error_rate: float,
    callback_base: str | None,
    callback_token: str,
    write_providers: Path | None,
) -> None:
    """Serve simulated Aliyun, Tencent, WeChat, SMS-gateway and SMTP providers."""
    from channels.simulator.server import SimulatorOptions, serve

    _settings()
    options = SimulatorOptions(
        host=host,
        port=port,
        smtp_port=smtp_port,
        latency=latency,
        error_rate=error_rate,
        callback_base=callback_base,
        callback_token=callback_token,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options, providers_file=write_providers))


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option(
    "--role", required=True, type=click.Choice(["system", "marketer", "analyst", "admin"])
)
@click.option("--name", required=True)
@click.option("--owner", default=None, help="business system the key belongs to (default: name)")
def keys_create(role: str, name: str, owner: str | None) -> None:
    """Create a key and print it once."""
    from app.auth.schemas import Role
    from app.auth.service import create_key
    from app.errors import AppError
    from app.migrate import upgrade

    async def run(session: Any) -> str:
        _, plaintext = await create_key(session, name=name, role=Role(role), owner=owner)
        return plaintext

    settings = _settings()
    upgrade(settings.database_url)
    try:
        click.echo(asyncio.run(_with_session(settings, run)))
    except AppError as exc:
        raise click.ClickException(exc.detail) from None


async def _with_session(settings: Settings, fn: Any) -> Any:
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            result = await fn(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


@main.group()
def customers() -> None:
    """Customer profiles."""


@customers.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--max-errors", default=1000, show_default=True, help="row errors to print")
@click.option("--chunk-rows", default=None, type=click.IntRange(1, 50_000), help="rows per upsert")
def customers_import(path: Path, max_errors: int, chunk_rows: int | None) -> None:
    """Import (upsert) customers from a UTF-8 CSV file: streamed, idempotent. Exit status 1
    when a row failed (the others are imported) or the file is not usable."""
    from app.customers.cli_import import import_file, report_lines
    from app.errors import AppError
    from app.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    with click.progressbar(length=path.stat().st_size, label="importing", file=sys.stderr) as bar:
        try:
            summary = asyncio.run(
                import_file(
                    settings,
                    path,
                    max_errors=max_errors,
                    chunk_rows=chunk_rows,
                    progress=bar.update,
                )
            )
        except AppError as exc:
            raise click.ClickException(exc.detail) from None
    for line in report_lines(summary):
        click.echo(line)
    sys.exit(1 if summary.failed else 0)


@main.command()
def demo() -> None:
    """Seed the demo scenario, customers and keys (safe to run twice)."""
    from app.demo import seed
    from app.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    created = asyncio.run(_with_session(settings, lambda s: seed(s, DEMO_KEYS_FILE)))
    for name, key in created.items():
        click.echo(f"created API key {name}: {key}")
    click.echo(f"demo data ready; API keys are in {DEMO_KEYS_FILE}")


@main.command()
@click.option("--scenario", default="account_movement", show_default=True)
@click.option("--customer", "customer_id", default="C0001", show_default=True)
@click.option("--var", "variables", multiple=True, help="name=value, repeatable")
@click.option("--phone", default=None)
@click.option("--email", default=None)
@click.option("--openid", default=None)
@click.option("--channel", "channels", multiple=True, help="restrict channels, repeatable")
def send(
    scenario: str,
    customer_id: str,
    variables: tuple[str, ...],
    phone: str | None,
    email: str | None,
    openid: str | None,
    channels: tuple[str, ...],
) -> None:
    """Send one test message and print it with its timeline."""
    from app.cli_send import send_one

    body: dict[str, Any] = {"scenario": scenario, "customer_id": customer_id, "variables": {}}
    for pair in variables:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not name=value", param_hint="--var")
        body["variables"][name] = value
    recipient = {
        k: v for k, v in (("phone", phone), ("email", email), ("wechat_openid", openid)) if v
    }
    if recipient:
        body["recipient"] = recipient
    if channels:
        body["channels"] = list(channels)
    result = asyncio.run(send_one(_settings(), body))
    click.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    sys.exit(0 if result.get("status") in ("sent", "delivered") else 1)
