"""Quantities derived from the per-scan statistics: volumes, thicknesses, rates, maps, edges."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from batteryct.analysis.scanpass import NO_INDEX


def linear_rate(minutes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of values over minutes (per minute); NaN with fewer than 2 points."""
    t = np.asarray(minutes, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if t.size < 2 or np.ptp(t) == 0:
        return math.nan
    return float(np.polyfit(t, v, 1)[0])


def occupation(sum_map: np.ndarray) -> float:
    """Share of in-plane pixels where the class is present somewhere along depth."""
    return float(np.count_nonzero(sum_map) / sum_map.size) if sum_map.size else math.nan


def inner_edges(
    first: np.ndarray, last: np.ndarray, facing: str
) -> tuple[np.ndarray, float, float]:
    """Per-column position (in voxels, on the depth axis) of the electrode surface that faces the
    electrolyte, its mean and the share of columns where the electrode is present.

    `facing` = "up" when the electrode lies at the end of the depth axis (its surface is its first
    voxel), "down" when it lies at the start (the surface is just after its last voxel).
    """
    present = last >= 0
    if facing == "up":
        edge = np.where(present, first, np.nan).astype(float)
    else:
        edge = np.where(present, last + 1, np.nan).astype(float)
    mean = float(np.nanmean(edge)) if present.any() else math.nan
    return edge, mean, float(present.mean())


__all__ = ["NO_INDEX", "inner_edges", "linear_rate", "occupation"]
