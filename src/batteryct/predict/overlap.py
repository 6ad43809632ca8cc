"""Reading and writing in threads, overlapped with the engine's work on the current unit.

`ReadAhead` reads the image in bands of whole chunks, the next band while the units of the
current one are segmented; `BackgroundWriter` writes a unit's outputs (one thread per output
array: zstd compression releases the GIL) while the next unit is segmented, then records the
unit as done and releases its lock. At most two bands are held and one unit written behind, so
memory stays that of two bands and a few slabs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from batteryct.greyvalues import GreyScale
from batteryct.io import Volume
from batteryct.locks import FileLock
from batteryct.predict.volume import AXIS_INDEX, CompletionRecord, read_block

WRITE_THREADS = 3
"""Output arrays written at once (labels, entropy, probabilities)."""
BAND_BYTES_MAX = 2 * 1024**3
"""Largest band of the image read at once (2 GiB; two are held: the band in use and the next)."""

T = TypeVar("T")
Reader = TypeVar("Reader", bound="_ReadingThread")
Band = tuple[int, int]
"""First and last + 1 slices of a band along the prediction axis."""


class Unit(Protocol):
    """What the reader and writer need of a unit of work."""

    name: str
    start: int
    stop: int


class _ReadingThread:
    """A reader that owns one thread, shut down on leaving its `with` block (reads not yet
    started are cancelled, the one under way is waited for)."""

    def __init__(self, name: str) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    def __enter__(self: Reader) -> Reader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class ReadAhead(_ReadingThread):
    """Slices of units, read in bands of whole chunks along the axis while the units before
    are segmented.

    A band spans the image's chunks that a unit touches along the axis and serves every later
    unit inside it, so each chunk is decompressed once (twice where units straddle chunks)
    instead of once per unit: slabs of 16 slices in chunks 256 deep would otherwise decompress
    every chunk 16 times. The band in use is held, and the next band is read in a thread
    meanwhile (unless `prefetch` is False). Where a band would exceed BAND_BYTES_MAX, the unit's
    slices alone are read; a unit asked for out of order is read at once.
    """

    def __init__(
        self,
        image: Volume,
        axis: str,
        scale: GreyScale,
        units: Sequence[Unit],
        prefetch: bool = True,
    ) -> None:
        self.image, self.axis, self.scale, self.prefetch = image, axis, scale, prefetch
        self.bands: dict[str, Band] = {}  # the band each unit is served from, taken in order
        band: Band | None = None
        for unit in units:
            if band is None or not _inside(unit, band):
                band = self._band(unit)
            self.bands[unit.name] = band
        self.next_band: dict[str, Band | None] = {}  # the first band after a unit's own
        band_after: Band | None = None  # of the unit after, and its next band
        next_after: Band | None = None
        for unit in reversed(units):
            band = self.bands[unit.name]
            following = band_after if band_after != band else next_after
            self.next_band[unit.name] = following
            band_after, next_after = band, following
        super().__init__("batteryct-read")
        self.held: tuple[Band, np.ndarray] | None = None
        self.ahead: tuple[Band, Future[np.ndarray]] | None = None

    def _band(self, unit: Unit) -> Band:
        """The slices to read for `unit`: the whole chunks it touches, or its own slices where
        those chunks exceed BAND_BYTES_MAX."""
        index = AXIS_INDEX[self.axis]
        edge, size = self.image.chunks[index], self.image.shape[index]
        start, stop = unit.start // edge * edge, min(-(-unit.stop // edge) * edge, size)
        if (stop - start) * (self.image.nbytes // size) > BAND_BYTES_MAX:
            return unit.start, unit.stop
        return start, stop

    def _read(self, band: Band) -> np.ndarray:
        """The band's slices, slices first, grey values checked."""
        return read_block(self.image, self.axis, *band, self.scale)

    def get(self, unit: Unit) -> np.ndarray:
        """The unit's slices (slices first, as stored; a view of its band); starts reading the
        band after it."""
        if self.held is None or not _inside(unit, self.held[0]):
            band = self.bands.get(unit.name) or self._band(unit)
            ahead, self.ahead = self.ahead, None
            data = ahead[1].result() if ahead and ahead[0] == band else self._read(band)
            self.held = (band, data)
        following = self.next_band.get(unit.name)
        if self.prefetch and self.ahead is None and following not in (None, self.held[0]):
            self.ahead = (following, self.pool.submit(self._read, following))
        (first, _), data = self.held
        return data[unit.start - first : unit.stop - first]


class Prefetch(_ReadingThread, Generic[T]):
    """`read(unit)` of units taken in the given order, each read in a thread while the unit
    before it is worked on; a unit asked for out of order is read at once. One unit's read is
    held ahead (the scratch probabilities of a multi-axis run's last pass: while the engine
    segments one slab, the next slab's are decompressed)."""

    def __init__(self, read: Callable[[Unit], T], units: Sequence[Unit]) -> None:
        self.read = read
        self.following = {unit.name: after for unit, after in itertools.pairwise(units)}
        super().__init__("batteryct-prefetch")
        self.ahead: tuple[str, Future[T]] | None = None

    def get(self, unit: Unit) -> T:
        """`read(unit)`; starts reading the unit after it."""
        ahead, self.ahead = self.ahead, None
        result = ahead[1].result() if ahead and ahead[0] == unit.name else self.read(unit)
        following = self.following.get(unit.name)
        if following is not None:
            self.ahead = (following.name, self.pool.submit(self.read, following))
        return result


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


def _inside(unit: Unit, band: Band) -> bool:
    return band[0] <= unit.start and unit.stop <= band[1]


def _write(array: Any, selection: tuple[slice, ...], values: np.ndarray) -> None:
    array[selection] = values
