"""Uncertainty to guide labelling: which slices to label next."""

from __future__ import annotations

import csv
import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from batteryct.predict.postprocess import workers

AXES = ("depth", "rows", "cols")


def rank_slices(
    entropy_path: Path,
    out_csv: Path,
    scan_id: str,
    top: int | None = None,
    threads: int | None = None,
) -> Path:
    """CSV of slices (all three axes) by decreasing mean normalised entropy ("label these next").

    The entropy volume (uint8, 0 certain, 255 uniform) is read chunk by chunk in `threads`
    threads (default: post-processing's `workers()`), each chunk summed over each axis in
    integers and the sums added up; memory holds a chunk a thread, whatever the volume's size.
    """
    entropy = zarr.open_array(str(entropy_path), mode="r")
    depth, rows, cols = entropy.shape
    totals = [np.zeros(size, np.int64) for size in entropy.shape]
    chunk_keys = itertools.product(
        *(
            [slice(start, min(start + edge, size)) for start in range(0, size, edge)]
            for size, edge in zip(entropy.shape, entropy.chunks, strict=True)
        )
    )
    with ThreadPoolExecutor(threads or workers()) as pool:
        for key, chunk_sums in pool.map(functools.partial(_chunk_sums, entropy), chunk_keys):
            for total, where, part in zip(totals, key, chunk_sums, strict=True):
                total[where] += part
    sums = dict(zip(AXES, totals, strict=True))
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


def _chunk_sums(
    entropy: zarr.Array, key: tuple[slice, slice, slice]
) -> tuple[tuple[slice, slice, slice], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The entropy of one chunk summed over each axis (per depth, row and column index)."""
    block = np.asarray(entropy[key])
    wide = np.int32 if block.size < 1 << 23 else np.int64  # 255 × size fits
    plane = block.sum(axis=0, dtype=wide)
    per_depth = block.reshape(block.shape[0], -1).sum(axis=1, dtype=wide)
    return key, (per_depth, plane.sum(axis=1), plane.sum(axis=0))
