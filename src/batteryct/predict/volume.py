"""Out-of-core, resumable segmentation of one scan, slab by slab.

A pass runs the engine on the slices of one axis, slab by slab (a slab is `slab` slices thick and
spans the other two axes, so it writes whole output chunks and no other slab touches them). Each
finished slab leaves a completion record; a killed run, started again, redoes only the slabs
without one. A process works on a slab only while it holds the slab's lock, so processes of
several jobs share the slabs of one scan. Nothing is published until every slab is done (see
`batteryct.predict.run`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import ZstdCodec

from batteryct.errors import ConfigError
from batteryct.greyvalues import GreyScale
from batteryct.io import Volume, open_zarr_for_writing
from batteryct.locks import FileLock
from batteryct.predict.engine import SlidingWindowEngine

AXIS_INDEX = {"depth": 0, "rows": 1, "cols": 2}
CHUNK_EDGES = (256, 64, 1024)
"""Chunk edges (depth, rows, cols) off the predicted axis. Rows are as tall as post-processing's
row slabs (`PostProcessSettings.slab_rows`), so it reads each chunk once; chunks are long in
columns because zarr's cost per chunk exceeds that of decompressing 1 MiB (BENCHMARKS.md)."""

ZSTD_LEVEL = 3
"""zstd level of the outputs."""
SCRATCH_ZSTD_LEVEL = 1
"""zstd level of a multi-axis run's float16 scratch probabilities, written once and read once:
2.3× faster to write and to read than level 3, 20 % larger (BENCHMARKS.md)."""
SCRATCH_CHUNK_EDGE = 1024
"""Scratch chunks' edge along the axis that neither pass slices (see `scratch_chunks`)."""


@dataclass(frozen=True)
class Outputs:
    """Which volumes a pass writes besides the labels."""

    probabilities: bool = False
    entropy: bool = False


class CompletionRecord:
    """One file per finished unit of work (naming the job that did it), created atomically, and
    one lock file per unit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.done"

    def done(self, name: str) -> bool:
        return self._path(name).exists()

    def mark(self, name: str, by: str = "") -> None:
        tmp = self.folder / f".{name}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(by)
        os.replace(tmp, self._path(name))

    def acquire(self, name: str, wait: bool) -> FileLock | None:
        """The unit's lock, held, when this process is to do the unit; None when it is done or
        (`wait` False) another process holds the lock. The caller releases the lock once the
        unit is marked done or given up; a process that dies holding it loses it, and a waiting
        process then does the unit itself."""
        lock = FileLock(self.folder / f"{name}.lock")
        if lock.acquire(wait=wait) and not self.done(name):
            return lock
        lock.release()
        return None

    def done_by(self) -> Counter[str]:
        """How many units each job did."""
        return Counter(path.read_text() for path in self.folder.glob("*.done"))


def slabs(size: int, thickness: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive slabs covering `size` slices."""
    return [(start, min(start + thickness, size)) for start in range(0, size, thickness)]


def chunks_for(shape: tuple[int, int, int], axis: str, thickness: int) -> tuple[int, int, int]:
    """Chunks aligned with the slabs of `axis` (so slabs own whole chunks)."""
    chunks = [min(edge, s) for edge, s in zip(CHUNK_EDGES, shape, strict=True)]
    chunks[AXIS_INDEX[axis]] = min(thickness, shape[AXIS_INDEX[axis]])
    return (chunks[0], chunks[1], chunks[2])


def scratch_chunks(
    shape: tuple[int, int, int], axis: str, final_axis: str, thickness: int
) -> tuple[int, int, int]:
    """Chunks of an earlier axis's scratch probabilities (classes apart): a slab thick along
    that axis and along the final one, so that the slabs of both passes write and read whole
    chunks, each once (a final slab inside thicker chunks would decompress them again for each
    slab), and SCRATCH_CHUNK_EDGE long along the third axis, a few MiB a chunk."""
    chunks = [min(SCRATCH_CHUNK_EDGE, size) for size in shape]
    for along in (axis, final_axis):
        chunks[AXIS_INDEX[along]] = min(thickness, shape[AXIS_INDEX[along]])
    return (chunks[0], chunks[1], chunks[2])


def open_or_create(
    path: Path,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    zstd_level: int = ZSTD_LEVEL,
) -> zarr.Array:
    """The zarr array at `path`, created (zstd-compressed) if absent; kept across resumes.

    It is created under a name of its own and renamed into place, so processes that create it
    at once all end up with the one array that was renamed first.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        zarr.create_array(
            store=str(tmp),
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=0,
            compressors=ZstdCodec(level=zstd_level),
        )
        try:
            tmp.rename(path)
        except OSError:  # another process renamed its array into place first
            shutil.rmtree(tmp)
    array = open_zarr_for_writing(path)
    if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ConfigError(
            f"{path} holds unfinished work of shape {tuple(array.shape)} ({array.dtype}), but "
            f"{tuple(shape)} ({dtype}) is to be written: its input changed since; delete "
            f"{path.parent} to start this scan afresh"
        )
    return array


def block_key(axis: str, start: int, stop: int) -> tuple[slice, slice, slice]:
    key = [slice(None)] * 3
    key[AXIS_INDEX[axis]] = slice(start, stop)
    return (key[0], key[1], key[2])


def slab_name(image: Volume, axis: str, start: int, stop: int) -> str:
    """How messages name the slices start..stop of `image` along `axis`."""
    return f"{image.path}, slices {start}-{stop - 1} along {axis}"


def read_block(image: Volume, axis: str, start: int, stop: int, scale: GreyScale) -> np.ndarray:
    """The slices start..stop along `axis` as stored (grey values checked against `scale`),
    stacked along the first axis (slices, height, width)."""
    block = np.asarray(image[block_key(axis, start, stop)])
    scale.check(block, slab_name(image, axis, start, stop))
    return np.moveaxis(block, AXIS_INDEX[axis], 0)


def segment_block(
    engine: SlidingWindowEngine,
    stack: np.ndarray,
    axis: str,
    slices_per_batch: int,
    seed: int,
    scale: GreyScale,
    outputs: Outputs,
    where: str,
    earlier: Sequence[np.ndarray] = (),
) -> dict[str, np.ndarray]:
    """Network labels and (as `outputs` asks) entropy and probabilities, uint8, of a stack of
    slices from `read_block`, laid out as the block along `axis` (probabilities classes first).

    With `earlier`, the block's float16 probabilities along other axes (classes first, from
    `probabilities_block`), they come from the mean of this axis's and those (see
    `SlidingWindowEngine.segment`). Only uint8 comes back from the engine's device."""
    position = AXIS_INDEX[axis]
    slices_first = [torch.from_numpy(np.moveaxis(part, position + 1, 0)) for part in earlier]
    parts: dict[str, list[np.ndarray]] = {"labels_net": [], "entropy": [], "probabilities": []}
    for first, slices in _batches(engine, stack, slices_per_batch, seed, scale, where):
        others = [part[first : first + len(slices)] for part in slices_first]
        result = engine.segment(slices, outputs.entropy, outputs.probabilities, others)
        parts["labels_net"].append(result.labels.numpy())
        if result.entropy is not None:
            parts["entropy"].append(result.entropy.numpy())
        if result.probabilities is not None:
            parts["probabilities"].append(result.probabilities.numpy())
    blocks = {
        name: np.moveaxis(np.concatenate(arrays), 0, position)
        for name, arrays in parts.items()
        if arrays and name != "probabilities"
    }
    if parts["probabilities"]:
        blocks["probabilities"] = _classes_first(np.concatenate(parts["probabilities"]), axis)
    return blocks


def probabilities_block(
    engine: SlidingWindowEngine,
    stack: np.ndarray,
    axis: str,
    slices_per_batch: int,
    seed: int,
    scale: GreyScale,
    where: str,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Class probabilities (classes, *block) of a stack of slices from `read_block`, in
    `dtype` (converted on the engine's device: a multi-axis run's float16 scratch copies back
    half the bytes of float32)."""
    parts = [
        engine.probabilities(slices, dtype).numpy()
        for _, slices in _batches(engine, stack, slices_per_batch, seed, scale, where)
    ]
    return _classes_first(np.concatenate(parts), axis)


def _batches(
    engine: SlidingWindowEngine,
    stack: np.ndarray,
    slices_per_batch: int,
    seed: int,
    scale: GreyScale,
    where: str,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first slice, slices (N, 1, H, W) on the engine's device on the model's 0-1 scale) of
    each batch of a stack from `read_block`: `slices_per_batch` slices, fewer where the engine
    caps them (`SlidingWindowEngine.slices_per_call`); grey values go to the device as stored.
    Checks first that the slices hold a window, and seeds torch with `seed` (Monte-Carlo
    dropout then draws the same masks on a resumed run)."""
    engine.check_fits(stack.shape[1], stack.shape[2], where)
    torch.manual_seed(seed)
    count = engine.slices_per_call(slices_per_batch, stack.shape[1], stack.shape[2])
    for first in range(0, stack.shape[0], count):
        batch = torch.from_numpy(np.ascontiguousarray(stack[first : first + count]))
        yield first, scale.apply_tensor(batch.to(engine.device, non_blocking=True))[:, None]


def _classes_first(per_slice: np.ndarray, axis: str) -> np.ndarray:
    """(slices, classes, H, W) of the slices along `axis` as (classes, *block) (a view)."""
    return np.moveaxis(per_slice.transpose(1, 0, 2, 3), 1, AXIS_INDEX[axis] + 1)


def iter_pending(
    record: CompletionRecord, name: str, units: list[tuple[int, int]], mine: list[int] | None = None
) -> Iterator[tuple[int, tuple[int, int]]]:
    """Units not yet done (restricted to the indices in `mine` when given, for DDP ranks)."""
    for index, unit in enumerate(units):
        if (mine is None or index in mine) and not record.done(f"{name}_{index:05d}"):
            yield index, unit
