"""A fixed BullMQ flow for ma-top's key and snapshot tests (an in-memory source, no Valkey): a report parent
held in waiting-children by one child that failed for good, one child done and one delayed."""

from __future__ import annotations

from pool.monitor.flows import ChildGroup, Flow, FlowJob
from pool.monitor.queries import JobRow
from tests.support.fake_source import T0, FakeSource, queue_stats

PARENTS = "reports"
PARTS = "report-parts"
REASON = "card declined for org_acme"


def _row(job_id: str, name: str, reason: str = "") -> JobRow:
    t = int(T0 * 1000)
    return JobRow(job_id, name, t, 1, reason, t, t if reason or name == "part.ok" else 0)


def blocked_flow_source(*, pending_total: int = 2) -> FakeSource:
    """`reports#p-1` waits for `report-parts#c-2` (failed), `#c-3` (delayed); `#c-1` is processed.
    `pending_total` above 2 stands for a parent with more pending children than were read."""
    parent = FlowJob(PARENTS, "p-1", "report.build", "waiting-children")
    bad = FlowJob(PARTS, "c-2", "part.bad", "failed", REASON)
    later = FlowJob(PARTS, "c-3", "part.later", "delayed")
    ok = FlowJob(PARTS, "c-1", "part.ok", "completed")
    groups = {"pending": ChildGroup(pending_total, (bad, later)), "processed": ChildGroup(1, (ok,))}
    flows = {
        (PARENTS, "p-1"): Flow(PARENTS, "p-1", "waiting-children", groups=groups),
        (PARTS, "c-2"): Flow(PARTS, "c-2", "failed", parent, "", True),
        (PARTS, "c-3"): Flow(PARTS, "c-3", "delayed", parent, "", True),
        (PARTS, "c-1"): Flow(PARTS, "c-1", "completed", parent),
    }
    return FakeSource(
        queues=[
            queue_stats(PARENTS, waiting_children=1),
            queue_stats(PARTS, failed=1, delayed=1, completed=1),
        ],
        jobs={
            (PARENTS, "waiting-children"): [_row("p-1", "report.build")],
            (PARTS, "failed"): [_row("c-2", "part.bad", REASON)],
            (PARTS, "delayed"): [_row("c-3", "part.later")],
            (PARTS, "completed"): [_row("c-1", "part.ok")],
        },
        flows=flows,
    )
