"""The log handler: one flush per event-loop turn for info lines, at once for problems and off the loop."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator

import pytest

from pool.logs import Formatter, JobLines, LineHandler, ScrubSecrets


class Pipe:
    """A real pipe as the handler's stream (as supervisord gives the pool), read without blocking."""

    def __init__(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        self.reader = r
        self.stream = open(w, "w", buffering=1 << 16)  # noqa: SIM115 - closed by close()

    def read(self) -> str:
        try:
            return os.read(self.reader, 1 << 16).decode()
        except BlockingIOError:
            return ""

    def close(self) -> None:
        self.stream.close()
        os.close(self.reader)


@pytest.fixture
def piped() -> Iterator[tuple[logging.Logger, Pipe]]:
    pipe = Pipe()
    handler = LineHandler(pipe.stream)
    handler.setFormatter(Formatter())
    handler.addFilter(ScrubSecrets(["s3cr3t-service-role"]))
    logger = logging.getLogger("test.lines")
    logger.handlers[:] = [handler]
    logger.propagate, logger.level = False, logging.INFO
    yield logger, pipe
    logger.handlers.clear()
    pipe.close()


async def test_info_lines_of_one_loop_turn_go_out_together_at_the_next_turn(piped) -> None:
    logger, pipe = piped
    logger.info("0.00s q job#1 try=1 ok")
    logger.info("0.00s q job#2 try=1 ok")
    assert pipe.read() == ""  # still in this turn: nothing written to the pipe yet
    await asyncio.sleep(0)  # the point: exactly one event-loop turn
    lines = pipe.read().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["0.00s q job#1 try=1 ok", "0.00s q job#2 try=1 ok"]
    assert lines[0].split(" ")[2] == "INFO"


async def test_warnings_are_written_at_once_after_the_lines_before_them(piped) -> None:
    logger, pipe = piped
    logger.info("first")
    logger.warning("job failed: s3cr3t-service-role rejected")
    out = pipe.read()
    assert out.index("first") < out.index("job failed: *** rejected") and "s3cr3t" not in out


def test_lines_logged_off_the_loop_are_written_at_once(piped) -> None:
    logger, pipe = piped
    logger.info("starting")
    assert "starting" in pipe.read()


def test_a_loop_closed_before_its_flush_does_not_hold_back_the_next_loops_lines(piped) -> None:
    logger, pipe = piped

    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: (logger.info("from a loop that stops at once"), loop.stop()))
    loop.run_forever()
    loop.close()  # its scheduled flush never ran
    assert pipe.read() == ""

    async def next_loop() -> None:
        logger.info("from the next loop")
        await asyncio.sleep(0)  # one turn of the next loop: its scheduled flush runs

    asyncio.run(next_loop())
    out = pipe.read()
    assert "from a loop that stops at once" in out and "from the next loop" in out


def test_tracebacks_follow_their_line(piped) -> None:
    logger, pipe = piped
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("handler crashed")
    out = pipe.read()
    assert "handler crashed\nTraceback (most recent call last):" in out and "ValueError: boom" in out


def test_the_per_job_line_reads_as_any_other_info_line_and_is_scrubbed(piped) -> None:
    logger, pipe = piped
    saved = logging.root.handlers, logging.root.level
    logging.root.handlers = list(
        logger.handlers
    )  # our handler as the root's only one, as setup_logging leaves it
    logging.root.setLevel(logging.INFO)
    job_logger = logging.getLogger("jobs.test-lines")
    try:
        JobLines(job_logger).info("0.01s test-lines job.x#7 try=1 ok (s3cr3t-service-role)")
        job_logger.info("0.01s test-lines job.x#8 try=1 ok (s3cr3t-service-role)")
    finally:
        logging.root.handlers = saved[0]
        logging.root.setLevel(saved[1])
    fast, slow = pipe.read().splitlines()
    assert fast.split(" ", 2)[2] == "INFO    jobs.test-lines: 0.01s test-lines job.x#7 try=1 ok (***)"
    assert slow.split(" ", 2)[2] == "INFO    jobs.test-lines: 0.01s test-lines job.x#8 try=1 ok (***)"
    assert len(fast.split(" ", 2)[1]) == len(slow.split(" ", 2)[1]) == len("13:01:47,282")


def test_the_per_job_line_reaches_any_other_handler_through_logging(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="jobs.test-capture"):
        JobLines(logging.getLogger("jobs.test-capture")).info("0.01s q job#1 try=1 ok")
    assert [r.getMessage() for r in caplog.records] == ["0.01s q job#1 try=1 ok"]
