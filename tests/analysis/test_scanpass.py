"""The streaming pass equals an in-memory numpy computation, and rejects bad label values."""

from __future__ import annotations

import numpy as np
import pytest

from batteryct.analysis.scanpass import NO_INDEX, LabelValueError, scan_stats
from batteryct.io import open_volume, write_zarr

MAP = [1, 2, 3, 4, 5, 6]
EDGE = [5, 6]


def reference(labels: np.ndarray):
    """Profiles, sum maps and first/last depth per column, computed on the whole array."""
    profiles = np.stack([(labels == c).sum(axis=(1, 2)) for c in range(7)], axis=1)
    sums = np.stack([(labels == c).sum(axis=0) for c in MAP])
    depth = np.arange(labels.shape[0])[:, None, None]
    first, last = [], []
    for c in EDGE:
        m = labels == c
        first.append(np.where(m.any(0), np.where(m, depth, 10**6).min(0), NO_INDEX))
        last.append(np.where(m.any(0), np.where(m, depth, -1).max(0), -1))
    return profiles, sums, np.stack(first), np.stack(last)


@pytest.mark.parametrize(
    ("engine", "workers", "block"),
    [("threads", 1, None), ("threads", 2, (8, 16, 8)), ("dask", 2, (16, 8, 16))],
)
def test_chunked_pass_equals_in_memory(tmp_path, engine, workers, block):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, size=(37, 29, 23)).astype(np.uint8)
    labels[:, :5, :5] = 0  # columns without any electrode
    write_zarr(tmp_path / "l.zarr", labels, chunks=(8, 8, 8))
    volume = open_volume(tmp_path / "l.zarr")
    stats = scan_stats(
        volume, 7, MAP, EDGE, valid_ids=range(7), workers=workers, engine=engine, block=block
    )
    profiles, sums, first, last = reference(labels)
    np.testing.assert_array_equal(stats.profiles, profiles)
    np.testing.assert_array_equal(stats.counts, np.bincount(labels.ravel(), minlength=7))
    np.testing.assert_array_equal(stats.sums, sums)
    np.testing.assert_array_equal(stats.first, first)
    np.testing.assert_array_equal(stats.last, last)


def test_slab_profile_and_projection():
    labels = np.zeros((10, 4, 5), np.uint8)
    labels[6:10] = 5  # a 4-voxel slab
    labels[2:5, 1:3, 1:4] = 1  # a 3 × 2 × 3 cube
    stats = scan_stats(labels, 7, MAP, EDGE, valid_ids=range(7), workers=1, block=(3, 2, 2))
    assert stats.counts[5] == 4 * 20 and stats.counts[1] == 18
    assert stats.profiles[:, 5].tolist() == [0] * 6 + [20] * 4
    assert (stats.sum_map(5) == 4).all()
    assert stats.sum_map(1)[1:3, 1:4].tolist() == [[3, 3, 3], [3, 3, 3]]
    assert stats.sum_map(1).sum() == 18
    assert (stats.first_map(5) == 6).all() and (stats.last_map(5) == 9).all()


def test_values_outside_the_class_table_name_scan_and_values(tmp_path):
    labels = np.zeros((6, 4, 4), np.uint8)
    labels[2, 1, 1] = 9
    labels[3, 2, 2] = 7
    write_zarr(tmp_path / "bad.zarr", labels)
    with pytest.raises(LabelValueError) as err:
        scan_stats(
            open_volume(tmp_path / "bad.zarr"), 7, MAP, EDGE, valid_ids=range(7), name="scan_05"
        )
    message = str(err.value)
    assert "scan_05" in message and "bad.zarr" in message and "[7, 9]" in message
