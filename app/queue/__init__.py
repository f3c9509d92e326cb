"""Queue backends: in-process (embedded default) or arq on Redis (scale-out). The queue only
carries message ids; the database stays the source of truth."""
