"""Channel plugins: the contract every provider implements, and the built-in providers."""
