"""`PoolWorker`: bullmq's Worker with one small, documented change (upstream-ready).

A job whose `data` (or `opts`/`progress`) is not JSON — a foreign producer's, or a hand-edited hash — makes
`Job.fromJSON` raise inside the worker's fetch loop, after the job was already moved to active under our lock.
The job is then never processed: it stalls, is moved back to wait, and after `maxStalledCount` fails with a
misleading "stalled" reason, while the worker logs an error per try.

Here such a job reaches the processor with its data replaced by a marker (`{UNDECODABLE: {"field", "preview"}}`;
the raw hash is left untouched for inspection), and the dispatcher fails it at once with a reason naming the
field. The happy path is unchanged (the marker is only built after `fromJSON` failed).
"""

from __future__ import annotations

import json
from typing import Any

from bullmq import Worker

UNDECODABLE = "__ma_undecodable__"
_DEFAULTS = {"data": "{}", "opts": "{}", "progress": "0"}


def _undecodable_fields(job_data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw job hash with every non-JSON field replaced; the data carries the marker."""
    fixed, bad = dict(job_data), []
    for field, default in _DEFAULTS.items():
        value = fixed.get(field)
        if value is None:
            continue
        try:
            json.loads(value)
        except (ValueError, TypeError):
            bad.append(field)
            fixed[field] = default
    if bad:
        raw = job_data.get("data")
        preview = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        fixed["data"] = json.dumps({UNDECODABLE: {"fields": bad, "preview": preview[:120]}})
    return fixed


class PoolWorker(Worker):
    async def nextJobFromJobData(self, job_data: dict | None = None, job_id: str | None = None, limit_until: int = 0,
                                 delay_until: int = 0, token: str | None = None) -> Any:  # fmt: skip
        try:
            return await super().nextJobFromJobData(job_data, job_id, limit_until, delay_until, token)
        except (ValueError, TypeError):
            if not job_data:
                raise
            return await super().nextJobFromJobData(_undecodable_fields(job_data), job_id, limit_until, delay_until,
                                                    token)  # fmt: skip
