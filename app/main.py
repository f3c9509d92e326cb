"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.auth.endpoints import router as keys_router
from app.callbacks.endpoints import router as callbacks_router
from app.campaigns.endpoints import router as campaigns_router
from app.customers.endpoints import attributes_router as customer_attributes_router
from app.customers.endpoints import router as customers_router
from app.errors import PayloadTooLarge, install_error_handlers
from app.experiments.endpoints import router as experiments_router
from app.experiments.report_endpoints import router as experiment_reports_router
from app.gctune import freeze_startup_heap
from app.health import router as health_router
from app.messages.endpoints import router as messages_router
from app.messages.fast_send import PATH as FAST_PATH
from app.messages.fast_send import FastSend
from app.nul_guard import RejectNul
from app.runtime import Runtime
from app.sandbox.endpoints import router as sandbox_router
from app.scenarios.endpoints import router as scenarios_router
from app.settings import Settings
from app.strategies.endpoints import segments as segments_router
from app.strategies.endpoints import strategies as strategies_router
from app.tracking.endpoints import conversions as conversions_router
from app.tracking.endpoints import public as tracking_router
from templates.endpoints import router as templates_router


class BodySizeLimit:
    """413 for bodies over the limit, whether or not Content-Length is declared."""

    def __init__(self, app: ASGIApp, *, default: int, batch: int, csv_import: int) -> None:
        self.app, self.default, self.batch, self.csv_import = app, default, batch, csv_import

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.batch if path.endswith("/batch") else self.default
        if path.endswith("/customers/import"):
            limit = self.csv_import
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI turns other errors raised while reading the body into a 400
                raise HTTPException(413, detail=f"the body is over {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        exc = PayloadTooLarge(f"the body is over {limit} bytes; send less (batches: split them)")
        await JSONResponse(exc.body(), status_code=413)(scope, receive, send)


class IccApp(FastAPI):
    """The API, with its hot route served beneath FastAPI's layers (app/messages/fast_send.py)."""

    fast_send: FastSend | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast_send is not None
            and scope["type"] == "http"
            and scope["path"] == FAST_PATH
            and scope["method"] == "POST"
        ):
            await self.fast_send(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, tune_gc: bool = False
) -> IccApp:
    """The app. With ``runtime`` given (tests), the caller starts and closes it;
    ``tune_gc`` (the `icc serve` process) freezes the start-up heap once it is running."""
    owned = runtime is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            app.state.runtime = Runtime(settings, run_workers=not settings.redis_url)
            await app.state.runtime.start()
        if tune_gc:
            freeze_startup_heap()
        try:
            yield
        finally:
            if owned:
                await app.state.runtime.close()

    app = IccApp(
        title="ICC omnichannel messaging platform",
        version=__version__,
        description="One message API for SMS, email and WeChat, with segment strategies "
        "and A/B tests.",
        lifespan=lifespan,
        # no OpenTelemetry here: skip FastAPI's per-request check for configured providers
        telemetry={"tracing": False, "metrics": False},
    )
    if runtime is not None:
        app.state.runtime = runtime
    install_error_handlers(app)
    routers = (
        health_router,
        messages_router,
        scenarios_router,
        templates_router,
        keys_router,
        sandbox_router,
        callbacks_router,
        segments_router,
        strategies_router,
        experiments_router,
        customers_router,
        customer_attributes_router,
        tracking_router,
        conversions_router,
        experiment_reports_router,
        campaigns_router,
    )
    for router in routers:
        app.include_router(router)
    _document_body_limits(app)
    app.add_middleware(RejectNul)
    app.add_middleware(
        BodySizeLimit,
        default=settings.api.max_body_bytes,
        batch=settings.api.max_batch_body_bytes,
        csv_import=settings.api.max_import_bytes,
    )
    app.fast_send = FastSend(app, super(IccApp, app).__call__, max_body=settings.api.max_body_bytes)
    return app


def _document_body_limits(app: FastAPI) -> None:
    """Every operation that takes a body can answer 413 (BodySizeLimit): say so in its
    OpenAPI entry, with the error schema, as the routes say their other errors."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            too_large = {
                "description": "PayloadTooLarge",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                },
            }
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if "requestBody" in operation:
                        operation["responses"].setdefault("413", too_large)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
