"""One process per cell at a time: an exclusive ``flock`` on a lock file that names its holder's PID.

Two runs of one cell would otherwise interleave their snapshots and records (a later run could
evaluate an earlier run's weights under its own config). The kernel drops the lock when its holder dies,
so a killed run never leaves a stale lock behind; the file itself is removed on a clean exit.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kind_bench.errors import UserError


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock at ``path`` for the block, or raise a one-line UserError naming the holder (in a
    multi-process run, rank 0 holds it for every rank). When the block is refused (a UserError), the
    folders made for the lock are removed again if nothing else was written into them."""
    from kind_bench.distributed import is_main
    from kind_bench.io import no_folders_left_on_refusal

    if not is_main():
        yield
        return
    with no_folders_left_on_refusal(path.parent), _held(path, what):
        yield


@contextmanager
def _held(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{what} is being run by process {holder} (lock {path}): wait for it to finish "
                            "or stop it, then rerun") from None
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
