"""Advisory file locks between processes, on one machine or across nodes of a shared filesystem.

Locks are `fcntl.flock` locks on an open file: the kernel drops them when the process holding
them exits or is killed, so a crashed job never leaves a lock behind, and a process waiting for
it goes on. Shared (reader) locks let many jobs work on one thing while an exclusive lock waits
for all of them (the `filelock` package has no shared locks over `flock`). A filesystem shared
between nodes must support locks (NFSv4; Lustre mounted with `-o flock`; GPFS).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


class FileLock:
    """A lock on the file at `path` (created when first locked), held through one descriptor.

    Used as a context manager it is held exclusively, waiting for other holders.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, shared: bool = False, wait: bool = True) -> bool:
        """Take the lock (or change a held lock to `shared` or exclusive); False when `wait` is
        False and another process holds a lock that conflicts."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(self._fd, mode)
        except BlockingIOError:
            self.release()
            return False
        return True

    def release(self) -> None:
        """Let go of the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
