"""Template storage and the sandboxed renderer."""
