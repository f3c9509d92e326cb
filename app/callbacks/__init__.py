"""Provider callbacks: delivery receipts and inbound replies."""
