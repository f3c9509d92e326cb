"""The sends that providers keep in the platform's database (the sandbox), written in the
transaction that records their outcomes (ChannelProvider.record_sends): a send is stored
exactly when its message says it went."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import passing_db_error
from app.messages.outcomes import Outcome
from channels.base import ChannelProvider

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("icc.delivery")

Sends = dict[str, list[str]]  # provider account -> the ids it gave its sends


def written(outcomes: Sequence[Outcome], held: Collection[str]) -> list[bool]:
    """Whether each outcome was written: its message is among those the worker still
    ``held``, at this outcome's claim. Of two outcomes of one message in a group (its first
    lease ran out while that outcome waited to be written, and the worker claimed it
    again), only the newer claim's can be."""
    newest: dict[str, int] = {}
    for outcome in outcomes:
        newest[outcome.message_id] = max(outcome.claim, newest.get(outcome.message_id, 0))
    return [o.message_id in held and o.claim == newest[o.message_id] for o in outcomes]


def sends_of(outcomes: Sequence[Outcome]) -> Sends:
    """The sends the outcomes report, by provider account."""
    sends: Sends = defaultdict(list)
    for outcome in outcomes:
        values = outcome.values
        sent, account = values.get("provider_message_id"), values.get("provider")
        if sent is not None and account is not None:
            sends[account].append(sent)
    return sends


async def record(runtime: Runtime, session: AsyncSession, sends: Sends) -> None:
    """Let the providers that keep their sends write these, in ``session``, in a savepoint:
    a provider's failure (other than the database's own, which fails the whole transaction
    and is retried with it) loses records, never the outcomes. All in one savepoint; if one
    fails, each again in its own, so that only the failing one's records are lost."""
    keeping = [
        (account, provider, ids)
        for account, ids in sends.items()
        if (provider := _keeping(runtime, account)) is not None
    ]
    if len(keeping) > 1:
        try:
            async with session.begin_nested():
                for _, provider, ids in keeping:
                    await provider.record_sends(session, ids)
            return
        except Exception as exc:
            if passing_db_error(exc):
                raise
    for account, provider, ids in keeping:
        try:
            async with session.begin_nested():
                await provider.record_sends(session, ids)
        except Exception as exc:
            if passing_db_error(exc):
                raise
            log.exception("a provider failed to record its sends", extra={"provider": account})


def forget(runtime: Runtime, sends: Sends) -> None:
    """The outcomes are settled (written, overtaken, or given up): so are their sends."""
    for account, ids in sends.items():
        provider = _keeping(runtime, account)
        if provider is None:
            continue
        try:
            provider.forget_sends(ids)
        except Exception:
            log.exception("a provider failed to forget its sends", extra={"provider": account})


def _keeping(runtime: Runtime, account: str) -> ChannelProvider | None:
    """The account's provider if it keeps its sends (overrides record_sends)."""
    slot = runtime.providers.slot(account)
    if slot is None:
        return None
    provider = slot.provider
    if type(provider).record_sends is ChannelProvider.record_sends:
        return None
    return provider
