"""The incident report without Valkey: ma-top's `W` key over the in-memory source (the file written, its path
notified), and the scrubber that keeps credentials in free text (reasons, traces, messages) out of the report.
The report on the real stack: tests/test_top_report_stack.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack import engines
from pool.monitor.findings import Thresholds
from pool.monitor.queries import FailureGroup
from pool.monitor.report import build_report
from pool.monitor.report_md import utc
from pool.monitor.scrub import Scrubber, known_secrets
from pool.monitor.snapshot import RedisHealth, Snapshot
from tests.support.fake_source import FakeSource, job_rows, process, queue_stats
from tests.support.pilot import settle
from tests.support.top import report_section
from tui.app import MaTop, main

Q = "identity-events"
SOCK = "unix:///srv/host-a/var/supervisor.sock"


class RedisDown(FakeSource):
    """The fake source with Redis not answering, as the collector reports it."""

    async def fetch(self) -> Snapshot:
        error = "ConnectionError: Connection refused"
        return Snapshot(time.time(), (), (), RedisHealth(False, error=error), {"redis": error})


def incident() -> FakeSource:
    """A queue with failed jobs of one signature (the last a minute ago), a process, an event and a journaled
    requeue."""
    now_ms = int(time.time() * 1000)
    source = FakeSource(
        queues=[queue_stats(Q, failed=3, waiting=1)],
        jobs={
            (Q, "failed"): job_rows("f", 3, name="test.refuse", reason="organization org_1 does not exist")
        },
        procs=[process(SOCK, Q, 0, 4242)],
        events=[
            (
                f"{now_ms - 60_000}-0",
                {
                    "kind": "failed",
                    "queue": Q,
                    "message": "organization org_1 does not exist",
                    "ts": str(now_ms),
                },
            )
        ],
        groups=[
            FailureGroup(
                Q,
                "organization <id> does not exist",
                "organization org_1 does not exist",
                "support/handlers.py:refuse",
                3,
                now_ms - 65_000,
                now_ms - 60_000,
                ("test.refuse",),
                ("f-2", "f-1", "f-0"),
            )
        ],
    )
    journaled = {"action": "requeue", "target": Q, "ids": ["f-0"], "outcome": "requeued 1"}
    source.journal_entries += [
        {**journaled, "ts": now_ms - 30_000},
        {**journaled, "ts": now_ms - 3 * 3600_000},
    ]
    return source


async def test_w_writes_the_incident_report_under_var_and_notifies_its_path(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the key writes var/incident-<UTC time>.md where ma-top runs
    source = incident()
    app = MaTop(source=source, refresh_s=3600, thresholds=Thresholds())
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("W")
        await settle(pilot)
        (written,) = (tmp_path / "var").glob("incident-*.md")
        assert app.message == f"incident report written: {written}"
        assert any(str(written) in str(n.message) for n in app._notifications), "the path is notified"

    text = written.read_text()
    assert written.name.startswith("incident-") and written.name.endswith("Z.md"), written.name
    assert f"{Q} " in report_section(text, "Queues")
    group = report_section(text, "Top failure groups")
    assert f"### 1. {Q}: 3 job(s), `organization <id> does not exist`" in group
    assert "- sample job ids (newest first): f-2, f-1, f-0" in group
    assert "- no stack trace stored for f-2, f-1, f-0" in group, (
        "the fake's jobs keep none: said, not left blank"
    )
    assert "| failed | identity-events | ×1 | - | - | organization org_1 does not exist |" in text
    assert f"| {Q}:{Q}_00 | host-a | RUNNING | 4242 |" in report_section(text, "Processes and restarts")
    actions = report_section(text, "Operator actions (audit journal)")
    assert actions.count("| requeue | identity-events | 1: f-0 | requeued 1 |") == 1, "the range's only"
    assert source.calls == [], "writing a report acts on nothing"


async def test_with_redis_down_ma_tops_report_keeps_the_last_known_queues_marked_with_their_time():
    last = await incident().fetch()  # what ma-top read while Redis answered

    text = await build_report(RedisDown(), last_snapshot=last)

    queues = report_section(text, "Queues")
    assert f"Redis did not answer: the queues as last read, at {utc(last.taken_at)}:" in queues
    assert "redis DOWN ConnectionError: Connection refused" in queues and f"\n{Q} " in queues, queues
    assert "Could not read: Redis (ConnectionError: Connection refused)." in queues
    health = report_section(text, "Redis health")
    assert "Redis is **unreachable**: ConnectionError: Connection refused." in health
    assert f"Last known health ({utc(last.taken_at)}):" in health
    assert "Pool heartbeats in Redis: not read (Redis down)." in report_section(
        text, "Processes and restarts"
    )


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("organization sk_live_51Habc does not exist", "sk_live_51Habc"),
        ("tenant org_sk_test_abc123 refused", "sk_test_abc123"),
        ("webhook whsec_abcdef rejected", "whsec_abcdef"),
        ("login failed token=tok-77-secret", "tok-77-secret"),
        ('{"password": "hunter 2", "user": "a"}', "hunter 2"),
        ("apiKey: k3y-value rejected", "k3y-value"),
        ("GET /x Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("connect redis://app:pa55word@cache:6379/0 failed", "pa55word"),
        ("session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln expired", "eyJzdWIiOiIxIn0"),
    ],
)
def test_credential_looking_text_is_masked(text: str, secret: str):
    scrubbed = Scrubber().scrub(text)
    assert secret not in scrubbed and "***" in scrubbed, scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "organization org_acme does not exist",
        "invalid payload for test.refuse: stripeSecret: Extra inputs are not permitted",
        "Server error '503 Service Unavailable' for url 'http://identity/v1/users'",
        "ConnectError: [Errno 111] Connection refused",
        "idempotency key: org_1",
    ],
)
def test_what_an_engineer_needs_stays_readable(text: str):
    assert Scrubber().scrub(text) == text


def test_the_environments_secret_values_are_known_and_masked_wherever_they_stand():
    env = {"SUPABASE_SERVICE_ROLE_KEY": "plain-words-no-shape", "STRIPE_WEBHOOK_SECRET": "x", "HOME": "/root"}
    assert known_secrets(env) == ["plain-words-no-shape"], "short values and non-secret names are not secrets"
    assert Scrubber(known_secrets(env)).scrub("refused plain-words-no-shape!") == "refused ***!"


@given(
    before=st.text(max_size=30),
    after=st.text(max_size=30),
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=6, max_size=40),
    body=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=8),
)
def test_a_known_secret_or_a_stripe_key_never_survives_whatever_surrounds_it(before, after, secret, body):
    key = f"sk_live_{body}"
    scrubbed = Scrubber([secret]).scrub(f"{before}{secret} {before}{key}{after}")
    assert secret not in scrubbed and key not in scrubbed


def test_report_cli_refuses_a_range_of_no_hours_and_exits_1_when_the_file_cannot_be_written(tmp_path, capsys):
    dead = f"redis://127.0.0.1:{engines.free_port()}"
    with pytest.raises(SystemExit) as refused:
        main(["--report", str(tmp_path / "r.md"), "--hours", "0", "--redis-url", dead])
    assert refused.value.code == 2 and "--hours must be more than 0" in capsys.readouterr().err
    (tmp_path / "file").write_text("")  # a file where the report's folder would be

    assert main(["--report", str(tmp_path / "file" / "r.md"), "--redis-url", dead]) == 1

    assert "ma-top: cannot write the report to " in capsys.readouterr().err
