"""One settings object, read once at process start from the environment (runbook names, verbatim)."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import (
    AfterValidator,
    AnyUrl,
    Field,
    PostgresDsn,
    RedisDsn,
    SecretStr,
    UrlConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import MultiHostUrl
from pydantic_settings import BaseSettings, SettingsConfigDict

EX_CONFIG = 78  # sysexits.h: configuration error
_S = TypeVar("_S", bound=BaseSettings)


def _names_master(url: MultiHostUrl) -> MultiHostUrl:
    if not (url.path or "").strip("/"):
        raise ValueError("a redis+sentinel:// URL ends with the master's name: .../<master name>[/db]")
    return url


SentinelDsn = Annotated[
    MultiHostUrl,
    UrlConstraints(allowed_schemes=["redis+sentinel", "rediss+sentinel"], default_port=26379),
    AfterValidator(_names_master),
]
"""`redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>[/db]`: Redis behind Sentinel
(pool/connection.py asks the sentinels for the master and follows a failover)."""
RedisUrl = RedisDsn | SentinelDsn


def redis_passwords(url: RedisUrl) -> list[str]:
    """The passwords in a Redis URL (a Sentinel URL names several hosts), for the log scrubber."""
    if isinstance(url, MultiHostUrl):
        return [p for host in url.hosts() if (p := host.get("password"))]
    return [url.password] if url.password else []


class Settings(BaseSettings):
    """Environment of a pool process. Names without a prefix are the runbook's."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    REDIS_URL: RedisUrl
    """Redis connection string (the shared Redis the Node producers use); `redis+sentinel://` for Sentinel."""
    DATABASE_URL: PostgresDsn
    """Identity database; the worker only reads it."""
    TASKS_DATABASE_URL: PostgresDsn
    """Tasks database; the worker owns its schema (Alembic)."""
    IDENTITY_BASE_URL: AnyUrl
    """Identity HTTP API base for fallback HTTP calls."""
    SUPABASE_SERVICE_ROLE_KEY: SecretStr
    """Privileged Supabase operations (email, user context). Never logged."""
    SUPABASE_URL: AnyUrl | None = None
    """Supabase base URL for the auth admin API; defaults to IDENTITY_BASE_URL."""
    TASKS_PRODUCT_SLUG: str = "tasks"
    """Product whose default entitlements are seeded when an organization is bootstrapped."""
    TASKS_GRAFANA_DASHBOARD_URL: str | None = None
    """Where the Grafana dashboard lives; shown by ma-top."""
    STRIPE_SECRET_KEY: SecretStr | None = None
    STRIPE_WEBHOOK_SECRET: SecretStr | None = None
    STRIPE_API_BASE: AnyUrl | None = None
    """Stripe API base; set to the Stripe double locally."""
    MA_STRIPE_NETWORK_RETRIES: int = Field(default=2, ge=0, le=10)
    """Stripe client's own retries of 5xx/connection errors (then the job's backoff)."""

    MA_SHUTDOWN_GRACE: float = Field(default=25.0, gt=0)
    """Seconds in-flight jobs get after SIGTERM before a forced close (below supervisord's stopwaitsecs)."""
    MA_HEARTBEAT_INTERVAL: float = Field(default=5.0, gt=0, le=10)
    """Seconds between a slot's heartbeats (its in-flight jobs, counters, RSS and CPU); at most half of the
    heartbeat's 20 s TTL."""
    MA_RSS_TRAIL_INTERVAL: float = Field(default=60.0, gt=0)
    """Seconds between the points of the RSS trail (60 points) a heartbeat carries: an hour by default."""
    MA_PROCESS_NAME: str = ""
    """supervisord process name of this slot (supervisord sets SUPERVISOR_PROCESS_NAME; we read either)."""
    SUPERVISOR_PROCESS_NAME: str = ""
    SUPERVISOR_GROUP_NAME: str = ""
    MA_QUEUE_TABLE: str = "pool.queue_table:QUEUES"
    """Where the queue table lives (module:attribute). Tests and experiments may point elsewhere."""
    MA_EXPORT_DIR: str = "var/exports"
    """Where bulk.export writes its gzip files (temporary name, renamed when complete)."""
    MA_EXPORT_URL: str | None = None
    """s3://bucket/prefix: bulk.export streams its gzip file there (a multipart upload, part by part) instead of
    into MA_EXPORT_DIR. Any S3-compatible store (MA_S3_ENDPOINT_URL); credentials from the standard AWS
    variables (or, when those are unset, the AWS SDK's own chain: profile, instance or pod role)."""
    MA_S3_ENDPOINT_URL: AnyUrl | None = None
    """An S3-compatible endpoint (MinIO, R2, the dev stack's moto server); unset means AWS S3 itself."""
    MA_EXPORT_URL_TTL_S: int = Field(default=86_400, ge=1, le=604_800)
    """How long the presigned download URL in an S3 export's result stays valid (SigV4 allows 7 days at most;
    temporary credentials end it sooner)."""
    MA_EXPORT_PART_MIB: int = Field(default=8, ge=5, le=5_120)
    """Size of an S3 export's upload parts (S3: 5 MiB to 5 GiB, at most 10,000 parts, so 8 MiB parts carry
    up to ~78 GiB); memory is about two parts."""
    AWS_ACCESS_KEY_ID: str | None = None
    AWS_SECRET_ACCESS_KEY: SecretStr | None = None
    """Never logged."""
    AWS_SESSION_TOKEN: SecretStr | None = None
    AWS_REGION: str | None = None
    AWS_DEFAULT_REGION: str | None = None
    MA_BULK_ITEM_CONCURRENCY: int = Field(default=8, ge=1, le=64)
    """Identity admin calls in flight per bulk activate/suspend job."""
    MA_INVOICE_DIR: str = "var/invoices"
    """Where invoice PDFs are written (temporary name, renamed when complete)."""
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None
    """OTLP/HTTP collector base URL: with the `otel` extra installed, each job is a span continuing the Node
    producer's trace (pool/tracing.py). The SDK reads the other OTEL_* variables itself."""
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: str | None = None
    """The traces endpoint itself, when it is not <OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces."""
    MA_EVENT_LOOP: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop `ma-worker run` runs on: uvloop (libuv; less CPU per job, see bench/REPORT.md) or the
    standard library's asyncio loop. uvloop falls back to asyncio, with a warning, where it is not installed."""
    MA_STOCK_CLIENTS: bool = False
    """1: run bullmq's own Worker and redis-py's own pool and client instead of our faster subclasses (for
    when a library upgrade is suspected; slower, and a foreign producer's non-JSON job then stalls instead of
    failing with a reason)."""

    MA_REDIS_AUTOPIPELINE: bool = True
    """Write the pool's Redis commands of one event-loop turn together on one shared connection (as ioredis does
    for the Node workers; pool/connection.py `AutoPipeline`). 0: a pooled connection per command."""

    @field_validator("MA_EXPORT_URL")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None  # an empty variable means unset
        if value is not None and (not value.startswith("s3://") or not value[5:].split("/")[0]):
            raise ValueError("must be s3://bucket or s3://bucket/prefix")
        return value

    @property
    def export_bucket(self) -> tuple[str, str] | None:
        """MA_EXPORT_URL as (bucket, key prefix without slashes at its ends), or None for the local directory."""
        if self.MA_EXPORT_URL is None:
            return None
        bucket, _, prefix = self.MA_EXPORT_URL[5:].partition("/")
        return bucket, prefix.strip("/")

    @property
    def process_name(self) -> str:
        if self.MA_PROCESS_NAME:
            return self.MA_PROCESS_NAME
        if self.SUPERVISOR_PROCESS_NAME:  # as supervisorctl names it: group:process
            return (
                f"{self.SUPERVISOR_GROUP_NAME or self.SUPERVISOR_PROCESS_NAME}:{self.SUPERVISOR_PROCESS_NAME}"
            )
        return ""


_URL_PASSWORD = re.compile(r"(://[^:/@,]*:)[^@/]*@")
"""The password in a URL's user info (`scheme://user:PASSWORD@host`), never shown back."""


def _describe(error: ValidationError, model: type[BaseSettings] | None = None) -> str:
    problems = []
    by_field: dict[str, list[Any]] = {}
    for item in error.errors():  # a union (REDIS_URL: a URL or a Sentinel URL) gives one error per member
        by_field.setdefault(str(item["loc"][0]) if item["loc"] else "environment", []).append(item)
    for name, items in by_field.items():
        # the member whose scheme matched says what is wrong; otherwise the first
        item = next((i for i in items if i["type"] != "url_scheme"), items[0])
        if item["type"] == "missing":
            field = (model or Settings).model_fields.get(name)
            doc = field.description.split(".")[0] if field and field.description else ""
            problems.append(f"{name} is not set" + (f" ({doc})" if doc else ""))
        else:
            secret = "SECRET" in name or "KEY" in name or "TOKEN" in name
            shown = "<hidden>" if secret else repr(_URL_PASSWORD.sub(r"\1<hidden>@", str(item.get("input"))))
            problems.append(f"{name} is malformed: {item['msg']} (got {shown})")
    return "; ".join(problems)


def load_settings(model: type[_S] = Settings) -> _S:  # type: ignore[assignment]
    """Read the environment once; on a missing or malformed variable exit with one line naming it."""
    try:
        return model()
    except ValidationError as error:
        fail(_describe(error, model))


def fail(message: str) -> NoReturn:
    print(f"ma-worker: configuration error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG)
