"""What the sandbox providers would have sent, kept for inspection."""
