"""Tracked links at accept time, and the first open and click of a message."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.messages import repository as messages
from app.settings import TrackingSettings
from app.timeutil import utcnow
from app.tracking import links, repository

log = logging.getLogger("icc.tracking")

MAX_TOKEN_ROUNDS = 5  # a second collision in a row is already a ~1e-13 event


def needs_tracking(message: dict[str, Any]) -> bool:
    """Marketing content: a marketing scenario's message, one carrying a marketing patch,
    or one sent in an experiment (its clicks and opens are what the test measures)."""
    return bool(
        message.get("patch")
        or message.get("experiment_id")
        or message["decision"].get("scenario_class") == "marketing"
    )


class Tracker:
    """The tracked links of one group of messages being accepted.

    ``track`` rewrites a prepared message row's content before it is inserted; ``write``
    stores the links of the messages that were inserted, in the same transaction, right after
    them (the links reference the messages). Messages that need no tracking cost one check."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        # whose links are tracked: the accept path adds the hosts its templates write out
        self.hosts = links.TrackedHosts(domains=tuple(settings.allowed_domains))
        self.pending: dict[str, tuple[dict[str, Any], list[links.Link]]] = {}
        self.issued: set[str] = set()

    def track(self, message: dict[str, Any]) -> None:
        """Put tracked links into ``message["content"]`` if it is marketing content. Never
        raises: a tracking failure leaves the content as it was, the message goes out."""
        if not self.settings.enabled or not needs_tracking(message):
            return
        try:
            content, found = links.track_content(
                message["content"],
                base_url=self.settings.public_base_url,
                token=self._token,
                hosts=self.hosts,
            )
        except Exception:
            log.exception("tracking links failed; message %s goes untracked", message.get("id"))
            return
        if found:
            message["content"] = content
            self.pending[message["id"]] = (message, found)

    def _token(self) -> str:
        """A token not yet issued in this group (duplicates inside one INSERT could not be
        told apart by the tokens it returns)."""
        token = links.new_token()
        while token in self.issued:
            token = links.new_token()
        self.issued.add(token)
        return token

    async def write(self, session: AsyncSession, inserted: set[str]) -> None:
        """Store the links of the ``inserted`` messages. A token already taken by an earlier
        message gets a new one, and that message's stored content is corrected."""
        mine = {mid: entry for mid, entry in self.pending.items() if mid in inserted}
        for _ in range(MAX_TOKEN_ROUNDS):
            rows = [
                _row(mid, link, message["created_at"])
                for mid, (message, found) in mine.items()
                for link in found
            ]
            if not rows:
                return
            stored = await repository.insert_links(session, rows)
            mine = await self._retoken(session, mine, stored)
        raise RuntimeError("tracked link tokens kept colliding; the random source is broken")

    async def _retoken(
        self,
        session: AsyncSession,
        entries: dict[str, tuple[dict[str, Any], list[links.Link]]],
        stored: set[str],
    ) -> dict[str, tuple[dict[str, Any], list[links.Link]]]:
        """The entries whose links lost their token, with new tokens in links and content."""
        again: dict[str, tuple[dict[str, Any], list[links.Link]]] = {}
        base = self.settings.public_base_url
        for mid, (message, found) in entries.items():
            lost = [link for link in found if link.token not in stored]
            for link in lost:
                new = self._token()
                log.warning("tracked link token collided; message %s gets a new one", mid)
                message["content"] = links.retoken(
                    message["content"], base_url=base, old=link.token, new=new
                )
                again.setdefault(mid, (message, []))[1].append(links.Link(new, link.kind, link.url))
        await repository.set_contents(session, {mid: m["content"] for mid, (m, _) in again.items()})
        return again


def _row(message_id: str, link: links.Link, at: datetime) -> dict[str, Any]:
    return {
        "token": link.token,
        "message_id": message_id,
        "kind": link.kind,
        "url": link.url,
        "created_at": at,
    }


@dataclass(frozen=True)
class Touch:
    """What a tracked request resolved to: the URL to redirect to (links) and whether this
    request was the message's first open or click."""

    message_id: str
    url: str | None
    first: bool


_TOUCH = {links.LINK: ("clicked_at", "clicked"), links.OPEN: ("opened_at", "opened")}


async def resolve(session: AsyncSession, token: str, kind: str) -> tuple[str, str | None]:
    """(message id, url) of a token of ``kind``; NotFound for anything else."""
    found = await repository.link(session, token) if links.is_token(token) else None
    if found is None or found.kind != kind:
        what = "tracked link" if kind == links.LINK else "open pixel"
        raise NotFound(f"no {what} {token[:16]!r}")
    return found.message_id, found.url


async def touch(session: AsyncSession, token: str, kind: str) -> Touch:
    """Record a click (``kind`` LINK) or an open (OPEN) of the token's message: the first one
    sets the message's clicked_at / opened_at and adds a "clicked" / "opened" event; later ones
    only resolve the token."""
    message_id, url = await resolve(session, token, kind)
    try:
        first = await _count(session, message_id, kind, token, url)
    except SQLAlchemyError:
        # the customer still gets the page (or the pixel): an uncounted click beats an error
        log.exception("could not count a %s of message %s", kind, message_id)
        await session.rollback()
        first = False
    return Touch(message_id=message_id, url=url, first=first)


async def _count(
    session: AsyncSession, message_id: str, kind: str, token: str, url: str | None
) -> bool:
    column, event = _TOUCH[kind]
    now = utcnow()
    first = await repository.first_touch(session, message_id, column, now)
    if first:
        detail = {"url": url, "token": token} if url is not None else {"token": token}
        await messages.add_events(
            session, [{"message_id": message_id, "type": event, "at": now, "detail": detail}]
        )
    return first
