"""Idempotent creating POSTs: a replayed ``Idempotency-Key`` returns the stored response."""
