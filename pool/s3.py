"""The S3 client a pool process builds once at start when MA_EXPORT_URL is set (bulk.export streams there).

aiobotocore: botocore's own request signing, retries, presigning and credential chain on the aiohttp we already
use, so the standard AWS variables, profiles and instance or pod roles work as in every AWS tool, and any
S3-compatible store is one endpoint URL away (MA_S3_ENDPOINT_URL).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from pool.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


def s3_client(settings: Settings) -> AbstractAsyncContextManager[S3Client] | None:
    """The client as an async context (its HTTP connections close on exit), or None when exports stay local."""
    if settings.export_bucket is None:
        return None
    # imported here: botocore and aiobotocore cost a process ~40 MB, and only export slots need them
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        signature_version="s3v4",  # presigned URLs too (botocore would presign some with the retired SigV2)
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=10,
        read_timeout=120,
        # Whole-request checksums only where S3 requires them: S3-compatible stores differ in which of the
        # newer per-part checksum trailers they accept, and the result carries the object's SHA-256 anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # A custom endpoint (MinIO, moto, an IP) rarely resolves bucket.host names: address buckets by path.
        s3={"addressing_style": "path" if settings.MA_S3_ENDPOINT_URL else "auto"},
    )
    options: dict[str, Any] = {"config": config}
    region = settings.AWS_REGION or settings.AWS_DEFAULT_REGION
    if region:  # else the profile's region, else S3's global endpoint (us-east-1)
        options["region_name"] = region
    if settings.MA_S3_ENDPOINT_URL is not None:
        options["endpoint_url"] = str(settings.MA_S3_ENDPOINT_URL).rstrip("/")
    if settings.AWS_ACCESS_KEY_ID and settings.AWS_SECRET_ACCESS_KEY:
        options["aws_access_key_id"] = settings.AWS_ACCESS_KEY_ID
        options["aws_secret_access_key"] = settings.AWS_SECRET_ACCESS_KEY.get_secret_value()
        if settings.AWS_SESSION_TOKEN:
            options["aws_session_token"] = settings.AWS_SESSION_TOKEN.get_secret_value()
    # else: botocore's credential chain (shared config and profile, web identity, container or instance role)
    return get_session().create_client("s3", **options)  # type: ignore[no-any-return]
