"""Least privilege, enforced by Redis itself: the `ACL SETUSER` lines of the two users this project needs.

- The **pool** user (`ma-pool`): the keys of the queue table's queues (`bull:<queue>:*`) and ours (`ma:*`), the
  bulk-job metrics channel, and the command categories bullmq and the pool use (reads, writes, scripts,
  transactions, pub/sub), without any `@dangerous` or `@admin` command (no FLUSHALL, CONFIG, KEYS, DEBUG, ...)
  except INFO (bullmq reads the server version; the pool, the eviction policy).
- The **reader** (`ma-reader`): for the exporter and `ma-top --read-only`: read-only key access (`%R~`) to
  `bull:*` and `ma:*` (every queue, also ones no pool handles: ma-top shows them), read commands, SCAN, INFO,
  TIME and the metrics channel. A write from it is refused by Redis (NOPERM), whatever the client does.

Passwords are given as SHA-256 (`#<hex>`), so the lines can be pasted or stored without the secret in them.
`ma-worker redis-acl` prints them; docs/OPERATIONS.md ("Least privilege") explains them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pool.contracts import BULK_METRICS_CHANNEL, BULL_PREFIX

POOL_USER = "ma-pool"
READER_USER = "ma-reader"

POOL_COMMANDS = (
    "-@all",
    "+@read",
    "+@write",
    "+@keyspace",
    "+@scripting",
    "+@transaction",
    "+@connection",
    "+@pubsub",
    "+@blocking",
    "-@dangerous",
    "-@admin",
    "+info",
    "+time",
)
"""Every category bullmq's scripts and the pool's own reads and writes need; then nothing dangerous, but INFO."""
READER_COMMANDS = (
    "-@all",
    "+@read",
    "+@connection",
    "+scan",
    "+subscribe",
    "+unsubscribe",
    "+time",
    "-@dangerous",
    "-@write",
    "+info",
)
"""Reads only: no scripts (a script could write), no writes; INFO for Redis' health, SCAN to discover queues."""


def password_hash(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_lines(
    queues: Iterable[str],
    pool_password: str,
    reader_password: str,
    *,
    pool_user: str = POOL_USER,
    reader_user: str = READER_USER,
    prefix: str = BULL_PREFIX,
) -> list[str]:
    """The two `ACL SETUSER` commands, one per line (`reset` first: running them again sets the same rules)."""
    if not pool_password or not reader_password:
        raise ValueError("both passwords are required")
    if pool_password == reader_password:
        raise ValueError("the pool's and the reader's passwords must differ")
    keys = [f"~{prefix}:{q}:*" for q in sorted(set(queues))]
    pool = [
        "ACL SETUSER",
        pool_user,
        "reset",
        "on",
        password_hash(pool_password),
        *keys,
        "~ma:*",
        "resetchannels",
        f"&{BULK_METRICS_CHANNEL}",
        *POOL_COMMANDS,
    ]
    reader = [
        "ACL SETUSER",
        reader_user,
        "reset",
        "on",
        password_hash(reader_password),
        f"%R~{prefix}:*",
        "%R~ma:*",
        "resetchannels",
        f"&{BULK_METRICS_CHANNEL}",
        *READER_COMMANDS,
    ]
    return [" ".join(pool), " ".join(reader)]
