"""Customer profiles, consent, bulk import, and the declared attribute schema.

Who may do what (admin always may):
- core banking feeds profiles, so **system** keys upsert and import as **marketers** do;
- erasure (DELETE) is irreversible: the systems of record (**system**) and admins only;
- **analysts** read, with names and contact points masked (as every list is).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from app.auth.schemas import Role
from app.auth.service import Principal
from app.customers import erasure, repository, service
from app.customers.csv_import import import_csv
from app.customers.schemas import (
    AttributeIn,
    AttributeList,
    AttributeOut,
    ConsentChange,
    ConsentOut,
    CustomerIn,
    CustomerList,
    CustomerOut,
    ErasureResult,
    ImportSummary,
)
from app.db import commit
from app.deps import MarketerPrincipal, ReadSessionDep, RuntimeDep, SessionDep, require
from app.errors import ERROR_RESPONSES, AppError, ErrorBody, error_responses
from app.pagination import Cursor, Limit, decode_cursor, paginate

Writer = Annotated[Principal, Depends(require(Role.system, Role.marketer))]
Reader = Annotated[Principal, Depends(require(Role.system, Role.marketer, Role.analyst))]
Eraser = Annotated[Principal, Depends(require(Role.system))]

router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=ERROR_RESPONSES)
attributes_router = APIRouter(
    prefix="/v1/customer-attributes", tags=["customers"], responses=ERROR_RESPONSES
)
_404 = error_responses(404)


class UnsupportedMediaType(AppError):
    status_code = 415
    name = "UnsupportedMediaType"


@router.put(
    "/{customer_id}",
    response_model=CustomerOut,
    summary="Create or replace a customer profile",
    responses={201: {"model": CustomerOut, "description": "created"}},
)
async def put_customer(
    customer_id: str,
    body: CustomerIn,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    _: Writer,
) -> CustomerOut:
    """Replaces contacts, name, locale, time zone, attributes and tags (fields left out get
    their defaults); consent is kept. Attributes must be declared
    (`/v1/customer-attributes`) and of their type: a 422 names each one refused."""
    if await service.put_customer(session, customer_id, body):
        response.status_code = 201
    return await service.get_customer(
        session, customer_id, marketing_granted=runtime.settings.customers.marketing_granted
    )


@router.get(
    "/{customer_id}", response_model=CustomerOut, summary="A customer profile", responses=_404
)
async def get_customer(
    customer_id: str, session: ReadSessionDep, runtime: RuntimeDep, principal: Reader
) -> CustomerOut:
    """The profile with its consent per channel and purpose (recorded or default).
    Analysts see the name and contact points masked."""
    return await service.get_customer(
        session,
        customer_id,
        marketing_granted=runtime.settings.customers.marketing_granted,
        masked=principal.role is Role.analyst,
    )


@router.get("", response_model=CustomerList, summary="List customers by id (masked)")
async def list_customers(
    session: ReadSessionDep, _: Reader, limit: Limit = 50, cursor: Cursor = None
) -> CustomerList:
    """Names and contact points are masked (张*, 138****0001); GET one for the profile."""
    rows = await repository.list_page(session, after_id=decode_cursor(cursor), limit=limit + 1)
    page, cursor_out = paginate(rows, limit, lambda c: c.id)
    return CustomerList(items=[service.summary(c) for c in page], next_cursor=cursor_out)


@router.delete(
    "/{customer_id}",
    response_model=ErasureResult,
    summary="Erase a customer's personal data (keeps anonymous message statistics)",
)
async def erase_customer(
    customer_id: Annotated[str, Path(max_length=64)],
    session: SessionDep,
    runtime: RuntimeDep,
    _: Eraser,
) -> ErasureResult:
    """Removes the profile (contacts, name, attributes, tags, consent), the recipient,
    variables and content of the customer's messages, and their SMS replies; unfinished
    messages are cancelled. Message status, channel, cost and times stay, under an anonymous
    customer id. Safe to repeat. Sends to the customer meanwhile get a 409."""
    await erasure.begin(session, customer_id)
    await commit(session)
    try:
        async with erasure.marker_renewed(runtime.sessionmaker, session, customer_id):
            result = await erasure.erase(session, customer_id)
            await commit(session)  # its marker deleted with it, renewed until then
        return result
    except Exception:  # the customer is served again; the erasure may be asked for again
        await session.rollback()
        await erasure.abandon(session, customer_id)
        await commit(session)
        raise


async def _consent(
    customer_id: str,
    body: ConsentChange,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: Principal,
    *,
    granted: bool,
) -> ConsentOut:
    return await service.change_consent(
        session,
        customer_id,
        body,
        granted=granted,
        source=f"api:{principal.owner}",
        marketing_granted=runtime.settings.customers.marketing_granted,
    )


@router.post(
    "/{customer_id}/opt-out",
    response_model=ConsentOut,
    summary="Revoke consent (marketing by default) on one channel or all",
    responses=_404,
)
async def opt_out(
    customer_id: str, body: ConsentChange, session: SessionDep, runtime: RuntimeDep, p: Writer
) -> ConsentOut:
    """Recorded with its source (`api:<owner>`) and time; returns the consent state."""
    return await _consent(customer_id, body, session, runtime, p, granted=False)


@router.post(
    "/{customer_id}/opt-in",
    response_model=ConsentOut,
    summary="Grant consent (marketing by default) on one channel or all",
    responses=_404,
)
async def opt_in(
    customer_id: str, body: ConsentChange, session: SessionDep, runtime: RuntimeDep, p: Writer
) -> ConsentOut:
    return await _consent(customer_id, body, session, runtime, p, granted=True)


_CSV_EXAMPLE = (
    "id,name,phone,email,tags,aum,tier\n"
    "C0001,张伟,13800000001,zhang.wei@example.com,payroll|wealth,1200000.00,private\n"
    "C0002,李娜,13900000002,,,8000,mass\n"
)
_IMPORT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "UTF-8 CSV (BOM allowed); header: id, then any of name, phone, email, "
        "wechat_openid, locale, timezone, tags (separated by |) and declared attributes",
        "content": {
            "text/csv": {"schema": {"type": "string"}, "examples": {"two": {"value": _CSV_EXAMPLE}}}
        },
    }
}


@router.post(
    "/import",
    response_model=ImportSummary,
    summary="Import customers from CSV (streamed, idempotent upsert)",
    responses={
        413: {"model": ErrorBody, "description": "body over api.max_import_bytes"},
        415: {"model": ErrorBody, "description": "not text/csv"},
    },
    openapi_extra=_IMPORT_OPENAPI,
)
async def import_customers(request: Request, runtime: RuntimeDep, _: Writer) -> ImportSummary:
    """Streams the body in chunks of rows, each upserted in its own transaction. Columns in
    the file are written (an empty cell clears the field), other fields are kept; a row equal
    to what is stored is not written, so a second import of the same file changes nothing.
    Bad rows are reported by line and skipped; a bad header is a 422 before anything is
    written."""
    _check_csv_media_type(request.headers.get("content-type", ""))
    settings = runtime.settings.customers
    return await import_csv(
        runtime.sessionmaker,
        request.stream(),
        chunk_rows=settings.import_chunk_rows,
        max_errors=settings.import_max_errors,
    )


def _check_csv_media_type(content_type: str) -> None:
    media_type, *params = (part.strip().lower() for part in content_type.split(";"))
    charsets = [p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")]
    if media_type not in ("text/csv", "application/csv") or charsets not in ([], ["utf-8"]):
        raise UnsupportedMediaType("send the file as Content-Type: text/csv; charset=utf-8")


# the declared attribute schema


@attributes_router.get("", response_model=AttributeList, summary="The declared attributes")
async def list_attributes(session: ReadSessionDep, _: Reader) -> AttributeList:
    """All of them, by name (the schema is small: one page)."""
    return AttributeList(items=await service.list_attributes(session), next_cursor=None)


@attributes_router.get(
    "/{name}", response_model=AttributeOut, summary="One declared attribute", responses=_404
)
async def get_attribute(name: str, session: ReadSessionDep, _: Reader) -> AttributeOut:
    return await service.get_attribute(session, name)


@attributes_router.put(
    "/{name}",
    response_model=AttributeOut,
    summary="Declare an attribute (name → type) or change its description",
    responses={
        201: {"model": AttributeOut, "description": "declared"},
        409: {"model": ErrorBody, "description": "type change while customers hold values"},
    },
)
async def put_attribute(
    name: str, body: AttributeIn, response: Response, session: SessionDep, _: MarketerPrincipal
) -> AttributeOut:
    """Types: string, number (decimal-safe, for money such as `aum`), integer, boolean,
    date, datetime, string_list. The type changes only while no customer holds a value."""
    spec, created = await service.put_attribute(session, name, body)
    if created:
        response.status_code = 201
    return spec


@attributes_router.delete(
    "/{name}",
    status_code=204,
    summary="Remove a declared attribute no customer holds",
    responses=error_responses(404, 409),
)
async def delete_attribute(name: str, session: SessionDep, _: MarketerPrincipal) -> Response:
    await service.delete_attribute(session, name)
    return Response(status_code=204)
