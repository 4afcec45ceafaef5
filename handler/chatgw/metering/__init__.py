"""Tokens: estimates, reservations, prices, and the usage event of a request."""
