"""422 for requests carrying a NUL character, in the path, the query or a JSON body.

PostgreSQL stores no NUL in text or JSONB ("unsupported Unicode escape sequence"), so such
a value would fail at its INSERT or in a lookup, as a 500, where SQLite takes it. No field
of the API has a use for it: the request is refused before any route sees it. The routes
whose models refuse NUL field by field keep doing so (their errors name the field, and a
batch refuses the item, not the batch): sends, customers and conversions; provider
callbacks drop it (channels.base). (The CSV import checks its cells itself, row by row.)
``db.refused_text`` is the backstop.
"""

from __future__ import annotations

import json
import re

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ValidationFailed

# an escaped NUL, \u0000, that is not the text "\u0000" (an escaped backslash before it)
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_NUL_IN_QUERY = re.compile(rb"%00|\x00")
_MESSAGE = "NUL characters (\\u0000) are not accepted"
# their models check field by field; callbacks drop a provider's NUL (channels.base)
_FIELD_CHECKED = ("/v1/messages", "/v1/customers/", "/v1/conversions", "/v1/callbacks/")


def json_has_nul(body: bytes) -> bool:
    encoding = json.detect_encoding(body)  # from the first bytes, as the JSON decoder does
    if encoding not in ("utf-8", "utf-8-sig"):  # UTF-16 or UTF-32: as UTF-8 to look at it
        body = body.decode(encoding, errors="replace").encode()
    return b"u0000" in body and _JSON_NUL.search(body) is not None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class RejectNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _NUL_IN_QUERY.search(scope["query_string"]):
            body = ValidationFailed(f"the URL: {_MESSAGE}").body()
            await JSONResponse(body, status_code=422)(scope, receive, send)
            return
        if not _is_json(scope) or scope["path"].startswith(_FIELD_CHECKED):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def checked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and json_has_nul(b"".join(chunks)):
                    # raised while FastAPI reads the body: it passes HTTPExceptions on
                    raise HTTPException(422, detail=f"the body: {_MESSAGE}")
            return message

        await self.app(scope, checked_receive, send)
