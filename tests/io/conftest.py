"""Tiny synthetic volumes written in every supported storage, shared by the io tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from batteryct.io import Volume
from batteryct.io.volume import VolumeKey

SHAPE = (7, 19, 23)


def make_data(dtype: str) -> np.ndarray:
    """Random data of SHAPE spanning a good part of the dtype's range."""
    rng = np.random.default_rng(42)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=SHAPE).astype(dtype)
    return rng.integers(0, 60000, size=SHAPE).astype(dtype)


def write_slices(folder: Path, data: np.ndarray) -> Path:
    """One TIFF per depth plane, named without zero padding: slice_0.tif ... slice_6.tif."""
    folder.mkdir()
    for index, plane in enumerate(data):
        tifffile.imwrite(folder / f"slice_{index}.tif", plane)
    return folder


def write_tiff(path: Path, data: np.ndarray, **options: object) -> Path:
    tifffile.imwrite(path, data, **options)
    return path


def write_zarr_array(
    path: Path, data: np.ndarray, chunks: tuple[int, ...], zarr_format: int
) -> Path:
    array = zarr.create_array(
        store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=zarr_format
    )
    array[:] = data
    return path


STORES: dict[str, Callable[[Path, np.ndarray], Path]] = {
    "folder": lambda tmp, data: write_slices(tmp / "slices", data),
    "tiff-memmap": lambda tmp, data: write_tiff(tmp / "plain.tif", data),
    "tiff-zlib": lambda tmp, data: write_tiff(tmp / "zlib.tif", data, compression="zlib"),
    "tiff-tiled": lambda tmp, data: write_tiff(tmp / "tiled.tiff", data, tile=(16, 16)),
    "tiff-imagej": lambda tmp, data: write_tiff(
        tmp / "imagej.tif", data, imagej=True, metadata={"axes": "ZYX"}
    ),
    "zarr-v3": lambda tmp, data: write_zarr_array(tmp / "v3.zarr", data, (2, 8, 16), 3),
    "zarr-v2": lambda tmp, data: write_zarr_array(tmp / "v2.zarr", data, (3, 19, 5), 2),
}


@pytest.fixture(params=["uint16", "float32"])
def data(request: pytest.FixtureRequest) -> np.ndarray:
    return make_data(request.param)


@pytest.fixture(params=sorted(STORES))
def stored(request: pytest.FixtureRequest, tmp_path: Path, data: np.ndarray) -> tuple[Path, str]:
    """Path of `data` written in one storage, and that storage's name."""
    return STORES[request.param](tmp_path, data), request.param


class ArrayVolume(Volume):
    """An in-memory Volume recording every key it reads; fails on read number `fail_on`."""

    def __init__(
        self, data: np.ndarray, chunks: tuple[int, int, int], fail_on: int | None = None
    ) -> None:
        super().__init__(Path("memory"), data.shape, data.dtype, chunks)
        self.data = data
        self.fail_on = fail_on
        self.keys: list[VolumeKey] = []

    def _read(self, key: VolumeKey) -> np.ndarray:
        self.keys.append(key)
        if len(self.keys) == self.fail_on:
            raise RuntimeError(f"simulated failure on read {self.fail_on}")
        return self.data[key].copy()


@pytest.fixture
def array_volume() -> type[ArrayVolume]:
    """The recording in-memory Volume class (a fixture, so tests need not import conftest)."""
    return ArrayVolume
