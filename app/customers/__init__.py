"""Bank customers: contact points and attributes used for decisions."""
