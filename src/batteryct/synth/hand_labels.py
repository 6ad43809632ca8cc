"""Sparse hand labels, painted the way a person paints them in a labelling tool.

A few slices of a few scans, each only partly painted with brush strokes: strokes favour the rare,
interesting phases; large phases are painted roughly, staying a pixel away from their edges, while
small ones are painted carefully up to their edges. Unpainted pixels are 0; a painted pixel holds
its class id + 1 (the manifest's `hand_labels.values` table says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from batteryct.classes import UNLABELLED


@dataclass(frozen=True)
class HandLabelSettings:
    """Which slices get painted and how thoroughly."""

    scans: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24)
    """Indices (in time order) of the scans that get hand labels."""
    in_plane_per_scan: int = 3
    cross_sections_per_scan: int = 4
    coverage: float = 0.45
    """Target share of a slice's pixels that get painted."""
    brush_radius_px: tuple[int, int] = (2, 7)
    rare_stroke_share: float = 0.6
    """Share of strokes started on a rare phase (anything but background and electrodes)."""
    edge_margin_px: int = 1
    """Large phases are left unpainted this close to another phase."""


def label_value(class_id: int) -> int:
    """The raw hand-label value that paints `class_id`."""
    return class_id + 1


def paint_slice(
    truth: np.ndarray,
    settings: HandLabelSettings,
    rng: np.random.Generator,
    common_classes: tuple[int, ...],
    max_pixels: int | None = None,
) -> np.ndarray:
    """Partial hand labels (uint8, 0 = unlabelled) of one 2D slice of true class ids.

    With `max_pixels`, painting stops before the stroke that would label more pixels than that
    (a person's budget); the strokes drawn are the same as without it up to there.
    """
    height, width = truth.shape
    painted = np.zeros(truth.shape, bool)
    allowed = _allowed(truth, settings.edge_margin_px, common_classes)
    rare = np.argwhere(~np.isin(truth, common_classes))
    target = settings.coverage * truth.size
    for _ in range(2000):
        if painted.sum() >= target:
            break
        if rare.size and rng.random() < settings.rare_stroke_share:
            start = rare[rng.integers(len(rare))].astype(float)
        else:
            start = np.array([rng.uniform(0, height), rng.uniform(0, width)])
        radius = rng.integers(settings.brush_radius_px[0], settings.brush_radius_px[1] + 1)
        direction = rng.standard_normal(2)
        direction /= np.linalg.norm(direction) + 1e-12
        length = rng.uniform(0, 4 * radius)
        if max_pixels is None:
            _stroke(painted, start, start + direction * length, radius)
            continue
        trial = painted.copy()
        _stroke(trial, start, start + direction * length, radius)
        if np.count_nonzero(trial & allowed) > max_pixels:
            break
        painted = trial
    labels = np.full(truth.shape, UNLABELLED, np.uint8)
    keep = painted & allowed
    labels[keep] = truth[keep].astype(np.int64) + 1
    return labels


def _allowed(truth: np.ndarray, margin: int, common_classes: tuple[int, ...]) -> np.ndarray:
    """Where a person paints: every pixel, except pixels of a common (large) phase closer than
    `margin` to another phase."""
    allowed = np.zeros(truth.shape, bool)
    for cid in np.unique(truth):
        region = truth == cid
        if cid in common_classes and margin > 0:
            region = ndimage.binary_erosion(region, iterations=margin, border_value=1)
        allowed |= region
    return allowed


def _stroke(canvas: np.ndarray, start: np.ndarray, end: np.ndarray, radius: int) -> None:
    """Paint a brush of `radius` dragged from start to end (row, col)."""
    steps = max(1, int(np.ceil(np.linalg.norm(end - start) / max(radius / 2, 1))))
    rows, cols = np.ogrid[: canvas.shape[0], : canvas.shape[1]]
    for t in np.linspace(0.0, 1.0, steps + 1):
        r, c = start + t * (end - start)
        r0, r1 = max(0, int(r - radius)), min(canvas.shape[0], int(r + radius) + 1)
        c0, c1 = max(0, int(c - radius)), min(canvas.shape[1], int(c + radius) + 1)
        disk = (rows[r0:r1] - r) ** 2 + (cols[:, c0:c1] - c) ** 2 <= radius**2
        canvas[r0:r1, c0:c1] |= disk


def choose_slices(
    truth: np.ndarray,
    settings: HandLabelSettings,
    rng: np.random.Generator,
    common_classes: tuple[int, ...],
) -> dict[str, list[int]]:
    """Slices a person would label in this scan: in-plane slices through the interesting
    layers (where rare phases are), cross-sections along rows and cols at random."""
    _, n_rows, n_cols = truth.shape
    rare_per_depth = (~np.isin(truth, common_classes)).sum(axis=(1, 2))
    interesting = np.flatnonzero(rare_per_depth > 0.01 * n_rows * n_cols)
    cell_depths = np.flatnonzero((truth != common_classes[0]).any(axis=(1, 2)))
    pool = interesting if interesting.size >= settings.in_plane_per_scan else cell_depths
    n_in_plane = min(settings.in_plane_per_scan, pool.size)
    in_plane = sorted(int(d) for d in rng.choice(pool, size=n_in_plane, replace=False))
    rows: list[int] = []
    cols: list[int] = []
    for k in range(settings.cross_sections_per_scan):
        if k % 2 == 0:
            rows.append(int(rng.integers(n_rows)))
        else:
            cols.append(int(rng.integers(n_cols)))
    out = {"depth": in_plane, "rows": sorted(set(rows)), "cols": sorted(set(cols))}
    return {axis: indices for axis, indices in out.items() if indices}


def paint_volume(
    truth: np.ndarray,
    slices: dict[str, list[int]],
    settings: HandLabelSettings,
    rng: np.random.Generator,
    common_classes: tuple[int, ...],
) -> np.ndarray:
    """A label volume (0 = unlabelled) with the chosen slices partly painted."""
    labels = np.zeros(truth.shape, np.uint8)
    for axis, indices in slices.items():
        for index in indices:
            key = _slice_key(axis, index)
            painted = paint_slice(truth[key], settings, rng, common_classes)
            target = labels[key]
            target[painted != UNLABELLED] = painted[painted != UNLABELLED]
    return labels


def _slice_key(axis: str, index: int) -> tuple[slice | int, ...]:
    position = {"depth": 0, "rows": 1, "cols": 2}[axis]
    key: list[slice | int] = [slice(None)] * 3
    key[position] = index
    return tuple(key)
