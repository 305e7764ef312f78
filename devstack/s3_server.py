"""A real S3-compatible server for the local stack and the tests: moto's server mode as a child process of ours.

moto keeps buckets and objects in memory (large parts spill to temporary files): a restart starts empty, and
`ma-worker dev` creates the exports bucket each time. Any credentials are accepted; signatures are not checked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devstack import engines

DEV_BUCKET = "ma-exports"
DEV_PREFIX = "exports"
DEV_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "dev-access-key",
    "AWS_SECRET_ACCESS_KEY": "dev-secret-key",
    "AWS_REGION": "us-east-1",
}
"""What the dev stack's processes use (moto accepts any); real ones come from the standard AWS variables."""


@dataclass
class S3Server:
    log: Path
    port: int = field(default_factory=engines.free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Server:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server directly
            env={**os.environ, "MOTO_PORT": str(self.port)},
        )
        out.close()
        engines.wait_until(self._answers, "the S3 server (moto)", timeout, self.proc, self.log)
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def client(self) -> Any:  # boto3 ships no types
        """A blocking boto3 client with the dev credentials (boto3 comes with moto, in the dev extra)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=DEV_CREDENTIALS["AWS_REGION"],
            aws_access_key_id=DEV_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DEV_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str = DEV_BUCKET) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str = DEV_BUCKET, prefix: str = DEV_PREFIX) -> dict[str, str]:
        """What a pool process needs to export to `bucket` on this server."""
        return {
            "MA_EXPORT_URL": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            "MA_S3_ENDPOINT_URL": self.url,
            **DEV_CREDENTIALS,
        }

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
