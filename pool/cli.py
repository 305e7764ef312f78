"""`ma-worker`: run one pool slot, the local stack, supervisord, and the operator commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from urllib.parse import unquote

from pool.enqueue import CliError


def _cmd_run(args: argparse.Namespace) -> int:
    from pool.logs import setup_logging
    from pool.queue_table import load_table
    from pool.runtime import run_on_loop, serve
    from pool.settings import Settings, fail, load_settings, redis_passwords

    settings = load_settings(Settings)
    try:
        table = load_table(settings.MA_QUEUE_TABLE)
    except LookupError as error:
        fail(str(error))
    if args.queue not in table:
        fail(f"unknown queue {args.queue!r}; known queues: {', '.join(table)}")
    secrets = [
        s.get_secret_value()
        for s in (
            settings.SUPABASE_SERVICE_ROLE_KEY,
            settings.STRIPE_SECRET_KEY,
            settings.STRIPE_WEBHOOK_SECRET,
        )
        if s is not None
    ]
    # A PostgresDsn may name several hosts, each with its own password (it has no `.password`: reading it
    # through getattr(..., None) silently left the database passwords out of the scrubbed secrets).
    secrets += redis_passwords(settings.REDIS_URL)
    secrets += [
        password
        for dsn in (settings.DATABASE_URL, settings.TASKS_DATABASE_URL)
        for host in dsn.hosts()
        if (password := host.get("password"))
    ]
    # pydantic keeps a URL's password percent-encoded; a message may carry it either way
    secrets += [unquote(s) for s in secrets if unquote(s) != s]
    setup_logging(secrets)
    return run_on_loop(serve(table[args.queue], settings), settings.MA_EVENT_LOOP)


def _redis_url(args: argparse.Namespace) -> str:
    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        raise CliError("REDIS_URL is not set (Redis connection string); pass --redis-url or export it")
    return url


async def _enqueue(args: argparse.Namespace) -> str:
    from pool.connection import plain_redis
    from pool.enqueue import add_job, parse_data, requeue_failed, requeue_one, spec_for
    from pool.queue_table import load_table

    spec = spec_for(load_table(os.environ.get("MA_QUEUE_TABLE", "pool.queue_table:QUEUES")), args.queue)
    redis = plain_redis(_redis_url(args))
    try:
        if args.requeue:
            return await requeue_one(redis, spec, args.requeue)
        if args.requeue_failed:
            return await requeue_failed(redis, spec, assume_yes=args.yes, confirm=_confirm)
        if not args.name:
            raise CliError("give a job NAME to add, or --requeue JOB_ID, or --requeue-failed")
        data = parse_data(args.data)
        return await add_job(redis, spec, args.name, data, args.job_id, args.delay)
    finally:
        await redis.aclose()


def _confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        print("not a terminal: pass --yes to confirm", file=sys.stderr)
        return False
    return input(prompt).strip().lower() in ("y", "yes")


def _cmd_enqueue(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from pool.redis_full import is_oom

    try:
        print(asyncio.run(_enqueue(args)))
    except RedisError as error:
        if is_oom(error):
            raise CliError(
                f"Redis is full (OOM): the job was not added; free memory or raise maxmemory, then add it again ({error})"
            ) from None
        raise CliError(f"Redis: {error}") from None
    return 0


def _bool(value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


async def _billing(args: argparse.Namespace) -> tuple[str, bool]:
    from pool import billing_cli
    from pool.connection import plain_redis
    from pool.queue_table import load_table

    table = dict(load_table(os.environ.get("MA_QUEUE_TABLE", "pool.queue_table:QUEUES")))
    database_url = args.database_url or os.environ.get("DATABASE_URL")
    if not database_url:
        raise CliError(
            "DATABASE_URL is not set (identity database, read-only); pass --database-url or export it"
        )
    redis = plain_redis(_redis_url(args))
    try:
        if args.billing_command == "backfill":
            out = await billing_cli.backfill(
                redis,
                table["billing-usage"],
                database_url,
                org=args.org,
                sub=args.subscription,
                start=args.start,
                end=args.end,
                resolution=args.resolution,
                features=args.features,
                dry_run=args.dry_run,
                stagger=args.stagger,
            )
            return out, True
        return await billing_cli.load_test(
            redis,
            table,
            database_url,
            org=args.org,
            sub=args.subscription,
            days=args.days,
            usage_jobs=args.usage_jobs,
            invoices=args.invoices,
            timeout=args.timeout,
        )
    finally:
        await redis.aclose()


def _cmd_billing(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    try:
        out, ok = asyncio.run(_billing(args))
    except RedisError as error:
        raise CliError(f"Redis: {error}") from None
    print(out)
    return 0 if ok else 1


def _cmd_jobs(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from pool import jobs_cli

    try:
        out, code = asyncio.run(jobs_cli.run(args, _redis_url(args), _confirm))
    except RedisError as error:
        raise CliError(f"Redis: {error}") from None
    print(out)
    return code


def _cmd_exporter(args: argparse.Namespace) -> int:
    from pool.exporter import ExporterSettings, serve
    from pool.logs import setup_logging
    from pool.settings import load_settings, redis_passwords

    settings = load_settings(ExporterSettings)
    setup_logging(redis_passwords(settings.REDIS_URL))
    return asyncio.run(serve(settings))


def _cmd_dev(args: argparse.Namespace) -> int:
    from devstack.dev import run_dev

    return run_dev(with_top=sys.stdin.isatty() and sys.stdout.isatty() and not args.no_top)


def _cmd_supervisord(args: argparse.Namespace) -> int:
    from pool.supervise import exec_supervisord

    return exec_supervisord(args.config, list(args.extra))


def _cmd_redis_acl(args: argparse.Namespace) -> int:
    from pool.queue_table import load_table
    from pool.redis_acl import acl_lines

    passwords = []
    for var in ("MA_REDIS_POOL_PASSWORD", "MA_REDIS_READER_PASSWORD"):
        value = os.environ.get(var, "")
        if not value:
            raise CliError(f"{var} is not set (the password of that Redis user; printed only as its SHA-256)")
        passwords.append(value)
    try:
        table = load_table(os.environ.get("MA_QUEUE_TABLE", "pool.queue_table:QUEUES"))
        lines = acl_lines(table, *passwords, pool_user=args.pool_user, reader_user=args.reader_user)
    except (LookupError, ValueError) as error:
        raise CliError(str(error)) from None
    print("\n".join(lines))
    return 0


def _cmd_identity(args: argparse.Namespace) -> int:
    from pool.identity_cli import rotate_session

    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    print(asyncio.run(rotate_session(args.session_id, base_url=args.identity_url, redis_url=redis_url)))
    return 0


def _cmd_scale(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pool import scale
    from pool.cli_journal import journal
    from pool.queue_table import load_table

    table = dict(load_table(os.environ.get("MA_QUEUE_TABLE", "pool.queue_table:QUEUES")))
    config = Path(args.config)
    if not config.exists():
        raise CliError(f"no supervisord config at {config}")
    if args.queue is None:
        print(scale.listing(config, args.supervisor, table))
        return 0
    if args.n is None:
        raise CliError("give the new process count: ma-worker scale QUEUE N")
    out = scale.scale(config, args.supervisor, table, args.queue, args.n)
    redis_url = os.environ.get("REDIS_URL")
    asyncio.run(journal(redis_url, "scale", args.queue, [], f"{args.n} process(es)"))
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ma-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one pool slot: a bullmq Worker for QUEUE (what supervisord starts)")
    run.add_argument("queue")
    run.set_defaults(func=_cmd_run)

    exp = sub.add_parser("exporter", help="Prometheus metrics and tasks telemetry over HTTP (one per host)")
    exp.set_defaults(func=_cmd_exporter)

    dev = sub.add_parser("dev", help="the whole local stack: engines, doubles, supervisord, ma-top")
    dev.add_argument(
        "--no-top",
        action="store_true",
        help="do not open ma-top (it opens when this is a terminal); wait for Ctrl-C",
    )
    dev.set_defaults(func=_cmd_dev)

    sup = sub.add_parser(
        "supervisord", help="start supervisord on supervisord.conf with the per-queue defaults"
    )
    sup.add_argument("-c", "--config", default="supervisord.conf")
    sup.add_argument("extra", nargs=argparse.REMAINDER, help="more supervisord arguments (e.g. -n)")
    sup.set_defaults(func=_cmd_supervisord)

    enq = sub.add_parser("enqueue", help="add a job, or requeue failed jobs")
    enq.add_argument("queue")
    enq.add_argument("name", nargs="?", help="job name, e.g. organization.created")
    enq.add_argument("--data", default="{}", help="JSON payload (camelCase, as the Node producers send it)")
    enq.add_argument("--job-id", help="deterministic job id (adding it twice adds nothing)")
    enq.add_argument("--delay", type=int, help="milliseconds before the job may run")
    enq.add_argument("--requeue", metavar="JOB_ID", help="move one failed job back to wait")
    enq.add_argument(
        "--requeue-failed", action="store_true", help="move every failed job of QUEUE back to wait"
    )
    enq.add_argument("--yes", action="store_true", help="do not ask before --requeue-failed")
    enq.add_argument("--redis-url", help="defaults to $REDIS_URL")
    enq.set_defaults(func=_cmd_enqueue)

    acl = sub.add_parser(
        "redis-acl",
        help="print the ACL SETUSER lines of the pool's and the read-only tools' Redis users (least privilege)",
        description="Passwords from $MA_REDIS_POOL_PASSWORD and $MA_REDIS_READER_PASSWORD, printed as SHA-256; "
        "pipe into `redis-cli -u <admin url>` (docs/OPERATIONS.md: Least privilege).",
    )
    acl.add_argument("--pool-user", default="ma-pool")
    acl.add_argument("--reader-user", default="ma-reader")
    acl.set_defaults(func=_cmd_redis_acl)

    bil = sub.add_parser("billing", help="billing tooling: usage backfill, load test")
    bsub = bil.add_subparsers(dest="billing_command", required=True)
    for name, helptext in (
        ("backfill", "enqueue billing-usage.backfill jobs, one per period (idempotent)"),
        ("load-test", "stress the billing queues and report how they drained"),
    ):
        cmd = bsub.add_parser(name, help=helptext)
        cmd.add_argument("--org", required=True, help="organization id, e.g. org_acme")
        cmd.add_argument("--subscription", required=True, help="subscription id, e.g. sub_acme")
        cmd.add_argument("--redis-url", help="defaults to $REDIS_URL")
        cmd.add_argument(
            "--database-url", help="identity DB (read-only check of org/subscription); $DATABASE_URL"
        )
        cmd.set_defaults(func=_cmd_billing)
        if name == "backfill":
            cmd.add_argument("--start", required=True, help="first day, YYYY-MM-DD (UTC)")
            cmd.add_argument(
                "--end", required=True, help="day after the last one, YYYY-MM-DD (UTC, exclusive)"
            )
            cmd.add_argument("--resolution", choices=("hourly", "daily", "monthly"), default="daily")
            cmd.add_argument("--features", action="append", help="feature(s), comma-separated or repeated")
            cmd.add_argument(
                "--dry-run", action="store_true", help="show what would be enqueued; enqueue nothing"
            )
            cmd.add_argument(
                "--stagger",
                metavar="DURATION",
                help="spread the jobs over DURATION (90s, 30m, 2h) as delayed jobs; --dry-run shows when",
            )
        else:
            cmd.add_argument("--days", type=int, default=3)
            cmd.add_argument("--usage-jobs", type=int, default=25)
            cmd.add_argument("--invoices", type=_bool, default=False, help="true|false: add invoice jobs too")
            cmd.add_argument(
                "--timeout", type=float, default=300.0, help="seconds to wait for the queues to drain"
            )
    from pool import jobs_cli

    jobs_cli.add_parser(sub, _cmd_jobs)

    ident = sub.add_parser(
        "identity", help="identity operations: rotate a session (TokenService.rotateSession)"
    )
    isub = ident.add_subparsers(dest="identity_command", required=True)
    rot = isub.add_parser(
        "rotate-session",
        help="revoke a session's refresh and access tokens and reissue them with a fresh organization scope",
    )
    rot.add_argument("session_id", metavar="SESSION_ID", help="e.g. sess_4f2a…, as a pool slot logs it")
    rot.add_argument("--identity-url", help="defaults to $IDENTITY_BASE_URL")
    rot.add_argument("--redis-url", help="for the audit journal; defaults to $REDIS_URL")
    rot.set_defaults(func=_cmd_identity)

    scl = sub.add_parser(
        "scale", help="list each queue's process count, or set one queue's in a running supervisord"
    )
    scl.add_argument("queue", nargs="?", metavar="QUEUE", help="omit to list the current counts")
    scl.add_argument("n", nargs="?", type=int, metavar="N", help="the new number of processes (1-64)")
    scl.add_argument("-c", "--config", default="supervisord.conf")
    scl.add_argument("--supervisor", metavar="URL", help="default: unix://<config dir>/var/supervisor.sock")
    scl.set_defaults(func=_cmd_scale)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"ma-worker: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
