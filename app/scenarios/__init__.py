"""Scenarios: business event types with their channel order and templates."""
