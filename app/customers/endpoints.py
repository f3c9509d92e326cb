"""Customer profiles, consent, bulk import, and the declared attribute schema.

Who may do what (admin always may):
- core banking feeds profiles, so **system** keys upsert as **marketers** do;
- erasure (DELETE) is irreversible: the systems of record (**system**) and admins only;
- **analysts** read, with names and contact points masked (as every list is).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.auth.schemas import Role
from app.auth.service import Principal
from app.customers import repository, service
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
)
from app.deps import MarketerPrincipal, ReadSessionDep, RuntimeDep, SessionDep, require
from app.errors import ERROR_RESPONSES, ErrorBody, error_responses
from app.pagination import Cursor, Limit, decode_cursor, paginate

Writer = Annotated[Principal, Depends(require(Role.system, Role.marketer))]
Reader = Annotated[Principal, Depends(require(Role.system, Role.marketer, Role.analyst))]
Eraser = Annotated[Principal, Depends(require(Role.system))]

router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=ERROR_RESPONSES)
attributes_router = APIRouter(
    prefix="/v1/customer-attributes", tags=["customers"], responses=ERROR_RESPONSES
)
_404 = error_responses(404)


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
async def erase_customer(customer_id: str, session: SessionDep, _: Eraser) -> ErasureResult:
    """Removes the profile (contacts, name, attributes, tags, consent), the recipient,
    variables and content of the customer's messages, and their SMS replies; unfinished
    messages are cancelled. Message status, channel, cost and times stay, under an anonymous
    customer id. Safe to repeat."""
    return await service.erase(session, customer_id)


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
