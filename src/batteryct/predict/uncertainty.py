"""Uncertainty to guide labelling: which slices to label next."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import zarr

AXES = ("depth", "rows", "cols")


def rank_slices(entropy_path: Path, out_csv: Path, scan_id: str, top: int | None = None) -> Path:
    """CSV of slices (all three axes) by decreasing mean normalised entropy ("label these next").

    The entropy volume (uint8, 0 certain, 255 uniform) is read slab by slab along depth and
    summed in integers: each slab once over depth, then that plane over rows and over columns.
    """
    entropy = zarr.open_array(str(entropy_path), mode="r")
    depth, rows, cols = entropy.shape
    sums = {name: np.zeros(size, np.int64) for name, size in zip(AXES, entropy.shape, strict=True)}
    step = entropy.chunks[0]
    for start in range(0, depth, step):
        block = np.asarray(entropy[start : start + step])
        plane = block.sum(axis=0, dtype=np.int64)
        sums["depth"][start : start + block.shape[0]] = block.reshape(block.shape[0], -1).sum(
            axis=1, dtype=np.int64
        )
        sums["rows"] += plane.sum(axis=1)
        sums["cols"] += plane.sum(axis=0)
    area = {"depth": rows * cols, "rows": depth * cols, "cols": depth * rows}
    ranked = [
        (sums[axis][i] / 255 / area[axis], axis, i) for axis in AXES for i in range(len(sums[axis]))
    ]
    ranked.sort(key=lambda item: -item[0])
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "scan", "axis", "index", "mean_entropy"])
        for rank, (value, axis, index) in enumerate(ranked[:top] if top else ranked, start=1):
            writer.writerow([rank, scan_id, axis, index, f"{value:.5f}"])
    return out_csv
