"""Provider plugins are found through the ``icc.channels`` entry-point group, loaded once."""

from __future__ import annotations

from importlib.metadata import entry_points

from channels.base import CHANNELS, ChannelProvider, ProviderContext
from channels.errors import ProviderConfigError

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


class ProviderRegistry:
    """The provider accounts of each channel, in the order they are tried."""

    def __init__(self, providers: dict[str, list[ChannelProvider]]) -> None:
        self._providers = providers

    @classmethod
    def sandbox_default(cls, context: ProviderContext) -> ProviderRegistry:
        plugin = load_plugins().get("sandbox")
        if plugin is None:
            raise ProviderConfigError("the built-in sandbox plugin is not installed")
        return cls(
            {ch: [plugin(account=f"sandbox-{ch}", channel=ch, context=context)] for ch in CHANNELS}
        )

    def providers_for(self, channel: str) -> list[ChannelProvider]:
        return self._providers.get(channel, [])

    def replace(self, channel: str, providers: list[ChannelProvider]) -> None:
        self._providers[channel] = providers

    async def close(self) -> None:
        for providers in self._providers.values():
            for provider in providers:
                await provider.close()
