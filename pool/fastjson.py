"""msgspec for the JSON that bullmq decodes per job.

`Job.fromJSON` runs `json.loads` four or five times for every job a worker takes (data, opts, progress,
stacktrace, parent): 11.9 us a job with the standard library, 5.7 us with msgspec, of a no-op job's ~80 us
of worker CPU (bench/REPORT.md, issue #18). `install()` gives bullmq's job module a `json` whose `loads` is
msgspec's; everything else (`dumps` above all: its output is what Node BullMQ reads back) stays the standard
library's.

Same results, same errors: msgspec reads strict JSON exactly as `json.loads` does (integers of any size included;
orjson was not chosen because it turns integers past 64 bits into floats), and what it refuses is handed to
`json.loads`, which either reads it as before (NaN, 1e400, lone surrogates) or raises the error it always raised
(pool/worker.py then fails the job with a reason naming the field). Upstream, this would be bullmq decoding with
msgspec when it is installed. `MA_STOCK_CLIENTS=1` leaves bullmq's module as it is (pool/runtime.py).
"""

from __future__ import annotations

import json
import types
from typing import Any

import bullmq.job
import msgspec

_decode = msgspec.json.decode


def loads(text: Any) -> Any:
    try:
        return _decode(text)
    except (msgspec.DecodeError, UnicodeEncodeError):  # a str with a lone surrogate is not UTF-8 to msgspec
        # (a non-string raises TypeError in both)
        return json.loads(text)


CODEC = types.SimpleNamespace(**{name: getattr(json, name) for name in json.__all__})
CODEC.loads = loads


def install() -> None:
    """bullmq's job module decodes with `loads` from now on (idempotent)."""
    bullmq.job.json = CODEC


def installed() -> bool:
    return bullmq.job.json is CODEC
