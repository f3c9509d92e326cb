"""``GET /v1/experiments/{key}/report`` as JSON, CSV and an HTML page (analysts, marketers)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import HTMLResponse

from abtest.report_csv import report_csv
from abtest.report_page import report_html
from app.auth.schemas import Role
from app.auth.service import Principal
from app.deps import ReadSessionDep, require
from app.errors import ERROR_RESPONSES, error_responses
from app.experiments.report_service import report_of
from app.timeutil import utcnow

# No router-wide error responses: FastAPI would document them in the media type of the CSV
# and HTML routes, while errors are always JSON.
router = APIRouter(prefix="/v1/experiments", tags=["experiments"])
ReportReader = Annotated[Principal, Depends(require(Role.analyst, Role.marketer))]
_ERRORS = {**ERROR_RESPONSES, **error_responses(404, 409)}
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": entry["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for code, entry in _ERRORS.items()
}
# abridged: the document has every statistic (see abtest/report.py and the README)
_REPORT_EXAMPLE = {
    "version": 1,
    "experiment": "wealth-patch-2026-11",
    "settings": {"control": "holdout", "metric": "converted", "confidence": 0.95},
    "variants": [
        {
            "key": "holdout",
            "is_control": True,
            "stages": [{"stage": "assigned", "count": 1000, "rate": 1.0}],
            "costs": {"total": "0.0000", "per_conversion": None},
        }
    ],
    "comparisons": [],
    "srm": {"statistic": 0.4, "df": 1, "p_value": 0.53, "mismatch": False},
    "recommendation": {"kind": "not_enough_data", "variant": None, "reason": "..."},
    "generated_at": "2026-11-23T09:30:00+00:00",
    "lifecycle": {"status": "running", "started_at": "2026-11-02T09:30:00+00:00"},
    "setup": {"kind": "patch", "segment": "high_net_worth", "strategy": "wealth"},
    "winner": None,
    "winner_decision": None,
}


@router.get(
    "/{key}/report",
    summary="An experiment's report: every count, rate, interval and test, with its settings",
    responses={**_ERRORS, 200: {"content": {"application/json": {"example": _REPORT_EXAMPLE}}}},
)
async def get_report(key: str, session: ReadSessionDep, _: ReportReader) -> dict[str, Any]:
    return await report_of(session, key, now=utcnow())


@router.get(
    "/{key}/report.csv",
    summary="An experiment's report as CSV: one row per variant and funnel stage",
    response_class=Response,
    responses={**_JSON_ERRORS, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def get_report_csv(key: str, session: ReadSessionDep, _: ReportReader) -> Response:
    report = await report_of(session, key, now=utcnow())
    # a header is latin-1: anything but a plain file-name character becomes "_"
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", f"experiment-{key}-report.csv")
    return Response(
        report_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/{key}/report.html",
    summary="An experiment's report as a page readable without tools",
    response_class=HTMLResponse,
    responses=_JSON_ERRORS,
)
async def get_report_html(key: str, session: ReadSessionDep, _: ReportReader) -> HTMLResponse:
    return HTMLResponse(report_html(await report_of(session, key, now=utcnow())))
