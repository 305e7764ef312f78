"""What ma-top keeps between ticks (tui/state.py), without Textual: live bulk messages against the stored
records, restart counting, the events kept, and whose error is whose."""

from __future__ import annotations

from pool.monitor.snapshot import BulkJob, RedisHealth, Snapshot
from tests.support.fake_source import T0, process
from tui.state import EVENTS_KEPT, TopState

SOCK = "unix:///srv/host-a/var/supervisor.sock"


def bulk(bulk_id: str, processed: int, updated_at: float) -> BulkJob:
    return BulkJob(
        bulk_id, "9", "bulk.activate", "running", 10, processed, processed, 0, 1.0, T0, updated_at, "h", 1
    )


def snapshot(*jobs: BulkJob, errors: dict[str, str] | None = None) -> Snapshot:
    return Snapshot(T0, (), (), RedisHealth(True), errors or {}, jobs)


def test_a_live_bulk_message_replaces_an_older_stored_record_and_never_a_newer_one():
    state = TopState()
    state.live_bulk = {"a": bulk("a", 7, T0 - 1), "b": bulk("b", 1, T0 - 60), "c": bulk("c", 2, T0 - 5)}
    shown = state.bulk_jobs(snapshot(bulk("a", 5, T0 - 10), bulk("b", 9, T0 - 2)))
    assert [(j.bulk_job_id, j.processed) for j in shown] == [("a", 7), ("b", 9), ("c", 2)]  # newest first


def test_a_pid_change_counts_as_one_restart_and_a_stopped_process_does_not():
    state = TopState()
    state.set_processes([process(SOCK, "billing-usage", 0, 101)], {})
    state.set_processes([process(SOCK, "billing-usage", 0, 0, state="STOPPED")], {})
    state.set_processes([process(SOCK, "billing-usage", 0, 202)], {})
    state.set_processes([process(SOCK, "billing-usage", 0, 202)], {})
    assert state.restarts == {(SOCK, "billing-usage:billing-usage_00"): 1}


def test_events_are_read_on_from_the_last_id_and_only_the_newest_are_kept():
    state = TopState()
    state.add_events([(f"{i}-0", {"kind": "throttled", "n": str(i)}) for i in range(EVENTS_KEPT + 5)])
    assert state.last_event == f"{EVENTS_KEPT + 4}-0"
    assert len(state.events) == EVENTS_KEPT and state.events[0]["n"] == "5"


def test_a_supervisord_read_replaces_only_the_endpoints_errors():
    state = TopState()
    state.errors["bulk channel"] = "ConnectionError"
    state.set_processes([], {"host-b:9001": "refused"})
    assert state.all_errors(snapshot(errors={"redis": "down"})) == {
        "redis": "down",
        "host-b:9001": "refused",
        "bulk channel": "ConnectionError",
    }
    state.set_processes([], {})
    assert state.all_errors(snapshot()) == {"bulk channel": "ConnectionError"}
