"""Prediction reads the image in bands of whole chunks (each chunk once, the slices unchanged) and
a multi-axis run's scratch one unit ahead."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from batteryct.errors import ConfigError
from batteryct.greyvalues import GreyScale
from batteryct.io import create_zarr, open_volume
from batteryct.predict import overlap
from batteryct.predict.overlap import Prefetch, ReadAhead
from batteryct.predict.volume import AXIS_INDEX, slabs

SCALE = GreyScale(0, 255)


class _CountingReads:
    """An image volume that counts how often each slice along `axis` is read."""

    def __init__(self, volume: Any, axis: str) -> None:
        self.volume, self.index = volume, AXIS_INDEX[axis]
        self.path, self.shape, self.chunks = volume.path, volume.shape, volume.chunks
        self.nbytes = volume.nbytes
        self.reads = np.zeros(volume.shape[self.index], int)
        self.extents: list[tuple[int, int]] = []

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        along = key[self.index]
        self.reads[along] += 1
        self.extents.append((along.start, along.stop))
        return self.volume[key]


def _image(tmp_path: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> Any:
    values = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    array = create_zarr(tmp_path / "image.zarr", shape, np.uint8, chunks=chunks)
    array[...] = values
    return open_volume(tmp_path / "image.zarr"), values


def _units(size: int, slab: int) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(name=f"final_{i:05d}", start=start, stop=stop)
        for i, (start, stop) in enumerate(slabs(size, slab))
    ]


@pytest.mark.parametrize(
    ("axis", "slab", "prefetch"),
    [("rows", 4, True), ("rows", 6, True), ("depth", 3, True), ("cols", 5, False)],
)
def test_each_chunk_is_read_once_and_the_slices_are_the_stored_ones(
    tmp_path: Path, axis: str, slab: int, prefetch: bool
) -> None:
    volume, values = _image(tmp_path, (13, 40, 21), (8, 16, 8))
    image = _CountingReads(volume, axis)
    index = AXIS_INDEX[axis]
    units = _units(values.shape[index], slab)
    with ReadAhead(image, axis, SCALE, units, prefetch=prefetch) as reader:
        for unit in units:
            expected = np.moveaxis(values, index, 0)[unit.start : unit.stop]
            np.testing.assert_array_equal(reader.get(unit), expected)
    edge = volume.chunks[index]
    for start, stop in image.extents:  # whole chunks only
        assert start % edge == 0 and (stop % edge == 0 or stop == values.shape[index])
    if slab <= edge and edge % slab == 0:
        assert (image.reads == 1).all()
    else:  # a unit across two chunks reads both; the next unit reads the second again
        assert image.reads.max() <= 2


def test_a_band_over_the_limit_reads_the_units_own_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume, values = _image(tmp_path, (13, 40, 21), (8, 16, 8))
    plane_bytes = 13 * 21
    monkeypatch.setattr(overlap, "BAND_BYTES_MAX", 4 * plane_bytes)  # one 4-row unit
    image = _CountingReads(volume, "rows")
    units = _units(40, 4)
    with ReadAhead(image, "rows", SCALE, units) as reader:
        for unit in units:
            expected = np.moveaxis(values[:, unit.start : unit.stop], 1, 0)
            np.testing.assert_array_equal(reader.get(unit), expected)
    assert sorted(image.extents) == [(u.start, u.stop) for u in units]


def test_units_out_of_order_get_their_own_slices(tmp_path: Path) -> None:
    volume, values = _image(tmp_path, (13, 40, 21), (8, 16, 8))
    units = _units(40, 4)
    with ReadAhead(volume, "rows", SCALE, units) as reader:
        for unit in [units[5], units[0], units[9], units[1], units[4]]:
            expected = np.moveaxis(values[:, unit.start : unit.stop], 1, 0)
            np.testing.assert_array_equal(reader.get(unit), expected)


def test_grey_values_outside_the_scale_name_the_file_and_the_band(tmp_path: Path) -> None:
    volume, _ = _image(tmp_path, (13, 40, 21), (8, 16, 8))
    units = _units(40, 4)
    bounded = GreyScale(0, 100, bounded=True)
    with ReadAhead(volume, "rows", bounded, units) as reader, pytest.raises(ConfigError) as err:
        reader.get(units[2])
    assert "image.zarr, slices 0-15 along rows" in str(err.value)  # the unit's band


def test_prefetch_reads_each_next_unit_once_in_its_thread() -> None:
    units = _units(40, 4)
    reads: list[tuple[str, str]] = []

    def read(unit: Any) -> tuple[int, int]:
        reads.append((unit.name, threading.current_thread().name))
        return unit.start, unit.stop

    with Prefetch(read, units) as prefetch:
        for unit in units:
            assert prefetch.get(unit) == (unit.start, unit.stop)
    assert sorted(name for name, _ in reads) == [unit.name for unit in units]
    threads = dict(reads)
    assert threads[units[0].name] == threading.current_thread().name
    assert all(threads[unit.name].startswith("batteryct-prefetch") for unit in units[1:])


def test_prefetch_serves_units_out_of_order_and_raises_a_failed_read_at_its_unit() -> None:
    units = _units(40, 4)

    def read(unit: Any) -> int:
        if unit.name == units[3].name:
            raise OSError(f"cannot read {unit.name}")
        return unit.start

    with Prefetch(read, units) as prefetch:
        for unit in [units[5], units[0], units[9], units[1], units[2]]:
            assert prefetch.get(unit) == unit.start  # units[3]'s read has failed meanwhile
        with pytest.raises(OSError, match=units[3].name):
            prefetch.get(units[3])
        assert prefetch.get(units[4]) == units[4].start
