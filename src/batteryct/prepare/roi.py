"""The crop box of the prepared scans, in the levelled reference frame (voxels, [start, stop))."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from batteryct.errors import ConfigError
from batteryct.prepare.resample import Box, box_corners
from batteryct.prepare.rigid import Rigid


@dataclass(frozen=True)
class RoiSettings:
    """`box_vox`: [[d0, d1], [r0, r1], [c0, c1]] of the reference frame, or null for automatic:
    the largest box where every registered scan has data, less `margin_vox` at each edge."""

    box_vox: Sequence[Sequence[int]] | None = None
    margin_vox: Sequence[int] = (2, 4, 4)
    grid_max: int = 96


def check_box(raw: Sequence[Sequence[int]], frame: tuple[int, int, int]) -> Box:
    """A configured ROI, validated against the reference frame."""
    try:
        box = tuple((int(a), int(b)) for a, b in raw)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 3:
        raise ConfigError(
            f"roi.box_vox is {raw!r}; expected [[d0, d1], [r0, r1], [c0, c1]] in voxels"
        )
    for (start, stop), size, name in zip(box, frame, ("depth", "rows", "cols"), strict=True):
        if not 0 <= start < stop <= size:
            raise ConfigError(
                f"roi.box_vox {[list(b) for b in box]} lies outside the reference scan's frame"
                f" {list(frame)} (depth, rows, cols): {name} [{start}, {stop}) must lie within"
                f" [0, {size}) and not be empty"
            )
    return box[0], box[1], box[2]


def _inside(maps: Sequence[tuple[Rigid, tuple[int, int, int]]], points: np.ndarray) -> np.ndarray:
    ok = np.ones(points.shape[:-1], bool)
    for transform, shape in maps:
        mapped = transform(points)
        ok &= np.all((mapped >= -1e-6) & (mapped <= np.asarray(shape) - 1 + 1e-6), axis=-1)
    return ok


def auto_roi(
    maps: Sequence[tuple[Rigid, tuple[int, int, int]]],
    frame: tuple[int, int, int],
    settings: RoiSettings,
) -> Box:
    """The largest box (greedy on a coarse grid, then exact at its corners) of the frame where
    every map lands inside its scan, less the margins.

    `maps` pairs each scan's map (frame position -> scan position) with the scan's shape. Where
    each scan has data is convex, so a box whose 8 corners have data in every scan is all data.
    """
    step = max(1, math.ceil(max(frame) / settings.grid_max))
    grids = [np.unique(np.r_[np.arange(0, n, step), n - 1]) for n in frame]
    points = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).astype(float)
    valid = _inside(maps, points)
    if not valid.any():
        raise ConfigError("the registered scans share no common region; check the registration")
    # Start from the bounding box of the common region and drop the face with most holes.
    spans = [np.flatnonzero(valid.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    lo = [int(span.min()) for span in spans]
    hi = [int(span.max()) + 1 for span in spans]
    while True:
        view = valid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        if view.size == 0:
            raise ConfigError("the registered scans share no common box; check the registration")
        if view.all():
            break
        holes = []
        for axis, end in itertools.product(range(3), (0, -1)):
            face = np.take(view, end, axis=axis)
            holes.append(((~face).sum() / face.size, axis, end))
        _, axis, end = max(holes)
        if end == 0:
            lo[axis] += 1
        else:
            hi[axis] -= 1
    box = [[int(grids[k][lo[k]]), int(grids[k][hi[k] - 1]) + 1] for k in range(3)]
    # Exact check at the corners, shrinking by single voxels where the coarse grid was generous.
    for _ in range(4 * step + 4):
        corners = box_corners(tuple(map(tuple, box)))  # type: ignore[arg-type]
        bad = ~_inside(maps, corners)
        if not bad.any():
            break
        centre = np.array([(a + b - 1) / 2 for a, b in box])
        for corner in corners[bad]:
            for k in range(3):
                if corner[k] < centre[k]:
                    box[k][0] = min(box[k][0] + 1, box[k][1] - 1)
                else:
                    box[k][1] = max(box[k][1] - 1, box[k][0] + 1)
    margins = [int(m) for m in settings.margin_vox]
    out = [(a + m, b - m) for (a, b), m in zip(box, margins, strict=True)]
    if any(b <= a for a, b in out):
        raise ConfigError(
            f"the common region {box} of the registered scans is smaller than the margins"
            f" roi.margin_vox {margins}; reduce the margins"
        )
    return out[0], out[1], out[2]
