"""Provider plugins are found through the ``icc.channels`` entry-point group, loaded once at
start; each configured account becomes a slot with its rate limit and circuit breaker."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from channels.accounts import ProviderAccount
from channels.base import CHANNELS, ChannelProvider, ProviderContext
from channels.circuit import CircuitBreaker
from channels.errors import ProviderConfigError
from channels.ratelimit import LocalRateLimiter, RateLimiter

ENTRY_POINT_GROUP = "icc.channels"


def load_plugins() -> dict[str, type[ChannelProvider]]:
    """Map each provider type name to its class; duplicates and non-providers fail fast."""
    plugins: dict[str, type[ChannelProvider]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, ChannelProvider)):
            raise ProviderConfigError(f"entry point {ep.name!r} is not a ChannelProvider class")
        if ep.name in plugins and plugins[ep.name] is not cls:
            raise ProviderConfigError(f"two channel plugins are named {ep.name!r}")
        plugins[ep.name] = cls
    return plugins


@dataclass
class ProviderSlot:
    """One provider account: its plugin instance, limits and health."""

    account: ProviderAccount
    provider: ChannelProvider
    circuit: CircuitBreaker = field(init=False)

    def __post_init__(self) -> None:
        self.circuit = CircuitBreaker(self.account.circuit)

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def rate(self) -> tuple[float, int] | None:
        """(messages per second, burst) or None when unlimited."""
        rate = self.account.rate_per_second or type(self.provider).default_rate
        if not rate:
            return None
        return rate, self.account.burst or max(1, int(rate))


def _instantiate(
    account: ProviderAccount, plugins: dict[str, type[ChannelProvider]], context: ProviderContext
) -> ChannelProvider:
    cls = plugins.get(account.type)
    if cls is None:
        known = ", ".join(sorted(plugins)) or "none"
        raise ProviderConfigError(
            f"provider {account.name!r}: unknown type {account.type!r} (installed: {known})"
        )
    if account.channel not in cls.channels:
        raise ProviderConfigError(
            f"provider {account.name!r}: type {account.type!r} does not serve the "
            f"{account.channel} channel (it serves {', '.join(cls.channels)})"
        )
    settings = dict(account.settings)
    if account.endpoint:
        settings["endpoint"] = account.endpoint
    return cls(account=account.name, channel=account.channel, settings=settings, context=context)


class ProviderRegistry:
    """The provider accounts of each channel and the order they are tried in."""

    def __init__(self, slots: Iterable[ProviderSlot], *, limiter: RateLimiter | None = None):
        self._by_name: dict[str, ProviderSlot] = {}
        self._by_channel: dict[str, list[ProviderSlot]] = {c: [] for c in CHANNELS}
        for slot in slots:
            self._add(slot)
        self.limiter: RateLimiter = limiter or LocalRateLimiter()

    def _add(self, slot: ProviderSlot) -> None:
        self._by_name[slot.name] = slot
        self._by_channel.setdefault(slot.account.channel, []).append(slot)

    @classmethod
    def build(
        cls,
        accounts: list[ProviderAccount],
        context: ProviderContext,
        *,
        plugins: dict[str, type[ChannelProvider]] | None = None,
        limiter: RateLimiter | None = None,
    ) -> ProviderRegistry:
        """Instantiate every account; any bad one stops the start with a clear message."""
        plugins = plugins if plugins is not None else load_plugins()
        slots = [ProviderSlot(a, _instantiate(a, plugins, context)) for a in accounts]
        return cls(slots, limiter=limiter)

    @staticmethod
    def sandbox_accounts() -> list[ProviderAccount]:
        return [ProviderAccount(name=f"sandbox-{c}", type="sandbox", channel=c) for c in CHANNELS]

    def route(self, channel: str, rng: random.Random | None = None) -> list[ProviderSlot]:
        """Slots in the order to try: by priority, equal priorities shuffled by weight."""
        slots = self._by_channel.get(channel, [])
        if len(slots) == 1:  # the common case, on every send: nothing to order
            return [slots[0]]
        pick = rng or random
        ordered: list[ProviderSlot] = []
        for priority in sorted({s.account.priority for s in slots}):
            group = [s for s in slots if s.account.priority == priority]
            while group:
                chosen = pick.choices(group, weights=[s.account.weight for s in group])[0]
                ordered.append(chosen)
                group.remove(chosen)
        return ordered

    def slot(self, name: str) -> ProviderSlot | None:
        return self._by_name.get(name)

    def slots(self) -> list[ProviderSlot]:
        return list(self._by_name.values())

    def all_local(self) -> bool:
        """Whether every provider sends without a remote service (ChannelProvider.local)."""
        return all(type(slot.provider).local for slot in self._by_name.values())

    def replace(self, channel: str, providers: list[ChannelProvider]) -> None:
        """Swap a channel's providers, tried in the order given (tests and tools)."""
        for old in self._by_channel.get(channel, []):
            self._by_name.pop(old.name, None)
        self._by_channel[channel] = []
        for index, provider in enumerate(providers):
            account = ProviderAccount(
                name=provider.account,
                type=type(provider).type_name,
                channel=channel,
                priority=index + 1,
            )
            self._add(ProviderSlot(account, provider))

    async def close(self) -> None:
        for slot in self._by_name.values():
            await slot.provider.close()
