"""Static promises: supervisord.conf follows the queue table, dependency direction, README and CI agree."""

from __future__ import annotations

import configparser
import re
import subprocess

from pool.queue_table import QUEUES
from pool.settings import Settings
from tests.support.paths import BIN, ROOT


def programs() -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "supervisord.conf")
    return {
        s.removeprefix("program:"): dict(parser[s]) for s in parser.sections() if s.startswith("program:")
    }


def test_supervisord_has_exactly_one_program_per_queue_of_the_table_plus_the_exporter():
    assert sorted(programs()) == sorted([*QUEUES, "exporter"])
    assert programs()["exporter"]["command"] == "ma-worker exporter"
    assert "unix://%(here)s/var/supervisor.sock" in programs()["exporter"]["environment"]


def test_every_program_runs_its_queue_with_graceful_stop_and_rotated_logs():
    grace = Settings.model_fields["MA_SHUTDOWN_GRACE"].default
    for name, prog in programs().items():
        if name == "exporter":
            continue
        spec = QUEUES[name]
        assert prog["command"] == f"ma-worker run {name}"
        assert prog["numprocs"] == f"%(ENV_{spec.procs_env})s"
        assert "%(process_num)" in prog["process_name"]
        assert prog["stopsignal"] == "TERM"
        assert int(prog["stopwaitsecs"]) > grace + 5, (
            "supervisord must not SIGKILL before the pool's own grace"
        )
        assert prog["stopasgroup"] == "true" and prog["autorestart"] == "true"
        assert int(prog["startsecs"]) >= 1
        assert prog["stdout_logfile"].startswith("%(here)s/var/log/")
        assert prog["stdout_logfile_maxbytes"] and int(prog["stdout_logfile_backups"]) >= 1


def test_control_socket_lives_under_var_and_is_owner_only():
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "supervisord.conf")
    assert parser["unix_http_server"]["file"] == "%(here)s/var/supervisor.sock"
    assert parser["unix_http_server"]["chmod"] == "0700"
    assert parser["supervisorctl"]["serverurl"] == "unix://%(here)s/var/supervisor.sock"


def test_queue_table_retention_is_bounded_and_metrics_are_on():
    for spec in QUEUES.values():
        opts = spec.worker_options()
        for keep in (opts["removeOnComplete"], opts["removeOnFail"]):
            assert keep.get("age") and keep.get("count"), f"{spec.name}: never keep forever"
        assert opts["metrics"]["maxDataPoints"] > 0
        assert opts["lockDuration"] > 0 and opts["concurrency"] > 0


def test_every_queue_rides_out_a_15_minute_outage_and_no_job_waits_longer_than_the_cap_between_tries():
    for spec in QUEUES.values():
        assert spec.retry_window_s >= 15 * 60, f"{spec.name}: retries end {spec.retry_window_s:.0f}s in"
        assert spec.longest_wait_s <= spec.backoff_cap_ms / 1000 <= 300, spec.name
        # ...and not much more than the outage: every try past the cap waits the cap, none beyond 17 min.
        assert spec.retry_window_s <= 17 * 60, f"{spec.name}: {spec.retry_window_s:.0f}s of retries"
    usage = QUEUES["billing-usage"]  # the queue of the 40-second blip that failed 10 jobs for good
    assert [usage.retry_delay_ms(n) / 1000 for n in range(1, usage.attempts)] == [
        2,
        4,
        8,
        16,
        32,
        64,
        *[120] * 7,
    ]


def test_readme_states_each_queues_retry_policy_as_the_table_has_it():
    readme = (ROOT / "README.md").read_text()
    for spec in QUEUES.values():
        row = (
            f"| `{spec.name}` | {spec.attempts} | exponential from {spec.backoff_ms / 1000:g} s"
            f" | {spec.backoff_cap_ms / 1000:g} s | {spec.retry_window_s:g} s ({spec.retry_window_s / 60:.1f} min)"
            f" | {spec.longest_wait_s:g} s |"
        )
        assert row in readme, row


def test_import_contracts_hold():
    """pool and handlers never import tui, textual or devstack (but `ma-worker dev`); handlers reach pool only
    through pool.contracts; tui never imports handlers: import-linter's contracts in pyproject.toml."""
    result = subprocess.run(
        [str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_readme_opens_with_the_run_and_test_commands_and_ci_runs_the_test_one():
    head = (ROOT / "README.md").read_text().splitlines()[:25]
    commands = [line.strip() for line in head if re.match(r"^\s*(bash|\./|python|make)\S*", line)]
    assert len(commands) >= 2, head
    run_cmd, test_cmd = commands[0], commands[1]
    assert "dev" in run_cmd and "test" in test_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_queue_and_every_runbook_variable():
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "OPERATIONS.md").read_text()
    for queue in QUEUES:
        assert f"`{queue}`" in readme
    for var in (
        "REDIS_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "IDENTITY_BASE_URL",
        "DATABASE_URL",
        "TASKS_DATABASE_URL",
        "TASKS_PRODUCT_SLUG",
        "BULLMQ_METRICS_INTERVAL",
    ):
        assert f"`{var}`" in readme
    for spec in QUEUES.values():
        assert f"`{spec.procs_env}`" in readme


def test_adding_a_product_queue_guide_names_the_real_places():
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    guide = guide[guide.index("## Adding a product queue") :]
    for place in (
        "handlers/",
        "pool/queue_table.py",
        "supervisord.conf",
        "HANDLERS",
        "QueueSpec",
        "MA_PROCS_",
    ):
        assert place in guide, place
    assert (ROOT / "pool" / "queue_table.py").exists()


def test_no_test_module_imports_another_or_the_conftest():
    """Shared helpers live in tests/support/; conftest.py holds fixtures, which pytest hands out by name."""
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        imports = re.findall(
            r"^\s*(?:from|import) (tests\.test_\w+|tests\.conftest|conftest)\b", path.read_text(), re.M
        )
        assert not imports, f"{path.name} imports {imports}"
