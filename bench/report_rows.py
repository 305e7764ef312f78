"""The benchmark rows of bench/REPORT.md, one per figure with its issue, budget and verdict, from
var/bench-results.json (bench/report.py runs the benchmarks and renders the rest)."""

from __future__ import annotations

from typing import Any


def _bursts(lane: dict[str, Any]) -> str:
    """io_bound's traced round: how many lanes move together and what each waits for in its burst."""
    if "lanes_per_burst" not in lane:
        return ""
    return (
        f"; lanes start in bursts of {lane['lanes_per_burst']} on average (starts less than 1 ms apart), and in "
        f"that round trip a lane waited about {lane['valkey_queue_ms']} ms for Valkey to run its own script and "
        f"those of the lanes ahead of it in its burst ({lane['valkey_script_us']} us of scripts a job in that "
        f"round) and about {lane['worker_queue_ms']} ms for the worker's CPU for them ({lane['worker_cpu_us']} us "
        f"a job; the two overlap)"
    )


def _ok(value: bool | None) -> str:
    return "n/a" if value is None else ("within" if value else "**OVER**")


def bench_rows(b: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    t = b.get("throughput", {})
    if "ratio" in t:
        rows.append(
            (
                "#2",
                "pool (PoolWorker + full dispatch) vs raw bullmq.Worker, no-op jobs, same Redis",
                f"{t['ratio']:.3f}x ({t['pool_jobs_per_s']} vs {t['raw_jobs_per_s']} jobs/s)",
                ">= 0.9x",
                _ok(t["ratio"] >= 0.9),
            )
        )
    if "dispatch_ratio" in t:
        rows.append(
            (
                "#2",
                "dispatch overhead alone: pool vs PoolWorker with a no-op processor",
                f"{t['dispatch_ratio']:.3f}x ({t['pool_cpu_us_per_job']} vs {t['bare_cpu_us_per_job']} us "
                "CPU/job)",
                "information",
                "n/a",
            )
        )
    k = b.get("top_tick", {})
    if "ratio" in k:
        rows.append(
            (
                "#6",
                "ma-top tick, 1,000,000-job queue vs empty",
                f"{k['ratio']:.3f}x ({k['full_median_ms']} ms)",
                "<= 1.2x, <= 5 ms",
                _ok(k["ratio"] <= 1.2 and k["full_median_ms"] <= 5),
            )
        )
        rows.append(
            (
                "#6",
                "ma-top CPU at a 1 s refresh",
                f"{k['top_cpu_fraction'] * 100:.1f} % of a core",
                "<= 5 %",
                _ok(k["top_cpu_fraction"] <= 0.05),
            )
        )
    e = b.get("export", {})
    if "ratio" in e:
        rows.append(
            (
                "#4",
                "bulk.export 1M rows vs COPY ... TO STDOUT \\| gzip",
                f"{e['ratio']:.3f}x ({e['export_s']} vs {e['reference_s']} s)",
                ">= 0.8x",
                _ok(e["ratio"] >= 0.8),
            )
        )
        rows.append(
            (
                "#4",
                "bulk.export worker peak RSS",
                f"{e['worker_peak_rss_mb']} MB",
                "<= 150 MB",
                _ok(e["worker_peak_rss_mb"] <= 150),
            )
        )
    s3 = b.get("export_s3", {})
    if "ratio" in s3:
        rows.append(
            (
                "#16",
                "bulk.export 1M rows to S3 (moto server, multipart) vs to a local file",
                f"{s3['ratio']:.3f}x ({s3['s3_s']} vs {s3['local_s']} s)",
                ">= 0.7x",
                _ok(s3["ratio"] >= 0.7),
            )
        )
        rows.append(
            (
                "#16",
                "bulk.export to S3 worker peak RSS",
                f"{s3['worker_peak_rss_mb']} MB (local-file worker {s3['local_worker_peak_rss_mb']} MB)",
                "<= 150 MB",
                _ok(s3["worker_peak_rss_mb"] <= 150),
            )
        )
    sc = b.get("search_scan", {})
    if "ratio" in sc:
        rows.append(
            (
                "#15",
                "search 100,000 failed jobs with a data filter vs a bare pipelined HGETALL loop",
                f"{sc['ratio']:.3f}x ({sc['search_jobs_per_s']:,} vs {sc['bare_hgetall_jobs_per_s']:,} jobs/s)",
                ">= 0.7x",
                _ok(sc["ratio"] >= 0.7),
            )
        )
    if "tick_ratio" in sc:
        rows.append(
            (
                "#15",
                "ma-top tick while a search scans, vs without (same client and loop)",
                f"{sc['tick_ratio']:.3f}x ({sc['tick_during_scan_median_ms']} vs {sc['tick_median_ms']} ms)",
                "<= 1.2x",
                _ok(sc["tick_ratio"] <= 1.2),
            )
        )
    u = b.get("usage_rollup", {})
    if "ratio" in u:
        rows.append(
            (
                "#5",
                "usage.aggregate 1M events (whole job) vs bare GROUP BY",
                f"{u['ratio']:.3f}x ({u['job_ms']} vs {u['group_by_ms']} ms)",
                "<= 1.5x",
                _ok(u["ratio"] <= 1.5),
            )
        )
    n = b.get("node_compare", {})
    if "ratio_vs_node" in n:
        rows.append(
            (
                "#8",
                "pool vs Node BullMQ, 2 processes x concurrency 10, no-op jobs",
                f"{n['ratio_vs_node']:.3f}x ({n['pool_jobs_per_s']} vs {n['node_jobs_per_s']} jobs/s"
                + (
                    f"; the median of {len(n['ratio_vs_node_rounds'])} per-round ratios, whose quartiles are "
                    f"{n['ratio_vs_node_q1']:.2f}-{n['ratio_vs_node_q3']:.2f}; the jobs/s are the medians of each kind"
                    if "ratio_vs_node_q1" in n
                    else ""
                )
                + f"; raw bullmq-python {n['raw_vs_node']:.3f}x"
                + (
                    f"; pool without auto-pipelining {n['pooled_vs_node']:.3f}x)"
                    if "pooled_vs_node" in n
                    else ")"
                ),
                f">= {n.get('budget_vs_node', 0.5)}x",
                _ok(n["ratio_vs_node"] >= n.get("budget_vs_node", 0.5)),
            )
        )
        if "one_process_ratio_vs_node" in n:
            rows.append(
                (
                    "#18",
                    "pool vs Node BullMQ, 1 process x concurrency 10, no-op jobs",
                    f"{n['one_process_ratio_vs_node']:.3f}x ({n['one_process_pool_jobs_per_s']} vs "
                    f"{n['one_process_node_jobs_per_s']} jobs/s)",
                    "information",
                    "n/a",
                )
            )
        rows.append(
            (
                "#8",
                "pickup latency at 200 jobs/s, pool vs raw bullmq-python",
                f"p50 {n['pickup_p50_ratio']:.2f}x ({n['pickup_pool_p50_ms']} vs {n['pickup_raw_p50_ms']} ms), "
                f"p99 {n['pickup_p99_ratio']:.2f}x ({n['pickup_pool_p99_ms']} vs {n['pickup_raw_p99_ms']} ms)",
                f"p50 <= {n.get('budget_p50', 1.2)}x, p99 <= {n.get('budget_p99', 2)}x",
                _ok(
                    n["pickup_p50_ratio"] <= n.get("budget_p50", 1.2)
                    and n["pickup_p99_ratio"] <= n.get("budget_p99", 2)
                ),
            )
        )
        if "pickup_high_p99_ratio" in n:
            rows.append(
                (
                    "#18",
                    f"pickup latency at {n['pickup_high_rate']:.0f} jobs/s, pool vs raw bullmq-python",
                    f"p99 {n['pickup_high_p99_ratio']:.3g}x ({n['pickup_high_pool_p99_ms']} vs "
                    f"{n['pickup_high_raw_p99_ms']} ms)",
                    "information",
                    "n/a",
                )
            )
    else:
        rows.append(
            (
                "#8",
                "pool vs Node BullMQ; pickup latency",
                "not measured (run bench/node_compare.py)",
                ">= 0.5x; p50 <= 1.2x, p99 <= 2x",
                "n/a",
            )
        )
    io = b.get("io_bound", {})
    for one in io.get("sweep", [io] if "ratio_vs_bound" in io else []):
        rows.append(
            (
                "#18",
                f"I/O-bound jobs (20 ms await) at concurrency {one['concurrency']} vs Little's law C/0.02 s",
                f"{one['ratio_vs_bound']:.3f}x ({one['pool_jobs_per_s']} vs {one['bound_jobs_per_s']} jobs/s; bare "
                f"asyncio loop {one['bare_vs_bound']:.3f}x"
                + (
                    f"; Node BullMQ {one['node_vs_bound']:.3f}x; pool without auto-pipelining "
                    f"{one['pooled_vs_bound']:.3f}x)"
                    if "node_vs_bound" in one
                    else ")"
                )
                + (
                    f"; a lane's cycle with these identical awaits: the await {one['cycle_ms']['await_ms']} ms, "
                    f"completing call to the next job's start {one['cycle_ms']['completion_to_next_start_ms']} ms, "
                    f"await's end to the completing call {one['cycle_ms']['end_to_completion_ms']} ms"
                    if "cycle_ms" in one
                    else ""
                )
                + _bursts(one.get("cycle_ms", {}))
                + (
                    f"; with awaits of {one['spread_ms'][0]}-{one['spread_ms'][1]} ms (whole ms, uniform; against "
                    f"C / their mean) instead: {one['spread_vs_bound']:.3f}x, lanes in bursts of "
                    f"{one['spread_cycle_ms']['lanes_per_burst']}"
                    if "spread_cycle_ms" in one
                    else ""
                ),
                f">= {one['budget']}x",
                _ok(one["ratio_vs_bound"] >= one["budget"]),
            )
        )
    mix = b.get("task_mix", {})
    if "ratio" in mix:
        rows.append(
            (
                "#18",
                f"task.assigned mix, {mix['jobs'] * mix['rounds']:,} jobs a side in {mix['rounds']} alternating "
                f"rounds of {mix['jobs']:,} (identity double + PostgreSQL insert) vs bare asyncio loop, same clients",
                f"{mix['ratio']:.3f}x ({mix['pool_jobs_per_s']} vs {mix['bare_jobs_per_s']} jobs/s)",
                f">= {mix['budget']}x",
                _ok(mix["ratio"] >= mix["budget"]),
            )
        )
    rows += capacity_rows(b)
    rows += billing_day_rows(b)
    for name, result in b.items():
        if "error" in result:
            rows.append(
                ("", f"{name} (failed to run)", result["error"][-120:].replace("\n", " "), "", "**OVER**")
            )
    return rows


def capacity_rows(b: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Issue 17: the pool's capacity for the realistic mix, and the soak."""
    rows = []
    c = b.get("capacity", {})
    if "jobs_per_s" in c:
        per = ", ".join(f"{q} {r['jobs_per_s']}" for q, r in c["per_queue"].items())
        rows.append(
            (
                "#17",
                f"capacity: drain rate of a {c['jobs']:,}-job backlog of every job name (real handlers, doubles, "
                "PostgreSQL, supervisord at default process counts)",
                f"{c['jobs_per_s']} jobs/s total ({c['jobs_per_s_first_80pct']} over the first 80 %); per queue: {per}",
                "0 failed; the chaos load is >= 50 % of it",
                _ok(c["failed"] == 0),
            )
        )
    k = b.get("soak", {})
    if "jobs" in k:
        rows.append(
            (
                "#17",
                f"soak: {k['jobs']:,} mixed jobs, exporter and ma-top running ({k['seconds_loaded']} s)",
                f"RSS growth over the second half: max {k['rss_growth_second_half_pct_max']} % "
                f"({k['rss_worst']}); Redis connections per process max {k['connections_max_per_process']}, "
                f"range {k['connections_range']}; Redis memory {k['redis_used_mb_before']} -> "
                f"{k['redis_used_mb_after']} MB; leaked keys {k['leaked_keys']}",
                "RSS < 5 %; connections stable; 0 leaked keys",
                _ok(k["ok"]),
            )
        )
    p = b.get("payment_sync_soak", {})
    if "rss_mb_end" in p:
        rows.append(
            (
                "#17",
                f"soak, billing-payment-sync part: {p['jobs']:,} billing jobs of the soak mix, "
                f"{p['payment_intents']:,} PaymentIntents swept by reconciliations ({p['seconds']} s)",
                f"RSS {p['rss_mb_warm_up_end']} MB after warm-up, {p['rss_mb_half']} at half, {p['rss_mb_end']} "
                f"at the end: {p['rss_growth_second_half_pct']} % over the second half",
                "RSS < 5 % over the second half",
                _ok(p["ok"]),
            )
        )
    return rows


def billing_day_rows(b: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Issue 18: one billing day end to end, and where its time goes (bench/billing_day.py)."""
    d = b.get("billing_day", {})
    if "day_wall_s" not in d:
        return []
    stages = d["stages"]

    def stage(name: str) -> str:
        f = stages[name]
        ratio = f" ({f['ratio_wall']}x bare)" if "ratio_wall" in f else ""
        return f"{name} {f['pool']['wall_s']} s, {f['pool']['jobs_per_s']} jobs/s{ratio}"

    inv = stages["invoices"]
    cpu = ", ".join(f"{k} {v}" for k, v in inv["pool"]["cpu_s"].items())
    shares = ", ".join(f"{k} {v:.0%}" for k, v in inv.get("bare", {}).get("share_of_job_time", {}).items())
    spied = ", ".join(f"{k} {v:.0%}" for k, v in inv["pool"].get("cpu_profile", {}).items())
    return [
        (
            "#18",
            f"one billing day, {d['subscriptions']:,} subscriptions: usage rollups, invoices with PDFs and "
            "PaymentIntents, their webhooks (the pool under supervisord, PostgreSQL, identity and Stripe doubles)",
            f"{d['day_wall_s']} s, {d['failed']} failed: "
            + "; ".join(stage(s) for s in stages)
            + f"; rollups' limiter floor {d.get('rollups_limiter_floor_s')} s",
            "information",
            "n/a",
        ),
        (
            "#18",
            "billing day, where the invoices' time goes",
            f"CPU s: {cpu}; bare job time: {shares}"
            + (f"; the slot's CPU (py-spy): {spied}" if spied else ""),
            "information",
            "n/a",
        ),
    ]
