"""stdlib logging to stdout (supervisord captures and rotates it), with secrets scrubbed."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable


class ScrubSecrets(logging.Filter):
    """Last line of defence: no secret value ever reaches a log line, whoever formatted it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            for secret in self.secrets:
                if secret in message:
                    message = message.replace(secret, "***")
            record.msg, record.args = message, None  # formatted once, not again by the formatter
        return True


class Formatter(logging.Formatter):
    """`2026-11-28 13:01:47,282 INFO    name: message`, with the per-second part of the time cached."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int(record.msecs):03d}"


def setup_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    # One line per job is on the hot path: skip what our format never shows (caller frame, thread, process).
    logging._srcfile = None  # type: ignore[attr-defined]  # documented switch: no findCaller() per record
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(ScrubSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "asyncio", "sqlalchemy.engine", "stripe", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
