"""Memory across hosts, without engines: each process's RSS series from its heartbeats (pool/monitor/memory.py),
the memory-growth finding on recorded series (steady growth is one; a saw-tooth, a one-off step, a young
process and a flat one are not; it clears when growth stops), a process matched to its heartbeat, the sparkline."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pool.monitor.findings import Finding, History, Thresholds, findings
from pool.monitor.memory import FALL_SHARE, STEADY, MemoryHistory, beat_of
from pool.monitor.memory import growth as memory_growth
from pool.monitor.snapshot import RedisHealth, Snapshot, WorkerBeat
from tests.support.fake_source import T0, process
from tui.format import spark_level

UP = RedisHealth(True, policy="noeviction")
MIB = 2**20
BEAT_S = 5.0
SOCK = "unix:///srv/host-a/var/supervisor.sock"
NAME = "billing-usage:billing-usage_00"


def beat(at: float, rss: int, *, pid: int = 4242, started: float = T0, host: str = "host-a") -> WorkerBeat:
    return WorkerBeat(
        host, pid, "billing-usage", NAME, 10, (), 0, 0, 0, int(started * 1000), int(at * 1000), rss, 3.5
    )


def replay(
    rss_at: Callable[[float], float], seconds: float, *, history: History | None = None, start: float = T0
) -> tuple[History, list[list[Finding]]]:
    """One heartbeat every 5 s from `start` for `seconds`, each snapshot through `findings` as ma-top's ticks
    do; the findings of every tick."""
    history = history or History()
    ticks = []
    for i in range(int(seconds / BEAT_S) + 1):
        at = start + i * BEAT_S
        snapshot = Snapshot(at, (), (beat(at, int(rss_at(at - T0) * MIB)),), UP)
        ticks.append(findings(snapshot, history))
    return history, ticks


def growth(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.kind == "memory-growth"]


def test_steady_growth_after_warm_up_is_a_memory_growth_finding_about_the_process():
    # 100 MiB, then +3 MiB a minute from the start: 45 MiB (45%) in 15 minutes
    _, ticks = replay(lambda t: 100 + 3 * t / 60, 20 * 60)
    (f,) = growth(ticks[-1])
    assert (f.severity, f.subject, f.goto) == ("warning", f"host-a:{NAME}", "process:billing-usage")
    assert f.cause.startswith("RSS grew 39% in 15m and is still growing")  # 100 + 3*5 = 115 -> 100 + 3*20
    assert f.evidence == "rss 115 -> 160 MiB, 6 of 6 steps up (> 20% in 15m)"
    assert "ma-top 3" in f.action and f"restart {NAME}" in f.action
    first = next(i for i, found in enumerate(ticks) if growth(found))
    assert first * BEAT_S == (120 + 900), "judged only once a whole window after the warm-up is watched"


def test_growth_below_the_threshold_or_flat_is_no_finding():
    _, slow = replay(lambda t: 100 + 1 * t / 60, 30 * 60)  # 15% in 15 minutes
    _, flat = replay(lambda t: 100.0, 30 * 60)
    assert not any(growth(found) for found in slow + flat)


def test_growth_only_during_the_warm_up_is_no_finding():
    # start-up fills 100 MiB -> 180 MiB in the first two minutes, then stays
    _, ticks = replay(lambda t: 100 + 80 * min(t, 120) / 120, 30 * 60)
    assert not any(growth(found) for found in ticks)
    loose = Thresholds(rss_warmup_s=600)
    history = History()
    first = None
    for i in range(int(30 * 60 / BEAT_S) + 1):
        at = T0 + i * BEAT_S
        snapshot = Snapshot(at, (), (beat(at, int((100 + 3 * i * BEAT_S / 60) * MIB)),), UP)
        if growth(findings(snapshot, history, thresholds=loose)) and first is None:
            first = i * BEAT_S
    assert first == 600 + 900, "a longer warm-up delays the judgement by as much"


def test_a_gc_saw_tooth_is_no_finding_even_when_the_window_ends_on_a_peak():
    # climbs 100 -> 140 MiB over 350 s, collected back to 100, again and again: sampled every 150 s some windows
    # start on a trough, end on a peak (> 20% apart) and rise in 4 of 6 steps, yet it gives back what it took
    saw = 350.0
    history = History()
    looked_like_growth = 0
    for i in range(int(40 * 60 / BEAT_S) + 1):
        at = T0 + i * BEAT_S
        rss = int((100 + 40 * (i * BEAT_S % saw) / saw) * MIB)
        snapshot = Snapshot(at, (), (beat(at, rss),), UP)
        assert not growth(findings(snapshot, history)), f"flagged at {i * BEAT_S:.0f}s"
        series = history.memory.of(snapshot.workers[0])
        g = memory_growth(series, 900, 120) if series else None
        if g is not None and g.pct > 20 and g.rising >= STEADY:
            looked_like_growth += 1
            assert g.fall > (g.end_rss - g.start_rss) * FALL_SHARE
    assert looked_like_growth, "the case the drop rule is for"


def test_a_one_off_step_is_no_finding():
    # a cache filled once, 10 minutes in: 100 -> 160 MiB, then flat
    _, ticks = replay(lambda t: 100 if t < 600 else 160, 30 * 60)
    assert not any(growth(found) for found in ticks)


def test_the_finding_clears_once_growth_stops_for_a_window():
    # grows for 20 minutes, then holds
    _, ticks = replay(lambda t: 100 + 3 * min(t, 1200) / 60, 40 * 60)
    at_stop = int(1200 / BEAT_S)
    assert growth(ticks[at_stop]), "growing"
    assert not any(growth(found) for found in ticks[-60:]), "cleared within a window of flat RSS"
    cleared = next(i for i in range(at_stop, len(ticks)) if not growth(ticks[i]))
    assert cleared < at_stop + int(900 / BEAT_S)


def test_a_restarted_process_starts_a_new_series_and_is_judged_afresh():
    history, ticks = replay(lambda t: 100 + 3 * t / 60, 20 * 60)
    assert growth(ticks[-1])
    restart = T0 + 20 * 60 + BEAT_S
    snapshot = Snapshot(restart, (), (beat(restart, 90 * MIB, pid=4243, started=restart),), UP)
    assert not growth(findings(snapshot, history)), "the new pid is young; the old one is gone"
    new = history.memory.of(snapshot.workers[0])
    assert new is not None and list(new.points) == [(restart, 90 * MIB)]
    # the same pid reused by a new process (a new start time) is a new series too
    reused = beat(restart + BEAT_S, 80 * MIB, pid=4243, started=restart + 1)
    history.memory.record(Snapshot(restart + BEAT_S, (), (reused,), UP))
    series = history.memory.of(reused)
    assert series is not None and [rss for _, rss in series.points] == [80 * MIB]


def test_one_point_per_beat_and_an_hour_kept_per_process_then_forgotten():
    memory = MemoryHistory()
    b = beat(T0, 100 * MIB)
    for tick in range(5):  # five ticks read the same beat
        memory.record(Snapshot(T0 + tick * 0.2, (), (b,), UP))
    assert len(memory.series[("host-a", 4242)].points) == 1
    for i in range(1, 900):  # 75 minutes of beats
        memory.record(Snapshot(T0 + i * BEAT_S, (), (beat(T0 + i * BEAT_S, 100 * MIB),), UP))
    points = memory.series[("host-a", 4242)].points
    assert points[-1][0] - points[0][0] <= 3600
    memory.record(Snapshot(T0 + 900 * BEAT_S + 3601, (), (), UP))
    assert memory.series == {}, "a process silent for an hour is forgotten"
    old = dataclasses.replace(b, rss=0)
    memory.record(Snapshot(T0, (), (old,), UP))
    assert memory.series == {}, "a beat without an RSS (an older pool) adds nothing"


def test_a_supervisord_process_is_matched_to_its_heartbeat_by_pid_and_name_and_host():
    p = process(SOCK, "billing-usage", 0, 4242)
    mine = beat(T0, 100 * MIB)
    other_name = dataclasses.replace(mine, process="identity-events:identity-events_00")
    assert beat_of(p, [other_name, mine]) is mine
    assert beat_of(p, [other_name]) is None
    assert beat_of(dataclasses.replace(p, pid=0), [mine]) is None
    remote = process("http://host-b:9001", "billing-usage", 0, 4242)
    on_b = dataclasses.replace(mine, host="host-b")
    assert beat_of(remote, [mine, on_b]) is on_b, "same pid and name on two hosts: the endpoint's host"


def test_the_rss_sparkline_climbs_with_growth_and_stays_low_when_flat():
    history, _ = replay(lambda t: 100 + 3 * t / 60, 60 * 60)
    series = history.memory.series[("host-a", 4242)]
    line = spark_level(series.trail(T0 + 3600, 12))
    assert len(line) == 12 and line[0] < line[-1] and list(line) == sorted(line)
    assert line[-1] == "█"
    flat, _ = replay(lambda t: 100 + (t % 10) / 100, 60 * 60)
    assert set(spark_level(flat.memory.series[("host-a", 4242)].trail(T0 + 3600, 12))) <= {"▁", "▂"}
    young, _ = replay(lambda t: 100 + t / 60, 10 * 60, start=T0 + 50 * 60)
    trail = young.memory.series[("host-a", 4242)].trail(T0 + 3600, 12)
    assert trail[:9] == [None] * 9 and spark_level(trail).startswith(" " * 9)


def test_one_snapshot_judges_the_hour_from_the_trail_the_heartbeat_carries():
    # what `ma-top --once` and a freshly opened ma-top see: one beat, carrying a minute-by-minute trail
    trail = tuple((int((T0 + m * 60) * 1000), int((100 + 4 * m) * MIB)) for m in range(60))
    now = T0 + 3600
    leaking = dataclasses.replace(beat(now, int(340 * MIB)), rss_trail=trail)
    (f,) = growth(findings(Snapshot(now, (), (leaking,), UP), History()))
    assert f.subject == f"host-a:{NAME}" and f.evidence.startswith("rss 280 -> 340 MiB")
    flat = tuple((at, 100 * MIB) for at, _ in trail)
    steady = dataclasses.replace(beat(now, 100 * MIB), rss_trail=flat)
    history = History()
    assert not growth(findings(Snapshot(now, (), (steady,), UP), history))
    series = history.memory.of(steady)
    assert series is not None and len(series.points) == 61, "the trail, then the beat's own point"
    line = spark_level(series.trail(now, 12))
    assert set(line) == {"▁"}
