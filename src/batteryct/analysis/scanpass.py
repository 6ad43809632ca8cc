"""One streaming pass over a label volume: everything that can be computed chunk by chunk.

A label volume is visited block by block (one block = one storage chunk, or a multiple of it).
Each block yields a small `BlockStats` (its class histogram per depth slice, per-class sum
projections of its in-plane tile, first/last depth of chosen classes per column); blocks are folded
into a `ScanStats` that holds only 1D profiles and 2D maps. Peak memory is a few blocks plus the
2D maps, whatever the volume size.

Blocks can be computed by a thread pool (`engine="threads"`, the default) or as dask tasks over the
same blocks (`engine="dask"`, which runs on any dask scheduler, a distributed cluster included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batteryct.errors import BatteryCTError

NO_INDEX = np.iinfo(np.int32).max
"""Sentinel of `first` for a column without the class (`last` uses -1)."""


class LabelValueError(BatteryCTError, ValueError):
    """A label volume holds values that are not ids of the class table."""


@dataclass
class BlockStats:
    """What one block contributes; `origin` is its (depth, row, col) start."""

    origin: tuple[int, int, int]
    shape: tuple[int, int, int]
    hist: np.ndarray
    """(block depth, 256) voxel counts per depth slice and label value."""
    sums: dict[int, np.ndarray]
    """class id -> (rows, cols) count along depth, only for classes present in the block."""
    first: dict[int, np.ndarray]
    """edge class id -> (rows, cols) first depth index (global) with the class, NO_INDEX if none."""
    last: dict[int, np.ndarray]


def block_stats(
    block: np.ndarray,
    origin: tuple[int, int, int],
    map_classes: Sequence[int],
    edge_classes: Sequence[int],
) -> BlockStats:
    """Statistics of one (depth, rows, cols) block of integer labels."""
    depth = block.shape[0]
    if block.dtype != np.uint8:
        if block.size and (block.min() < 0 or block.max() > 255):
            bad = np.unique(block[(block < 0) | (block > 255)])
            raise _BadValuesError(origin, [int(v) for v in bad[:10]])
        block = block.astype(np.uint8)
    # One bincount gives the class histogram of every depth slice (profiles, totals, value check).
    index_dtype = np.uint16 if depth * 256 <= np.iinfo(np.uint16).max + 1 else np.int32
    offsets = (np.arange(depth, dtype=index_dtype) * 256)[:, None, None]
    index = block.astype(index_dtype) + offsets
    hist = np.bincount(index.ravel(), minlength=depth * 256).reshape(depth, 256)
    present = hist.sum(axis=0)
    sums: dict[int, np.ndarray] = {}
    first: dict[int, np.ndarray] = {}
    last: dict[int, np.ndarray] = {}
    plane = block.shape[1:]
    for cid in set(map_classes) | set(edge_classes):
        if present[cid] == 0:
            continue
        mask = block == cid
        if cid in map_classes:
            sums[cid] = np.add.reduce(mask, axis=0, dtype=np.uint16 if depth < 65536 else np.int32)
        if cid in edge_classes:
            lo = np.full(plane, NO_INDEX, np.int32)
            hi = np.full(plane, -1, np.int32)
            for d in range(depth - 1, -1, -1):
                np.copyto(lo, origin[0] + d, where=mask[d])
            for d in range(depth):
                np.copyto(hi, origin[0] + d, where=mask[d])
            first[cid], last[cid] = lo, hi
    return BlockStats(origin, block.shape, hist, sums, first, last)


class _BadValuesError(Exception):
    def __init__(self, origin: tuple[int, int, int], values: list[int]) -> None:
        super().__init__(origin, values)
        self.origin, self.values = origin, values


@dataclass
class ScanStats:
    """Everything the streaming pass measures for one scan (counts in voxels)."""

    shape: tuple[int, int, int]
    profiles: np.ndarray
    """(depth, n_ids) voxel count of each class id per depth slice."""
    sums: np.ndarray
    """(n_map_classes, rows, cols) number of voxels of each map class along depth."""
    map_classes: tuple[int, ...]
    first: np.ndarray
    """(n_edge_classes, rows, cols) first depth index of each edge class; NO_INDEX where absent."""
    last: np.ndarray
    """(n_edge_classes, rows, cols) last depth index; -1 where absent."""
    edge_classes: tuple[int, ...]

    @property
    def counts(self) -> np.ndarray:
        """Voxel count per class id."""
        return self.profiles.sum(axis=0)

    def sum_map(self, cid: int) -> np.ndarray:
        return self.sums[self.map_classes.index(cid)]

    def first_map(self, cid: int) -> np.ndarray:
        return self.first[self.edge_classes.index(cid)]

    def last_map(self, cid: int) -> np.ndarray:
        return self.last[self.edge_classes.index(cid)]


def block_grid(
    shape: tuple[int, int, int], block: tuple[int, int, int]
) -> Iterator[tuple[slice, slice, slice]]:
    """Block keys covering `shape`, depth fastest within each in-plane tile."""
    for r0 in range(0, shape[1], block[1]):
        for c0 in range(0, shape[2], block[2]):
            for d0 in range(0, shape[0], block[0]):
                yield (
                    slice(d0, min(d0 + block[0], shape[0])),
                    slice(r0, min(r0 + block[1], shape[1])),
                    slice(c0, min(c0 + block[2], shape[2])),
                )


def choose_block(chunks: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[int, ...]:
    """A block of whole storage chunks holding roughly 4–16 M voxels (one chunk at least)."""
    block = [min(c, s) for c, s in zip(chunks, shape, strict=True)]
    target = 8 * 1024 * 1024
    for axis in (2, 1, 0):
        while block[axis] * 2 <= shape[axis] and np.prod(block) * 2 <= target:
            block[axis] *= 2
    return tuple(block)


def scan_stats(
    volume,
    n_ids: int,
    map_classes: Sequence[int],
    edge_classes: Sequence[int],
    valid_ids: Sequence[int],
    *,
    workers: int = 2,
    engine: str = "threads",
    block: tuple[int, int, int] | None = None,
    on_block: Callable[[int], None] | None = None,
    name: str = "scan",
) -> ScanStats:
    """Stream `volume` (anything with .shape, .chunks and numpy slicing) block by block.

    `n_ids` is the size of the per-class outputs (max class id + 1); values not in `valid_ids`
    raise a LabelValueError naming `name`, the file and the values. `on_block(n_voxels)` is called
    as each block is folded in (for progress bars).
    """
    shape = tuple(int(s) for s in volume.shape)
    chunks = tuple(int(c) for c in getattr(volume, "chunks", shape))
    block = tuple(block) if block else choose_block(chunks, shape)
    map_classes = tuple(map_classes)
    edge_classes = tuple(edge_classes)
    profiles = np.zeros((shape[0], 256), np.int64)
    sums = np.zeros((len(map_classes), shape[1], shape[2]), np.int32)
    first = np.full((len(edge_classes), shape[1], shape[2]), NO_INDEX, np.int32)
    last = np.full((len(edge_classes), shape[1], shape[2]), -1, np.int32)

    def fold(stats: BlockStats) -> None:
        d0, r0, c0 = stats.origin
        bd, br, bc = stats.shape
        profiles[d0 : d0 + bd] += stats.hist
        for cid, plane in stats.sums.items():
            sums[map_classes.index(cid), r0 : r0 + br, c0 : c0 + bc] += plane
        for cid in stats.first:
            e = edge_classes.index(cid)
            tile = (e, slice(r0, r0 + br), slice(c0, c0 + bc))
            np.minimum(first[tile], stats.first[cid], out=first[tile])
            np.maximum(last[tile], stats.last[cid], out=last[tile])
        if on_block is not None:
            on_block(bd * br * bc)

    def task(key: tuple[slice, slice, slice]) -> BlockStats:
        origin = (key[0].start, key[1].start, key[2].start)
        return block_stats(np.asarray(volume[key]), origin, map_classes, edge_classes)

    keys = list(block_grid(shape, block))
    try:
        if engine == "dask":
            _run_dask(volume, block, keys, map_classes, edge_classes, fold, workers)
        elif engine == "threads":
            if workers <= 1:
                for key in keys:
                    fold(task(key))
            else:
                with ThreadPoolExecutor(workers) as pool:
                    window = 2 * workers
                    pending = [pool.submit(task, k) for k in keys[:window]]
                    for i in range(len(keys)):
                        stats = pending[i].result()
                        if i + window < len(keys):
                            pending.append(pool.submit(task, keys[i + window]))
                        pending[i] = None  # type: ignore[call-overload]
                        fold(stats)
        else:
            raise ValueError(f"unknown engine {engine!r}; use 'threads' or 'dask'")
    except _BadValuesError as err:
        raise _value_error(name, volume, err.values, valid_ids) from None

    invalid = [v for v in np.flatnonzero(profiles.sum(axis=0)) if v not in set(valid_ids)]
    if invalid:
        raise _value_error(name, volume, [int(v) for v in invalid], valid_ids)
    return ScanStats(
        shape=shape,  # type: ignore[arg-type]
        profiles=profiles[:, :n_ids].copy(),
        sums=sums,
        map_classes=map_classes,
        first=first,
        last=last,
        edge_classes=edge_classes,
    )


def _value_error(name: str, volume, values: list[int], valid: Sequence[int]) -> LabelValueError:
    path = getattr(volume, "path", None)
    where = f" ({Path(path)})" if path is not None else ""
    return LabelValueError(
        f"label volume of scan {name!r}{where} holds values {values} that are not in the "
        f"series' class table (valid ids: {sorted(valid)}); fix the labels or the manifest's "
        f"'classes'"
    )


def _run_dask(volume, block, keys, map_classes, edge_classes, fold, workers) -> None:
    """The same blocks as dask tasks, computed in batches and folded as they come."""
    import dask
    import dask.array as da

    array = da.from_array(volume, chunks=block, asarray=True, lock=False, fancy=False)
    blocks = array.to_delayed()
    tasks = []
    for key in keys:
        index = (key[0].start // block[0], key[1].start // block[1], key[2].start // block[2])
        origin = (key[0].start, key[1].start, key[2].start)
        tasks.append(dask.delayed(block_stats)(blocks[index], origin, map_classes, edge_classes))
    batch = max(2, 2 * workers)
    for start in range(0, len(tasks), batch):
        for stats in dask.compute(
            *tasks[start : start + batch], scheduler="threads", num_workers=workers
        ):
            fold(stats)


__all__ = [
    "NO_INDEX",
    "BlockStats",
    "LabelValueError",
    "ScanStats",
    "block_stats",
    "scan_stats",
]
