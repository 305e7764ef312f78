"""pool/fastjson.py: bullmq's Job.fromJSON decodes with msgspec and reads every job exactly as the standard library
did, errors included (the end-to-end run of a non-JSON job is tests/test_dispatch.py's foreign-producer test,
which runs `ma-worker run` with the codec installed)."""

from __future__ import annotations

import json
import math
import random
import types

import bullmq.job
import pytest
from bullmq import Job

from pool import fastjson

SAME = [
    '{"organizationId":"org_1","taskId":"t-9","n":5,"ok":true,"none":null,"f":0.1,"nested":{"a":[1,2,{"b":"c"}]}}',
    '{"a": 1, "a": 2}',  # duplicate keys: the last one wins in both
    '"\\u00e9t\\u00e9 \\ud83d\\ude00 \\u0000"',  # escapes, a surrogate pair, NUL
    "0",
    "-0.0",
    "1e400",  # overflows to inf in both
    "12345678901234567890123",  # past 64 bits: still an int (orjson would make it a float)
    "-9223372036854775809",
    '{"n": NaN, "i": Infinity, "m": -Infinity}',  # not JSON: msgspec refuses, the standard library reads it
    '"\\ud800"',  # a lone surrogate: msgspec refuses, the standard library reads it
    '["\ud800"]',  # the same, unescaped in a str: msgspec cannot encode it, the standard library reads it
    b'{"bytes": "too"}',
    "  [1, 2]  ",
]
BAD = ["orderId=o-9&quantity=1", "", "{", '{"a": 1,}', "[1, 2] x", "\ud800"]


def outcome(text: object) -> object:
    try:
        return ("ok", json.loads(text))  # type: ignore[arg-type]
    except Exception as error:  # noqa: BLE001 - the error is the outcome compared
        return ("error", type(error))


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b and str(a) == str(b)


@pytest.mark.parametrize("text", SAME)
def test_loads_reads_what_the_standard_library_reads(text):
    assert same(fastjson.loads(text), json.loads(text))


@pytest.mark.parametrize("text", BAD)
def test_loads_raises_what_the_standard_library_raises(text):
    # PoolWorker.nextJobFromJobData catches ValueError and TypeError
    with pytest.raises(ValueError) as raised:
        fastjson.loads(text)
    assert type(raised.value) is outcome(text)[1]


def test_loads_refuses_a_non_string_with_the_standard_librarys_type_error():
    with pytest.raises(TypeError):
        fastjson.loads(5)


def test_job_from_json_builds_the_same_job_with_the_codec_installed(monkeypatch):
    queue = types.SimpleNamespace(backend=None, name="q", opts={}, keys={}, qualifiedName="bull:q")
    raw = {
        "name": "task.assigned",
        "data": '{"organizationId":"org_1","taskId":"t-9","big":12345678901234567890123,"x":NaN}',
        "opts": '{"attempts":5,"backoff":{"type":"exponential","delay":1000},"kl":10}',
        "progress": '{"done":3}',
        "stacktrace": '["Error: boom"]',
        "parent": '{"id":"p1","queueKey":"bull:parents"}',
        "parentKey": "bull:parents:p1",
        "timestamp": "1700000000000",
        "atm": "2",
    }
    monkeypatch.setattr(bullmq.job, "json", json)
    stock = Job.fromJSON(queue, raw, "7")
    fastjson.install()
    assert fastjson.installed()
    assert bullmq.job.json.dumps is json.dumps, "what bullmq writes stays the standard library's"
    fast = Job.fromJSON(queue, raw, "7")
    for field in (
        "name",
        "opts",
        "progress",
        "stacktrace",
        "parent",
        "parentKey",
        "timestamp",
        "attemptsMade",
    ):
        assert same(getattr(fast, field), getattr(stock, field)), field
    assert same(fast.data, stock.data) and fast.data["big"] == 12345678901234567890123
    raw["data"] = "orderId=o-9&quantity=1"
    with pytest.raises(json.JSONDecodeError):  # as before: PoolWorker turns it into the job's failure reason
        Job.fromJSON(queue, raw, "7")


def test_loads_agrees_with_the_standard_library_on_random_documents():
    """Payloads as producers write them (Node's JSON.stringify, Python's json.dumps, hand-built strings)."""
    rng = random.Random(18)
    alphabet = 'aZ09 _-"\\/\n\t\u00e9\u4e2d\U0001f600\u0000\u001f'

    def value(depth: int) -> object:
        kind = rng.randrange(9 if depth < 4 else 6)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.randint(-(2**70), 2**70) if rng.random() < 0.2 else rng.randint(-1000, 10**9)
        if kind == 2:
            return rng.choice([0.0, -0.0, 1e-320, 5e-324, 1.7976931348623157e308, rng.uniform(-1e6, 1e6)])
        if kind in (3, 4, 5):
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        if kind in (6, 7):
            return {
                "".join(rng.choice(alphabet) for _ in range(rng.randrange(6))): value(depth + 1)
                for _ in range(4)
            }
        return [value(depth + 1) for _ in range(rng.randrange(5))]

    for _ in range(3000):
        doc = value(0)
        for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False, separators=(",", ":"))):
            assert same(fastjson.loads(text), json.loads(text)), text
