"""Where an export's gzip stream goes: a local file (MA_EXPORT_DIR, the default) or an S3 object (`s3_upload.py`).

The export compresses in a thread and hands the compressed bytes to the destination's `Output` from that thread;
between two batches, with no thread writing, it calls `written()` so the destination can ship what is complete.
Either the export ends with `commit()` (the result appears under its final name, whole) or with `abandon()`
(nothing is left behind: no partial file, no unfinished upload), also when the job is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Protocol

from handlers.bulk.s3_upload import S3Upload
from handlers.context import JobContext
from handlers.errors import disk_full


class Output(Protocol):
    """The compressed bytes' sink, called from the compressing thread only."""

    def write(self, data: bytes) -> int: ...

    def flush(self) -> None: ...


class Destination(Protocol):
    location: str
    """Where the export ends up, for log lines (no credentials, no signed URLs)."""

    async def open(self) -> Output: ...

    async def written(self) -> None:
        """No thread is writing: ship what is complete."""

    async def commit(self) -> None:
        """Everything is written: make the export visible under its final name."""

    async def abandon(self) -> None:
        """The export failed or was cancelled: leave nothing behind."""


class LocalFile:
    """A file in MA_EXPORT_DIR, written under a temporary name in the same directory and renamed when complete."""

    def __init__(self, final: Path, job_id: str) -> None:
        self.final = final
        self.partial = final.parent / f".{final.name}.{job_id}.part"
        self.location = str(final)
        self._file: _File | None = None

    async def open(self) -> Output:
        await asyncio.to_thread(self.final.parent.mkdir, parents=True, exist_ok=True)
        self._file = await asyncio.to_thread(_File, self.partial, self.final)
        return self._file

    async def written(self) -> None:
        return None

    async def commit(self) -> None:
        assert self._file is not None, "opened"
        await asyncio.to_thread(self._file.sync_and_close)
        await asyncio.to_thread(os.replace, self.partial, self.final)

    async def abandon(self) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.discard)
        await asyncio.to_thread(self.partial.unlink, missing_ok=True)


class _File:
    """The partial file; a full disk is reported naming the final one (handlers/errors.py `disk_full`)."""

    def __init__(self, path: Path, final: Path) -> None:
        self.final = final
        try:
            self.raw = open(path, "wb")  # noqa: SIM115 - closed by commit or abandon
        except OSError as error:
            raise disk_full(error, final) from error

    def write(self, data: bytes) -> int:
        try:
            return self.raw.write(data)
        except OSError as error:
            raise disk_full(error, self.final) from error

    def flush(self) -> None:
        try:
            self.raw.flush()
        except OSError as error:
            raise disk_full(error, self.final) from error

    def discard(self) -> None:
        """Close without raising: on a full disk, close() fails again flushing the buffer (the file is closed all
        the same), and that error would replace the one that made us abandon, and leave the partial file."""
        with contextlib.suppress(OSError):
            self.raw.close()

    def sync_and_close(self) -> None:
        try:
            self.raw.flush()
            os.fsync(self.raw.fileno())
            self.raw.close()
        except OSError as error:
            raise disk_full(error, self.final) from error


def destination_for(ctx: JobContext, name: str) -> LocalFile | S3Upload:
    """MA_EXPORT_URL's bucket when set, else a file in MA_EXPORT_DIR."""
    settings = ctx.settings
    if settings.export_bucket is None:
        return LocalFile(Path(settings.MA_EXPORT_DIR) / name, ctx.job_id)
    bucket, prefix = settings.export_bucket
    return S3Upload(
        ctx.s3,
        bucket,
        f"{prefix}/{name}" if prefix else name,
        part_size=settings.MA_EXPORT_PART_MIB << 20,
        url_ttl_s=settings.MA_EXPORT_URL_TTL_S,
        log=ctx.log,
    )
