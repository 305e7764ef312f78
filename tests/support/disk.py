"""A full disk, for real: a 1 MiB tmpfs mounted for the test and filled to the last byte, so writes fail with
ENOSPC from the kernel itself. Mounting needs root (this sandbox runs tests as root); elsewhere the tests that
use it are skipped, saying why: RLIMIT_FSIZE, the only limit an unprivileged process can set, gives EFBIG."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def full_disk(mountpoint: Path) -> Iterator[Callable[[], None]]:
    """Mount a full filesystem at `mountpoint`; yield `free()`, which deletes the filler (all space back)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is staged with a tmpfs mount, which needs root")
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=True)
    filler = mountpoint / ".filler"
    try:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
        finally:
            os.close(fd)
        with pytest.raises(OSError) as refused:
            (mountpoint / ".probe").write_bytes(b"x")
        assert refused.value.errno == errno.ENOSPC
        (mountpoint / ".probe").unlink(missing_ok=True)
        yield lambda: filler.unlink()
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)
