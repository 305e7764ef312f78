"""The soak: 1,000,000 mixed jobs (every job name) through the whole stack under supervisord, with the exporter
scraped and `ma-top --once --json` run every 10 s, the backlog held under 2,000 (the pool at its capacity).

Sampled every 5 s: each program's RSS and its Redis connections. Reported: RSS growth over the second half of the
run and the slope after warm-up (the first tenth) per process; connections per process (stable: the second half
never above the first); Redis memory before and after; every key scanned and classified, leaks named (`bull:*`
beyond retention or orphaned, `ma:*` with neither TTL nor cap). Budgets: RSS growth < 5 % over the second half,
connections stable, 0 leaked keys. At the capacity of bench/capacity.py (~120 jobs/s on 2 cores) 1,000,000 jobs
take about 2.3 hours: `--jobs` runs a shorter one.

    .venv/bin/python bench/soak.py [--jobs 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.loadstack import load_stack
from tests.support.soak import Soak

RSS_BUDGET_PCT = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    home = Path(tempfile.mkdtemp(prefix="ma-soak-"))
    with load_stack(home) as stack:
        result = asyncio.run(Soak(stack, args.jobs).run(progress=True))
    growth = result["rss_growth_second_half_pct_max"]
    result["ok"] = bool(
        growth is not None
        and growth < RSS_BUDGET_PCT
        and result["connections_stable"]
        and result["leaked_keys"] == 0
        and result["top_failures"] == 0
        and result["exporter_failures"] == 0
    )
    for name, r in result["rss"].items():
        c = result["connections"].get(name, {})
        print(
            f"{name:34} RSS {r['rss_mb_end']:>6} MB, second half {r['growth_second_half_pct']:+.2f} %, "
            f"slope {r['slope_mb_per_100k_jobs']} MB/100k jobs; Redis connections {c.get('min')}..{c.get('max')}"
        )
    print(
        f"{result['jobs']} jobs in {result['seconds_loaded']} s ({result['jobs_per_s']} jobs/s); Redis "
        f"{result['redis_used_mb_before']} -> {result['redis_used_mb_after']} MB; keys {result['keys']}; "
        f"leaks {result['leaks']}"
    )
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
