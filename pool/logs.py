"""stdlib logging to stdout (supervisord captures and rotates it), with secrets scrubbed."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any


class ScrubSecrets(logging.Filter):
    """Last line of defence: no secret value ever reaches a log line, whoever formatted it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg, record.args = self.scrub(record.getMessage()), None  # formatted once, not again later
        return True


class Formatter(logging.Formatter):
    """`2026-11-28 13:01:47,282 INFO    name: message`, with the per-second part of the time cached.

    The one format we use, built with one f-string instead of logging's generic %-style pass over the record's
    dict (a third of the per-job line's cost); tracebacks and stack info are appended as logging does.
    """

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes every record at once; on the event loop, flushes once per loop turn instead of once per line.

    At thousands of jobs a second a flush per line is a write(2) per job into supervisord's pipe. Lines written in
    one turn of the loop go out together at the start of the next; warnings and errors, and anything logged off
    the loop (threads, start-up, shutdown), are flushed at once. A SIGKILL can lose at most the current turn's
    info lines; logging.shutdown() at exit flushes the rest.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._flush_on: asyncio.AbstractEventLoop | None = None
        """The loop a flush is scheduled on (a loop closed before running it does not block the next one)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)
            return
        self._flush_later() if record.levelno < logging.WARNING else self.flush()

    def write_info(self, name: str, text: str) -> bool:
        """Write `text` as an INFO line of logger `name` exactly as `emit` would, without building a LogRecord.

        For the per-job line (see JobLines). False, with nothing written, when this handler's set-up needs
        logging's full path: a level above INFO, a filter other than ScrubSecrets, another formatter.
        """
        formatter = self.formatter
        if self.level > logging.INFO or type(formatter) is not Formatter:
            return False
        for check in self.filters:
            if type(check) is not ScrubSecrets:
                return False
            text = check.scrub(text)
        line = f"{formatter.stamp(time.time())} INFO    {name}: {text}{self.terminator}"
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line)
            except Exception:  # noqa: BLE001 - as emit: never raise into the caller
                return False
        self._flush_later()
        return True

    def _flush_later(self) -> None:
        scheduled = self._flush_on
        if scheduled is not None and scheduled.is_running():
            return  # this turn's flush is on its way (asking asyncio for the loop is a getpid(2) on 3.11)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_on = None
        self.flush()


class JobLines:
    """The per-job success line of one logger: `logger.info(text)`, minus the LogRecord when nothing needs one.

    One line per job is the pool's hottest log call. When the logger passes INFO, has no handlers or filters of
    its own up to the root (checked once, when the dispatcher is built, after setup_logging), and the root's only
    handler is our LineHandler (checked on every line), the line is written by that handler
    directly (same format, same secret scrubbing, same stream and flush rules, same order as every other line);
    in any other set-up (a test's capture handler, another formatter, a raised level) it is `logger.info`.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        chain, plain = logger, True
        while chain is not None and chain is not logging.root:
            plain = plain and not chain.handlers and not chain.filters and chain.propagate
            chain = chain.parent  # type: ignore[assignment]
        self._plain = plain

    def info(self, text: str) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handlers = logging.root.handlers
        if (
            self._plain
            and len(handlers) == 1
            and type(handlers[0]) is LineHandler
            and handlers[0].write_info(logger.name, text)
        ):
            return
        logger.info("%s", text)


def setup_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    # One line per job is on the hot path: skip what our format never shows (caller frame, thread, process).
    logging._srcfile = None  # documented switch: no findCaller() per record
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+; harmless before
    handler = LineHandler(sys.stdout)
    handler.setFormatter(Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(ScrubSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "asyncio", "sqlalchemy.engine", "stripe", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
