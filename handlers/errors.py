"""The two failure kinds a handler may raise; anything else is transient and retried with backoff.

Only the dispatcher (pool/dispatch.py) knows how these map onto BullMQ.
"""

from __future__ import annotations

import errno
from pathlib import Path


class PermanentError(Exception):
    """Will never succeed on retry (bad input, a 4xx that will not change): fail the job now."""


class ThrottledError(Exception):
    """A downstream asked us to slow down (429): defer the job without burning an attempt."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)


def disk_full(error: OSError, path: Path) -> OSError:
    """A write's OSError as the failure reason an operator reads: a full disk (ENOSPC, or EDQUOT: a quota) named,
    with the file it was for. Still an OSError, so still transient: the job is retried with its backoff."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return error
    name = errno.errorcode[error.errno]
    return OSError(
        error.errno,
        f"disk full ({name}: {error.strerror}) writing {path}; nothing kept under that name, retried later",
    )
