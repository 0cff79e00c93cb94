"""Python client for the counter service (API.md): retry-safe mutations with idempotency tokens."""

from counterclient.client import CounterError, Counters, new_token

__all__ = ["CounterError", "Counters", "new_token"]
