"""Flows on real Valkey, added by a Node `FlowProducer` and run by a Node worker (real npm bullmq): what the
data layer says about a parent held in waiting-children by a failed child, and what each failure option of
BullMQ changes about it."""

from __future__ import annotations

import asyncio

import pytest
from textual.css.query import NoMatches
from textual.widgets import Static

from pool.contracts import split_job_key
from pool.monitor.actions import promote, requeue
from pool.monitor.flows import GROUP_TITLES, ON_FAILURE, WAITS, read_flow
from pool.monitor.queries import jobs_page
from pool.monitor.source import LiveSource
from tests.support.node import node_flow
from tests.support.top import rows
from tests.support.waits import wait_for
from tui.app import MaTop
from tui.screens import QueueScreen

PARENTS = "flow-test-parents"
CHILDREN = "flow-test-children"
REASON = "card declined for org_acme"


def tree(*children: dict[str, object]) -> dict[str, object]:
    return {"name": "report.build", "queueName": PARENTS, "data": {}, "children": list(children)}


def child(name: str, fail: str = "", **opts: object) -> dict[str, object]:
    return {"name": name, "queueName": CHILDREN, "data": {"fail": fail} if fail else {}, "opts": opts}


@pytest.mark.parametrize(
    ("key", "where"),
    [
        ("bull:report-parts:7", ("report-parts", "7")),
        ("bull:report-parts:repeat:nightly:1795000000000", ("report-parts", "repeat:nightly:1795000000000")),
        ("bull:report-parts", None),
        ("bull:report-parts:", None),
        ("other:report-parts:7", None),
    ],
)
def test_a_child_key_names_its_queue_and_its_id_colons_and_all(key, where):
    assert split_job_key(key) == where


async def test_a_parent_is_shown_blocked_in_waiting_children_by_its_permanently_failed_child(
    redis, valkey, node_bullmq, tmp_path
):
    # given a flow of three children: one completes, one fails for good (no option), one is delayed for an hour
    # (under the one custom id form with colons BullMQ accepts)
    later = child("part.later", delay=3_600_000, jobId="repeat:part-later:1")
    flow = node_flow(
        node_bullmq,
        valkey.url,
        tree(child("part.ok"), child("part.bad", REASON), later),
        work_queue=CHILDREN,
        finish=2,
    )
    parent_id = flow["parent"]["id"]
    ids = {c["name"]: c["id"] for c in flow["children"]}

    # when the parent's flow is read
    parent = await read_flow(redis, PARENTS, parent_id)

    # then it waits in waiting-children, held by the failed child, and says which children are where
    assert parent is not None and parent.state == "waiting-children" and parent.parent is None
    pending, processed = parent.group("pending"), parent.group("processed")
    assert (pending.total, processed.total, parent.children) == (2, 1, 3)
    assert ids["part.later"] == "repeat:part-later:1"
    assert [(j.id, j.state) for j in pending.jobs] == [
        (ids["part.bad"], "failed"),
        (ids["part.later"], "delayed"),
    ]
    assert [(j.id, j.name, j.state) for j in processed.jobs] == [(ids["part.ok"], "part.ok", "completed")]
    assert [(j.label, j.reason) for j in parent.blockers] == [(f"{CHILDREN}#{ids['part.bad']}", REASON)]
    summary = parent.summary()
    assert f"blocked by 1 failed child: {CHILDREN}#{ids['part.bad']} {REASON}" in summary
    assert "waiting for 1 more child: 1 delayed" in summary
    assert "3 children: 2 pending, 1 processed" in summary
    assert parent.alarms() == [f"blocked by 1 failed child: {CHILDREN}#{ids['part.bad']} {REASON}"]

    # and the failed child names its parent and says that it holds it
    bad = await read_flow(redis, CHILDREN, ids["part.bad"])
    assert bad is not None and bad.state == "failed" and bad.holds_parent and bad.on_failure == ""
    assert bad.parent is not None and (bad.parent.label, bad.parent.state) == (
        f"{PARENTS}#{parent_id}",
        "waiting-children",
    )
    assert bad.summary()[:2] == [f"child of {PARENTS}#{parent_id} report.build (waiting-children)", WAITS]
    assert f"this failed job holds its parent {PARENTS}#{parent_id} in waiting-children" in bad.summary()
    ok = await read_flow(redis, CHILDREN, ids["part.ok"])
    assert ok is not None and not ok.holds_parent  # done: only whose child it is
    assert ok.summary() == [f"child of {PARENTS}#{parent_id} report.build (waiting-children)"]

    # and ma-top's live source gives the same
    assert await LiveSource(redis, journal_path=tmp_path / "audit.log").flow(PARENTS, parent_id) == parent

    # and waiting-children is a state the jobs view pages through
    rows, total = await jobs_page(redis, PARENTS, "waiting-children")
    assert total == 1 and [r.id for r in rows] == [parent_id]


async def test_once_the_failed_child_is_requeued_and_runs_the_parent_is_no_longer_shown_blocked_and_moves_on(
    redis, valkey, node_bullmq
):
    # given a parent blocked by a failed child (and a child delayed for an hour)
    flow = node_flow(
        node_bullmq,
        valkey.url,
        tree(child("part.ok"), child("part.bad", REASON), child("part.later", delay=3_600_000)),
        work_queue=CHILDREN,
        finish=2,
    )
    parent_id = flow["parent"]["id"]
    ids = {c["name"]: c["id"] for c in flow["children"]}
    before = await read_flow(redis, PARENTS, parent_id)
    assert before is not None and before.alarms()

    # when the operator requeues the failed child (ma-top's `r`): nothing blocks the parent any more
    assert await requeue(redis, CHILDREN, [ids["part.bad"]]) == (1, 0)
    parent = await read_flow(redis, PARENTS, parent_id)
    assert parent is not None and parent.state == "waiting-children" and parent.alarms() == []
    assert "waiting for 2 children: 1 delayed, 1 waiting" in parent.summary()
    bad = await read_flow(redis, CHILDREN, ids["part.bad"])
    assert bad is not None and bad.state == "waiting" and bad.alarms() == [] and bad.holds_parent

    # and once the fixed child and the delayed one have run, the parent leaves waiting-children
    assert await promote(redis, CHILDREN, [ids["part.later"]]) == (1, 0)
    node_flow(node_bullmq, valkey.url, None, work_queue=CHILDREN, finish=2, fixed=True)
    parent = await read_flow(redis, PARENTS, parent_id)
    assert parent is not None and parent.state == "waiting" and parent.alarms() == []
    assert (parent.group("pending").total, parent.group("processed").total) == (0, 3)
    assert parent.summary() == ["3 children: 3 processed"]


@pytest.mark.parametrize(
    ("option", "parent_state", "group"),
    [
        ("failParentOnFailure", "waiting", "failed"),
        ("continueParentOnFailure", "waiting", "ignored"),
        ("ignoreDependencyOnFailure", "waiting", "ignored"),
        ("removeDependencyOnFailure", "waiting", None),
    ],
)
async def test_a_failure_option_releases_the_parent_and_says_where_the_failed_child_went(
    redis, valkey, node_bullmq, option, parent_state, group
):
    # given a flow whose failing child carries a failure option, both children run
    flow = node_flow(
        node_bullmq,
        valkey.url,
        tree(child("part.ok"), child("part.bad", REASON, **{option: True})),
        work_queue=CHILDREN,
        finish=2,
    )
    parent_id = flow["parent"]["id"]
    bad_id = next(c["id"] for c in flow["children"] if c["name"] == "part.bad")

    parent = await read_flow(redis, PARENTS, parent_id)

    # then the parent no longer waits for its children: nothing blocks it, and the failed child is in its group
    assert parent is not None and parent.state == parent_state
    assert parent.group("pending").total == 0 and not parent.blockers
    assert not any(line.startswith("blocked by") for line in parent.summary())
    deferred = [f"will fail when a worker takes it: child bull:{CHILDREN}:{bad_id} failed"]
    assert parent.alarms() == (deferred if option == "failParentOnFailure" else [])
    assert parent.group("processed").total == 1
    if group is None:  # removeDependencyOnFailure: the parent forgets the child
        assert parent.children == 1
    else:
        assert [(j.id, j.state, j.reason) for j in parent.group(group).jobs] == [(bad_id, "failed", REASON)]
        assert f"{GROUP_TITLES[group]}: {CHILDREN}#{bad_id} {REASON}" in parent.summary()
    if option == "failParentOnFailure":  # the parent will fail when a worker takes it
        assert parent.deferred_failure == f"child bull:{CHILDREN}:{bad_id} failed"
    bad = await read_flow(redis, CHILDREN, bad_id)
    assert bad is not None and not bad.holds_parent
    flag = {"failParentOnFailure": "fpof", "continueParentOnFailure": "cpof"}
    flag |= {"ignoreDependencyOnFailure": "idof", "removeDependencyOnFailure": "rdof"}
    assert bad.on_failure == ON_FAILURE[flag[option]]
    assert bad.on_failure in bad.summary()


async def test_a_parent_with_many_children_lists_a_few_failed_first_and_finds_the_failed_one_among_all(
    redis, valkey, node_bullmq
):
    # given 120 children, 119 delayed for an hour, one failing for good
    parts = [child(f"part.{i}", delay=3_600_000) for i in range(119)] + [child("part.bad", REASON)]
    flow = node_flow(node_bullmq, valkey.url, tree(*parts), work_queue=CHILDREN, finish=1)
    bad_id = next(c["id"] for c in flow["children"] if c["name"] == "part.bad")

    parent = await read_flow(redis, PARENTS, flow["parent"]["id"], limit=10)

    # then the counts are whole, ten are listed, the failed one first, and every state was read
    assert parent is not None and parent.state == "waiting-children"
    pending = parent.group("pending")
    assert (pending.total, len(pending.jobs), pending.read_count, pending.unlisted) == (120, 10, 120, 110)
    assert not pending.cut and pending.states == {"failed": 1, "delayed": 119}
    assert pending.jobs[0].id == bad_id and {j.state for j in pending.jobs[1:]} == {"delayed"}
    assert parent.alarms() == [f"blocked by 1 failed child: {CHILDREN}#{bad_id} {REASON}"]
    assert "waiting for 119 more children: 119 delayed" in parent.summary()


async def test_a_parent_with_more_pending_children_than_are_read_says_what_it_says_is_of_those_read(
    redis, valkey, node_bullmq
):
    flow = node_flow(
        node_bullmq,
        valkey.url,
        tree(*(child(f"part.{i}") for i in range(120))),
        work_queue=CHILDREN,
        finish=0,
    )
    parent = await read_flow(redis, PARENTS, flow["parent"]["id"], limit=50, pending_read=100)
    assert parent is not None and parent.state == "waiting-children"
    pending = parent.group("pending")
    assert (pending.total, len(pending.jobs), pending.read_count) == (120, 50, 100) and pending.cut
    assert pending.states == {"waiting": 100}
    assert "waiting for 120 children; the first 100 of 120 pending read: 100 waiting" in parent.summary()


async def test_a_job_outside_any_flow_has_no_parent_nor_children_and_a_gone_job_no_flow(
    redis, valkey, node_bullmq
):
    flow = node_flow(node_bullmq, valkey.url, tree(), work_queue=CHILDREN, finish=0)
    alone = await read_flow(redis, PARENTS, flow["parent"]["id"])
    assert alone is not None and alone.parent is None and alone.children == 0 and alone.summary() == []
    assert await read_flow(redis, PARENTS, "no-such-job") is None


async def test_ma_top_over_the_live_source_lists_the_parent_in_waiting_children_and_shows_what_blocks_it(
    redis, valkey, node_bullmq, tmp_path
):
    flow = node_flow(
        node_bullmq,
        valkey.url,
        tree(child("part.ok"), child("part.bad", REASON), child("part.later", delay=3_600_000)),
        work_queue=CHILDREN,
        finish=2,
    )
    parent_id = flow["parent"]["id"]
    bad_id = next(c["id"] for c in flow["children"] if c["name"] == "part.bad")
    app = MaTop(redis, [], refresh_s=0.5, journal_path=tmp_path / "audit.log")
    async with asyncio.timeout(60), app.run_test(size=(140, 40)) as pilot:
        await app.push_screen(QueueScreen(PARENTS, "waiting-children"))
        await wait_for(
            lambda: [r[0] for r in rows(app)] == [parent_id], what="the parent in waiting-children"
        )
        # the failed child and the delayed one are still its pending children; the completed one is not
        assert rows(app)[0][-1] == "waiting for 2 child job(s) (enter: which)"
        await pilot.press("enter")
        blocked = f"blocked by 1 failed child: {CHILDREN}#{bad_id} {REASON}"
        await wait_for(lambda: blocked in text(app, "#flow"), what="the parent's blocking child")
        await pilot.press("c", "enter")  # the failed child is listed first
        await wait_for(lambda: getattr(app.screen, "job_id", "") == bad_id, what="the child opened")
        holds = f"this failed job holds its parent {PARENTS}#{parent_id} in waiting-children"
        await wait_for(lambda: holds in text(app, "#flow"), what="the child saying it holds its parent")
        await pilot.press("u")
        await wait_for(lambda: getattr(app.screen, "job_id", "") == parent_id, what="the parent opened")


def text(app: MaTop, selector: str) -> str:
    try:
        return str(app.screen.query_one(selector, Static).render())
    except NoMatches:  # the screen is still being composed
        return ""
