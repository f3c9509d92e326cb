"""The events WeChat pushes to an Official Account's developer URL: how they are signed and
how their XML is read safely. Only the plaintext message mode is supported; the encrypted
(AES, ``encrypt_type=aes``) mode is out of scope.

Signature: ``sha1("".join(sorted([token, timestamp, nonce])))``, hex, in the ``signature``
query parameter, where token is the one configured in the WeChat console. It does not cover
the body: a signed query seen once (a proxy's log, a Referer) would carry any XML forever, so
its timestamp must be within ``MAX_PUSH_SKEW`` of now (WeChat retries a push within seconds),
and within that window a signed query is taken with one body only (``channels.wechat_pushes``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from xml.etree import ElementTree

from channels.base import CallbackResult, DeliveryReceipt, InboundReply
from channels.errors import CallbackAuthError, CallbackRejected

MAX_CALLBACK_BYTES = 64 * 1024
MAX_PUSH_SKEW = 300.0  # seconds either side of now
TEMPLATE_SEND_JOB_FINISH = "TEMPLATESENDJOBFINISH"
_SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")
_UNIX_TIME = re.compile(r"[0-9]{1,12}")


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    """How WeChat signs the pushes to a developer URL (wechatpy.utils.check_signature)."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


def verify_signature(token: str, query: Mapping[str, str], *, now: float | None = None) -> None:
    """Raise CallbackAuthError unless the query carries WeChat's signature for ``token``,
    made within ``MAX_PUSH_SKEW`` of ``now`` (a Unix time; default: the clock's)."""
    signature = query.get("signature", "")
    timestamp = query.get("timestamp", "")
    nonce = query.get("nonce", "")
    if not (signature and timestamp and nonce):
        raise CallbackAuthError("signature, timestamp and nonce are required")
    _check_fresh(timestamp, time.time() if now is None else now)
    # compare_digest refuses non-ASCII str (a TypeError): anything but hex is no signature
    if not _SHA1_HEX.fullmatch(signature):
        raise CallbackAuthError("the signature is not a SHA-1 in hex")
    expected = wechat_signature(token, timestamp, nonce)
    if not hmac.compare_digest(expected, signature.lower()):
        raise CallbackAuthError("WeChat signature mismatch")


def _check_fresh(timestamp: str, now: float) -> None:
    # the signature covers no body: only its age stops a captured one being used again
    if not _UNIX_TIME.fullmatch(timestamp) or abs(int(timestamp) - now) > MAX_PUSH_SKEW:
        raise CallbackAuthError(
            f"timestamp not within {MAX_PUSH_SKEW:.0f}s of now: a replayed push, or a clock"
            " that is wrong"
        )


def read_push(body: bytes) -> CallbackResult:
    """A pushed XML message: template send results become receipts, text messages replies;
    anything else (subscriptions, menu clicks...) is acknowledged and ignored."""
    return _callback_result(parse_xml(body))


def parse_xml(body: bytes) -> dict[str, str]:
    """The child elements of WeChat's flat ``<xml>`` document, by tag; CallbackRejected if
    the body is too big, declares a DTD or entities, or is not well-formed."""
    if len(body) > MAX_CALLBACK_BYTES:
        raise CallbackRejected(f"callback body over {MAX_CALLBACK_BYTES} bytes")
    # ElementTree has no switch for DTDs: refuse them (entity expansion, external entities),
    # and NUL bytes, which would let a UTF-16 body hide a DOCTYPE from this check.
    upper = body.upper()
    if b"\x00" in body or b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise CallbackRejected("DTDs and entity declarations are not accepted")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise CallbackRejected(f"malformed XML: {exc}") from exc
    if root.tag != "xml":
        raise CallbackRejected("WeChat pushes an <xml> document")
    return {child.tag: (child.text or "").strip() for child in root}


def _created_at(fields: Mapping[str, str]) -> datetime | None:
    created = fields.get("CreateTime", "")
    if not created:
        return None
    # ASCII digits only (isdigit() takes "²", which int() refuses), and a year the calendar has
    if _UNIX_TIME.fullmatch(created):
        try:
            return datetime.fromtimestamp(int(created), UTC)
        except (ValueError, OverflowError, OSError):
            pass
    raise CallbackRejected(f"CreateTime {created[:40]!r} is not a Unix time")


def _callback_result(fields: Mapping[str, str]) -> CallbackResult:
    msg_type = fields.get("MsgType", "").lower()
    if not msg_type:
        raise CallbackRejected("no MsgType: only the plaintext mode is supported, not AES")
    result = CallbackResult(response_body=b"success", media_type="text/plain")
    if msg_type == "event" and fields.get("Event", "").upper() == TEMPLATE_SEND_JOB_FINISH:
        result.receipts.append(_receipt(fields))
    elif msg_type == "text" and fields.get("FromUserName"):
        reply = InboundReply(
            sender=fields["FromUserName"],
            text=fields.get("Content", ""),
            received_at=_created_at(fields),
        )
        result.replies.append(reply)
    return result


def _receipt(fields: Mapping[str, str]) -> DeliveryReceipt:
    msg_id = fields.get("MsgID") or fields.get("MsgId")
    status = fields.get("Status")
    if not msg_id or not status:
        raise CallbackRejected("TEMPLATESENDJOBFINISH needs MsgID and Status")
    delivered = status == "success"
    detail = None
    if not delivered:
        blocked = "block" in status
        detail = "the user refused this account's messages" if blocked else "WeChat failed"
    return DeliveryReceipt(
        delivered=delivered,
        provider_message_id=msg_id,
        code=status,
        detail=detail,
        occurred_at=_created_at(fields),
    )
