"""ICC: the omnichannel messaging middle-platform (API, pipeline, console, CLI)."""

__version__ = "0.1.0"
