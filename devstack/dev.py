"""`ma-worker dev`: the whole system on one machine, state under var/, Ctrl-C stops everything."""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from devstack import databases, engines
from devstack.s3_server import S3Server
from pool.supervise import prepare_state_dir, supervisord_env

ROOT = Path.cwd()


class Service:
    """A child process in its own session, stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )

    def stop(self, timeout: float = 45.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _lock(var: Path) -> int | None:
    fd = os.open(var / "dev.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see var/log")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


def run_dev(*, with_top: bool, root: Path = ROOT) -> int:
    var = root / "var"
    (var / "log").mkdir(parents=True, exist_ok=True)
    fd = _lock(var)
    if fd is None:
        holder = (var / "dev.lock").read_text().strip() or "?"
        print(
            f"ma-worker dev is already running here (pid {holder}); stop it with Ctrl-C in its terminal.",
            file=sys.stderr,
        )
        return 1
    stopping = False

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bindir = Path(sys.executable).parent
    with ExitStack() as stack:
        try:
            env = dict(os.environ)
            redis_url = os.environ.get("REDIS_URL")
            if not redis_url:
                valkey = engines.valkey(var / "valkey", port=_port(var, "valkey", 6390))
                stack.callback(valkey.stop)
                redis_url = valkey.start().url
            db_urls = None
            if not (os.environ.get("DATABASE_URL") and os.environ.get("TASKS_DATABASE_URL")):
                pg = engines.postgres(var / "postgres" / "data", port=_port(var, "postgres", 5440))
                stack.callback(pg.stop)
                db_urls = databases.bootstrap(pg.start().url)
            identity_admin = db_urls.admin if db_urls else os.environ.get("IDENTITY_ADMIN_DATABASE_URL", "")
            env["DATABASE_URL"] = os.environ.get("DATABASE_URL") or db_urls.identity_ro  # type: ignore[union-attr]
            env["TASKS_DATABASE_URL"] = os.environ.get("TASKS_DATABASE_URL") or db_urls.tasks  # type: ignore[union-attr]
            env["REDIS_URL"] = redis_url

            identity_port, stripe_port = engines.free_port(), engines.free_port()
            env.setdefault("SUPABASE_SERVICE_ROLE_KEY", "dev-service-role-key")
            if identity_admin:
                identity = Service(
                    "identity",
                    [
                        str(bindir / "python"),
                        "-m",
                        "devstack.identity_double",
                        "--port",
                        str(identity_port),
                        "--database-url",
                        identity_admin,
                    ],
                    var / "log" / "identity-double.log",
                    env=env,
                )
                stack.callback(identity.stop)
                _wait_http(f"http://127.0.0.1:{identity_port}/healthz", identity.proc, "identity double")
            stripe = Service(
                "stripe",
                [str(bindir / "python"), "-m", "devstack.stripe_double", "--port", str(stripe_port)],
                var / "log" / "stripe-double.log",
                env=env,
            )
            stack.callback(stripe.stop)
            _wait_http(f"http://127.0.0.1:{stripe_port}/__stats", stripe.proc, "stripe double")

            env.setdefault("IDENTITY_BASE_URL", f"http://127.0.0.1:{identity_port}")
            env.setdefault("SUPABASE_URL", env["IDENTITY_BASE_URL"])
            env.setdefault("STRIPE_SECRET_KEY", "sk_test_dev")
            env.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_dev")
            env.setdefault("STRIPE_API_BASE", f"http://127.0.0.1:{stripe_port}")
            env.setdefault("TASKS_PRODUCT_SLUG", "tasks")
            env.setdefault("MA_EXPORTER_PORT", str(_port(var, "exporter", 9464)))
            # dev.env gets the dev stack's S3 credentials only: a real secret from the shell never lands there
            s3_env: dict[str, str] = {}
            if not os.environ.get("MA_EXPORT_URL"):  # exports go to a real S3-compatible server (moto)
                s3 = S3Server(var / "log" / "s3.log", port=_port(var, "s3", 9000)).start()
                stack.callback(s3.stop)
                s3.create_bucket()
                s3_env = s3.env()
                env.update(s3_env)
            write_dev_env(var / "dev.env", env, bindir, extra=tuple(s3_env))

            config = root / "supervisord.conf"
            prepare_state_dir(config)
            sup = Service(
                "supervisord",
                [str(bindir / "supervisord"), "-n", "-c", str(config)],
                var / "log" / "supervisord.out",
                env=supervisord_env(env),
            )
            stack.callback(sup.stop)
            _print_where(env, identity_port, stripe_port, config, var)
            if with_top:
                print("opening ma-top (q quits it and stops the stack) ...", flush=True)
                time.sleep(1.0)
                subprocess.run(
                    [str(bindir / "ma-top"), "--supervisor", f"unix://{var / 'supervisor.sock'}"],
                    env=env,
                    check=False,
                )
            else:
                print("Ctrl-C stops everything.", flush=True)
                while sup.proc.poll() is None:
                    time.sleep(0.5)
                print(f"supervisord exited with code {sup.proc.returncode}; see var/log/supervisord.log")
        except KeyboardInterrupt:
            stopping = True
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the clean-up
            print("\nstopping: supervisord (in-flight jobs finish), doubles, engines ...", flush=True)
    os.close(fd)
    print("stopped.")
    return 0 if stopping or with_top else 1


DEV_ENV = (
    "REDIS_URL",
    "DATABASE_URL",
    "TASKS_DATABASE_URL",
    "IDENTITY_BASE_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "TASKS_PRODUCT_SLUG",
)
"""What `var/dev.env` exports: everything `ma-worker run QUEUE`, `enqueue`, `billing` and `ma-top` need against
the local stack (the local stack's own throw-away keys included, so the file is private to its owner)."""


def write_dev_env(path: Path, env: dict[str, str], bindir: Path, extra: tuple[str, ...] = ()) -> None:
    """`source var/dev.env` in any shell: the stack's variables (and `extra` ones: the S3 server's), and
    .venv/bin first on PATH so the commands the banner prints (`ma-worker`, `ma-top`, `supervisorctl`) are found
    without activating the venv."""
    lines = [f"export {k}={shlex.quote(env[k])}\n" for k in (*DEV_ENV, *extra) if env.get(k)]
    lines.append(f'export PATH={shlex.quote(str(bindir))}"${{PATH:+:$PATH}}"\n')
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("# ma-worker dev: source this file (it also puts .venv/bin on PATH)\n" + "".join(lines))


def _port(var: Path, name: str, preferred: int) -> int:
    """Keep an engine on the same port across runs (bookmarks, psql history); else any free one."""
    record = var / f"{name}.port"
    if record.exists():
        preferred = int(record.read_text())
    port = preferred if not engines.port_open(preferred) else engines.free_port()
    record.write_text(str(port))
    return port


def _print_where(env: dict[str, str], identity_port: int, stripe_port: int, config: Path, var: Path) -> None:
    def redact(url: str) -> str:
        return url.split("@")[-1] if "@" in url else url

    print(
        f"""
ma-worker dev is up.
  Redis/Valkey       {env["REDIS_URL"]}
  identity DB (ro)   postgresql://…@{redact(env["DATABASE_URL"])}
  tasks DB           postgresql://…@{redact(env["TASKS_DATABASE_URL"])}
  identity double    http://127.0.0.1:{identity_port}
  Stripe double      http://127.0.0.1:{stripe_port}
  S3 (exports)       {env.get("MA_EXPORT_URL", "-")} at {env.get("MA_S3_ENDPOINT_URL", "AWS")}
  metrics            http://127.0.0.1:{env["MA_EXPORTER_PORT"]}/metrics  (and /api/telemetry/metrics)
  supervisord        supervisorctl -c {config} status
  logs               {var / "log"}
  in another shell   source {var / "dev.env"}; ma-worker enqueue identity-events organization.created --data '{{"organizationId":"org_acme"}}'
                     (dev.env exports the stack's variables and puts {Path(sys.executable).parent} on PATH)
""",
        flush=True,
    )
