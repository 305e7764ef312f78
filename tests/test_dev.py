"""`ma-worker dev`: the whole stack from one command, one instance at a time, nothing left after Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import redis

from devstack import engines
from tests.support.paths import BIN, ROOT
from tests.support.waits import poll


def _clean_env() -> dict[str, str]:
    drop = ("REDIS_URL", "DATABASE_URL", "TASKS_DATABASE_URL", "MA_", "SUPERVISOR_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _wait_text(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> str:
    def text_with_needle() -> str:
        text = path.read_text(errors="replace") if path.exists() else ""
        assert proc.poll() is None, f"ma-worker dev exited early:\n{text}"
        return text if needle in text else ""

    try:
        return poll(text_with_needle, timeout=timeout, every=0.2, what=repr(needle))
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{path.read_text(errors='replace')}") from None


def _fresh_shell(tmp_path: Path, command: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """`env -i bash -c COMMAND`: a new terminal's shell, nothing of ours in its environment."""
    return subprocess.Popen(["env", "-i", f"HOME={tmp_path}", "bash", "-c", command], cwd=tmp_path, **kwargs)


def _banner_command_works_in_a_fresh_shell(tmp_path: Path, banner: str) -> None:
    """What the banner says to type in another shell works as printed, and `ma-worker run QUEUE` starts from
    var/dev.env alone (it needs SUPABASE_SERVICE_ROLE_KEY and the rest; .venv/bin is put on PATH)."""
    dev_env = tmp_path / "var" / "dev.env"
    assert dev_env.stat().st_mode & 0o777 == 0o600, "dev.env holds the stack's keys: private"
    (command,) = re.findall(r"in another shell\s+(.+)", banner)
    typed = _fresh_shell(tmp_path, command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = typed.communicate(timeout=60)[0].decode()
    assert typed.returncode == 0, out
    job_id = re.fullmatch(r"added identity-events organization\.created#(\S+)\s*", out)
    assert job_id, out

    redis_url = re.search(r"export REDIS_URL=(\S+)", dev_env.read_text())
    assert redis_url
    client = redis.Redis.from_url(redis_url.group(1).strip("'"), decode_responses=True)
    key = f"bull:identity-events:{job_id.group(1)}"
    poll(lambda: client.hget(key, "finishedOn"), timeout=30, every=0.2, what="the banner's job processed")
    client.close()

    log = tmp_path / "run.out"
    with open(log, "wb") as sink:
        slot = _fresh_shell(
            tmp_path,
            "source var/dev.env && exec ma-worker run identity-events",
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_text(log, "consuming identity-events", slot, timeout=60)
        slot.terminate()
        assert slot.wait(40) == 0, log.read_text()
    finally:
        if slot.poll() is None:
            slot.kill()


def test_dev_brings_up_everything_refuses_a_second_instance_and_ctrl_c_leaves_nothing(tmp_path):
    shutil.copy(ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    out = tmp_path / "dev.out"
    env = _clean_env()
    with open(out, "wb") as sink:
        dev = subprocess.Popen(
            [str(BIN / "ma-worker"), "dev"], cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        text = _wait_text(out, "Ctrl-C stops everything.", dev)
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)]
        assert len(ports) >= 4  # valkey, postgres (x2 lines), identity, stripe

        def status_all_running() -> str:
            status = subprocess.run(
                [str(BIN / "supervisorctl"), "-c", str(tmp_path / "supervisord.conf"), "status"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            return status if status.count("RUNNING") >= 9 else ""

        status = poll(status_all_running, timeout=30, every=0.5, what="supervisorctl status: 9 RUNNING")
        assert status.count("RUNNING") == 9, status
        assert (tmp_path / "var" / "dev.env").read_text().count("export ") >= 5
        assert "dev-service-role-key" not in text, "no secret on screen"
        dev_env = (tmp_path / "var" / "dev.env").read_text()  # exports go to the stack's S3 server (moto)
        assert "export MA_EXPORT_URL=s3://ma-exports/exports" in dev_env and "S3 (exports)" in text
        s3_url = re.search(r"export MA_S3_ENDPOINT_URL=(\S+)", dev_env).group(1)
        assert s3_url in text and httpx.head(f"{s3_url}/ma-exports").status_code == 200  # the bucket exists
        _banner_command_works_in_a_fresh_shell(tmp_path, text)

        second = subprocess.run(
            [str(BIN / "ma-worker"), "dev"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 1 and "already running here" in second.stderr

        pids = [int(p) for p in re.findall(r"pid (\d+)", status)]
        dev.send_signal(signal.SIGINT)
        assert dev.wait(90) == 0
        assert "stopped." in out.read_text()
        for pid in pids:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
            )
        for port in set(ports):
            assert not engines.port_open(port), f"something still listens on {port}"
    finally:
        if dev.poll() is None:
            dev.kill()
