"""Resampling through a rigid map, one box at a time: reads only the input block a box needs."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
from scipy import ndimage

from batteryct.io import Volume
from batteryct.prepare.rigid import Rigid

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # [start, stop) per axis


def box_shape(box: Box) -> tuple[int, int, int]:
    d, r, c = (stop - start for start, stop in box)
    return d, r, c


def box_corners(box: Box) -> np.ndarray:
    """The 8 corner voxel positions (inclusive) of a box, shape (8, 3)."""
    return np.array(list(itertools.product(*[(start, stop - 1) for start, stop in box])), float)


def resample_box(
    source: Volume | np.ndarray,
    transform: Rigid,
    box: Box,
    order: int = 1,
    cval: float = 0.0,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Values of `source` at `transform(u)` for every voxel `u` of the output `box`.

    Reads the input block that the box maps onto (plus one voxel for interpolation), applies
    `convert` to it (e.g. intensity normalisation to float32), and interpolates: `order=1`
    linear for grey values, `order=0` nearest for labels. Positions outside `source` get `cval`.
    """
    shape = box_shape(box)
    mapped = transform(box_corners(box))
    low = np.maximum(np.floor(mapped.min(axis=0)).astype(int) - 1, 0)
    high = np.minimum(np.ceil(mapped.max(axis=0)).astype(int) + 2, source.shape)
    if np.any(high <= low):
        dtype = np.float32 if convert is not None or order > 0 else source.dtype
        return np.full(shape, cval, dtype=dtype)
    block = source[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    if convert is not None:
        block = convert(block)
    elif order > 0:
        block = block.astype(np.float32)
    start = np.array([start for start, _ in box], float)
    offset = transform.matrix @ start + transform.offset - low
    if np.allclose(transform.matrix, np.eye(3)) and np.allclose(offset, np.round(offset)):
        return _integer_shift(block, offset.round().astype(int), shape, cval)
    return ndimage.affine_transform(
        block,
        transform.matrix,
        offset,
        output_shape=shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )


def _integer_shift(
    block: np.ndarray, offset: np.ndarray, shape: tuple[int, int, int], cval: float
) -> np.ndarray:
    """A whole-voxel translation: a plain copy, no interpolation."""
    out = np.full(shape, cval, dtype=block.dtype)
    src = [
        slice(max(o, 0), min(o + n, b)) for o, n, b in zip(offset, shape, block.shape, strict=True)
    ]
    dst = [slice(s.start - o, s.stop - o) for s, o in zip(src, offset, strict=True)]
    if all(s.stop > s.start for s in src):
        out[tuple(dst)] = block[tuple(src)]
    return out


def chunk_boxes(box: Box, chunks: tuple[int, int, int]) -> Iterator[Box]:
    """The chunk-aligned pieces of `box` (chunks counted from the box's start)."""
    ranges = [
        [(s, min(s + n, stop)) for s in range(start, stop, n)]
        for (start, stop), n in zip(box, chunks, strict=True)
    ]
    yield from itertools.product(*ranges)  # type: ignore[misc]


def inside_mask(
    transform: Rigid,
    box: Box,
    shape: tuple[int, int, int],
    margin: float | tuple[float, float, float] = 0.0,
) -> np.ndarray:
    """True where `transform` maps a voxel of `box` inside a volume of `shape` (interpolable),
    at least `margin` voxels (per axis of the volume) from its faces."""
    margins = np.broadcast_to(np.asarray(margin, dtype=np.float32), (3,))
    axes = [np.arange(start, stop, dtype=np.float32) for start, stop in box]
    d, r, c = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    mask = np.ones(box_shape(box), bool)
    for k in range(3):
        m = transform.matrix[k].astype(np.float32)
        position = m[0] * d + m[1] * r + m[2] * c + np.float32(transform.offset[k])
        low, high = margins[k] - 1e-3, shape[k] - 1 - margins[k] + 1e-3
        mask &= (position >= low) & (position <= high)
    return mask
