"""The two failure kinds a handler may raise; anything else is transient and retried with backoff.

Only the dispatcher (pool/dispatch.py) knows how these map onto BullMQ.
"""

from __future__ import annotations


class PermanentError(Exception):
    """Will never succeed on retry (bad input, a 4xx that will not change): fail the job now."""


class ThrottledError(Exception):
    """A downstream asked us to slow down (429): defer the job without burning an attempt."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)
