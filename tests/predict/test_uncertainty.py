"""The labelling guide: slices ranked by their mean entropy, on every axis."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from batteryct.predict.uncertainty import rank_slices
from batteryct.predict.volume import open_or_create


@pytest.mark.parametrize(
    ("chunks", "threads"), [((3, 7, 9), 1), ((3, 7, 9), 2), ((4, 3, 2), 3), ((11, 2, 5), 2)]
)
def test_slices_are_ranked_by_their_mean_entropy_on_every_axis(
    tmp_path: Path, chunks: tuple[int, int, int], threads: int
) -> None:
    """Whatever the chunks (partial ones at the edges included) and the threads summing them."""
    rng = np.random.default_rng(3)
    entropy = rng.integers(0, 256, (11, 7, 9), dtype=np.uint8)
    entropy[4] = 255  # the most uncertain slice of all
    array = open_or_create(tmp_path / "entropy.zarr", entropy.shape, chunks, "uint8")
    array[:] = entropy
    ranking = rank_slices(tmp_path / "entropy.zarr", tmp_path / "r.csv", "s", threads=threads)
    rows = list(csv.DictReader(ranking.open()))
    expected = {
        (axis, i): entropy.mean(axis=tuple(a for a in range(3) if a != position))[i] / 255
        for position, axis in enumerate(("depth", "rows", "cols"))
        for i in range(entropy.shape[position])
    }
    assert len(rows) == len(expected)
    assert (rows[0]["axis"], rows[0]["index"], rows[0]["mean_entropy"]) == ("depth", "4", "1.00000")
    for row in rows:
        mean = expected[(row["axis"], int(row["index"]))]
        assert abs(float(row["mean_entropy"]) - mean) <= 5e-6  # written with 5 decimals
    values = [float(row["mean_entropy"]) for row in rows]
    assert values == sorted(values, reverse=True)
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
