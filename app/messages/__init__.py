"""The message API and the durable send pipeline."""
