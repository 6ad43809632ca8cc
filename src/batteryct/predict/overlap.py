"""Reading and writing in threads, overlapped with the engine's work on the current unit.

`ReadAhead` reads the next unit's slices while the current one is segmented; `BackgroundWriter`
writes a unit's outputs (one thread per output array: zstd compression releases the GIL) while
the next unit is segmented, then records the unit as done and releases its lock. At most one
unit is read ahead and one written behind, so memory stays that of a few slabs.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from batteryct.greyvalues import GreyScale
from batteryct.io import Volume
from batteryct.locks import FileLock
from batteryct.predict.volume import CompletionRecord, read_block

WRITE_THREADS = 3
"""Output arrays written at once (labels, entropy, probabilities)."""


class Unit(Protocol):
    """What the reader and writer need of a unit of work."""

    name: str
    start: int
    stop: int


class ReadAhead:
    """Slices of units in the order they are asked for, each read while the one before it is
    segmented (a unit asked for out of order is read at once)."""

    def __init__(self, image: Volume, axis: str, scale: GreyScale, units: Sequence[Unit]) -> None:
        self.image, self.axis, self.scale = image, axis, scale
        self.following = {u.name: units[i + 1] for i, u in enumerate(units[:-1])}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="batteryct-read")
        self.ahead: tuple[str, Future[np.ndarray]] | None = None

    def _read(self, unit: Unit) -> np.ndarray:
        return read_block(self.image, self.axis, unit.start, unit.stop, self.scale)

    def get(self, unit: Unit) -> np.ndarray:
        """The unit's slices (slices first, as stored); starts reading the next unit's."""
        ahead, self.ahead = self.ahead, None
        stack = ahead[1].result() if ahead and ahead[0] == unit.name else self._read(unit)
        following = self.following.get(unit.name)
        if following is not None:
            self.ahead = (following.name, self.pool.submit(self._read, following))
        return stack

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class BackgroundWriter:
    """Writes of one unit at a time in threads; the unit is marked done (by `job`) and its lock
    released once all its writes are in place. A failed write is raised by the next `submit` or
    at the end of the `with` block, and its unit stays undone."""

    def __init__(self, record: CompletionRecord, job: str) -> None:
        self.record, self.job = record, job
        self.pool = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="batteryct-write")
        self.behind: tuple[Unit, FileLock, list[Future[None]]] | None = None

    def submit(
        self, writes: list[tuple[Any, tuple[slice, ...], np.ndarray]], unit: Unit, lock: FileLock
    ) -> None:
        """Write each (array, selection, values) in the background; once all are written, mark
        `unit` done and release its held `lock`. Waits for the unit before it first."""
        self.wait()
        futures = [self.pool.submit(_write, *write) for write in writes]
        self.behind = (unit, lock, futures)

    def wait(self) -> None:
        """Finish the unit being written: mark it done when all its writes succeeded, release
        its lock either way; raises the first failed write."""
        if self.behind is None:
            return
        (unit, lock, futures), self.behind = self.behind, None
        try:
            for future in futures:
                future.result()
            self.record.mark(unit.name, by=self.job)
        finally:
            lock.release()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error is None:
                self.wait()
                return
            with suppress(Exception):  # another error is on its way: report that one
                self.wait()
        finally:
            self.pool.shutdown(wait=True)


def _write(array: Any, selection: tuple[slice, ...], values: np.ndarray) -> None:
    array[selection] = values
