"""One campaign at a time per output folder: an advisory lock on ``OUT/.lock``.

Two processes measuring into the same ``results.sqlite`` would both plan the same conditions
and the second to finish one would die on its primary key. The lock is taken before anything
is planned and is released by the OS when the process ends, crash or not, so a stale lock
never blocks a rerun.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from entroguard.errors import ResultStoreError

LOCK_NAME = ".lock"


class OutDirLock:
    """Exclusive lock on ``out_dir`` for the life of a ``with`` block.

    Raises :class:`ResultStoreError` at once (no waiting) when another process holds it.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> OutDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ResultStoreError(
                f"another campaign (process {holder}) is measuring into {self.path.parent}: "
                "wait for it to finish, or give this one another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
