"""An export streamed to S3 (MA_EXPORT_URL): one multipart upload, a part at a time as the gzip stream fills it.

- Memory is about two parts (MA_EXPORT_PART_MIB, 8 MiB by default): the one on the wire and the one filling;
  when the store is slower than the export, the export waits (nothing spills to disk).
- The object appears only when the upload completes (S3 shows no partial object), under the same name on every
  attempt, so a retried job restarts the stream and replaces nothing but its own earlier result.
- A failed or cancelled attempt (a forced shutdown cancels it) aborts its upload (the parts already sent are deleted). An attempt that died
  without a chance to (SIGKILL, host lost) leaves its upload behind: the next attempt aborts every unfinished
  upload of the same key before it starts. A bucket lifecycle rule (AbortIncompleteMultipartUpload) is still
  worth having for exports that are never retried.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from handlers.errors import PermanentError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

MAX_PARTS = 10_000
"""S3's limit of parts per upload."""


class _Parts:
    """The part being filled: the compressing thread appends, the event loop takes it between batches."""

    def __init__(self) -> None:
        self.data = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.data.write(data)

    def take(self) -> io.BytesIO:
        """The part so far, rewound for sending (handed over, not copied: botocore and aiohttp read a file
        in chunks, where bytes would be copied whole once more), and a fresh one to fill."""
        part, self.data = self.data, io.BytesIO()
        part.seek(0)
        return part

    def flush(self) -> None:
        return None


class S3Upload:
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        part_size: int,
        url_ttl_s: int,
        log: logging.Logger,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.part_size = part_size
        self.url_ttl_s = url_ttl_s
        self.log = log
        self.location = f"s3://{bucket}/{key}"
        self.presigned_url = ""
        self.expires_at = ""
        self._filling = _Parts()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._sending: asyncio.Future[None] | None = None

    async def open(self) -> _Parts:
        await self._abort_earlier_attempts()
        created = await self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            ContentType="application/gzip",
            ContentDisposition=f'attachment; filename="{self.key.rsplit("/", 1)[-1]}"',
        )
        self._upload_id = created["UploadId"]
        return self._filling

    async def written(self) -> None:
        if self._filling.data.tell() >= self.part_size:
            await self._ship()

    async def commit(self) -> None:
        if self._filling.data.tell() or not self._parts:
            await self._ship()  # the last part may be smaller than the others
        await self._drain()
        assert self._upload_id is not None, "opened"
        await self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None
        self.presigned_url = await self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key}, ExpiresIn=self.url_ttl_s
        )
        self.expires_at = datetime.fromtimestamp(time.time() + self.url_ttl_s, UTC).isoformat(
            timespec="seconds"
        )

    async def abandon(self) -> None:
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.cancel()
            await asyncio.wait([sending])  # its outcome no longer matters; the abort below removes the part
        if self._upload_id is not None:
            # shielded: a second cancellation while aborting still lets the abort reach the store
            await asyncio.shield(self._abort(self._upload_id, "this attempt did not finish"))
            self._upload_id = None

    async def _ship(self) -> None:
        body = self._filling.take()
        await self._drain()  # one part on the wire at a time, while the export fills the next
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise PermanentError(
                f"the export needs more than {MAX_PARTS} parts of {self.part_size >> 20} MiB: raise MA_EXPORT_PART_MIB"
            )
        self._sending = asyncio.ensure_future(self._send(number, body))

    async def _drain(self) -> None:
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending

    async def _send(self, number: int, body: io.BytesIO) -> None:
        assert self._upload_id is not None, "opened"
        sent = await self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def _abort_earlier_attempts(self) -> None:
        from botocore.exceptions import ClientError  # here: only export slots to S3 load botocore

        try:
            listed = await self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key)
        except ClientError as error:  # e.g. no s3:ListBucketMultipartUploads: the export itself can go on
            self.log.warning("could not look for unfinished uploads of %s: %s", self.location, error)
            return
        for upload in listed.get("Uploads", []):
            if upload.get("Key") == self.key and "UploadId" in upload:
                await self._abort(upload["UploadId"], "an earlier attempt left it unfinished")

    async def _abort(self, upload_id: str, why: str) -> None:
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        except Exception as error:  # noqa: BLE001 - best-effort clean-up: say what is left, never mask the cause
            self.log.warning(
                "could not abort the upload %s of %s (%s): %s; the next attempt aborts it, or the bucket's"
                " AbortIncompleteMultipartUpload rule",
                upload_id,
                self.location,
                why,
                error,
            )
        else:
            self.log.info("aborted the upload %s of %s: %s", upload_id, self.location, why)
