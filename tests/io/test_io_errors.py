"""Every unusable path raises exactly VolumeError, naming the offending file and what is valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from batteryct.io import (
    TiffFileVolume,
    TiffFolderVolume,
    VolumeError,
    ZarrVolume,
    open_volume,
)


def volume_error(path: Path) -> VolumeError:
    """Open `path` and return the VolumeError raised (and only a VolumeError)."""
    with pytest.raises(VolumeError) as error:
        open_volume(path)
    assert type(error.value) is VolumeError
    return error.value


def slice_folder(folder: Path, planes: list[np.ndarray]) -> Path:
    folder.mkdir()
    for index, plane in enumerate(planes):
        tifffile.imwrite(folder / f"slice_{index}.tif", plane)
    return folder


@pytest.mark.parametrize("opener", [open_volume, TiffFolderVolume, TiffFileVolume, ZarrVolume])
def test_missing_path(tmp_path: Path, opener: type) -> None:
    with pytest.raises(VolumeError, match=r"missing\.tif does not exist") as error:
        opener(tmp_path / "missing.tif")
    assert ".zarr" in str(error.value)


@pytest.mark.parametrize("extra", [None, "readme.txt"])
def test_folder_without_tiff_slices(tmp_path: Path, extra: str | None) -> None:
    folder = tmp_path / "empty_scan"
    folder.mkdir()
    if extra:
        (folder / extra).write_text("not a slice")
    message = str(volume_error(folder))
    assert "empty_scan" in message
    assert ".tif" in message
    assert ".tiff" in message


def test_slices_of_unequal_shape(tmp_path: Path) -> None:
    planes = [np.zeros((19, 23), np.uint16) for _ in range(5)]
    planes[3] = np.zeros((19, 22), np.uint16)
    message = str(volume_error(slice_folder(tmp_path / "scan", planes)))
    assert "slice_3.tif" in message
    assert "(19, 22)" in message
    assert "expected (19, 23)" in message
    assert "slice_0.tif" in message


def test_slices_of_unequal_dtype(tmp_path: Path) -> None:
    planes = [np.zeros((19, 23), np.uint16) for _ in range(5)]
    planes[2] = planes[2].astype(np.float32)
    message = str(volume_error(slice_folder(tmp_path / "scan", planes)))
    assert "slice_2.tif" in message
    assert "float32" in message
    assert "uint16" in message


def test_corrupt_tiff_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.tif"
    path.write_bytes(b"this is not a TIFF file" * 10)
    error = volume_error(path)
    assert "garbage.tif" in str(error)
    assert isinstance(error.__cause__, tifffile.TiffFileError)


def test_corrupt_slice_in_folder(tmp_path: Path) -> None:
    folder = slice_folder(tmp_path / "scan", [np.zeros((4, 5), np.uint8)] * 3)
    (folder / "slice_1.tif").write_bytes(b"\x00" * 64)
    error = volume_error(folder)
    assert "slice_1.tif" in str(error)
    assert error.__cause__ is not None


def _truncate(path: Path, fraction: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff_file_is_refused_when_opened(
    tmp_path: Path, compression: str | None
) -> None:
    path = tmp_path / "stack.tif"
    data = np.random.default_rng(0).integers(0, 255, (20, 32, 32), dtype=np.uint8)
    tifffile.imwrite(path, data, compression=compression)
    _truncate(path)
    message = str(volume_error(path))
    assert "stack.tif is truncated" in message


def test_truncated_slice_in_folder_is_refused_when_opened(tmp_path: Path) -> None:
    planes = [np.full((32, 32), i, np.uint8) for i in range(5)]
    folder = slice_folder(tmp_path / "scan", planes)
    _truncate(folder / "slice_3.tif")
    assert "slice_3.tif is truncated" in str(volume_error(folder))


def test_slice_deleted_after_opening(tmp_path: Path) -> None:
    folder = slice_folder(tmp_path / "scan", [np.zeros((4, 5), np.uint8)] * 3)
    volume = open_volume(folder)
    (folder / "slice_2.tif").unlink()
    with pytest.raises(VolumeError, match=r"slice_2\.tif"):
        volume[:, 0]


SUPPORTED_NAMES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def assert_unsupported_dtype(message: str, name: str, dtype: str) -> None:
    assert name in message
    assert dtype in message
    for supported in SUPPORTED_NAMES:
        assert supported in message


@pytest.mark.parametrize("dtype", ["complex64", "int64", "float16"])
def test_tiff_file_of_unsupported_dtype(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / f"{dtype}.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), dtype), photometric="minisblack")
    assert_unsupported_dtype(str(volume_error(path)), path.name, dtype)


def test_slices_of_unsupported_dtype(tmp_path: Path) -> None:
    folder = slice_folder(tmp_path / "scan", [np.zeros((4, 5), np.complex64)] * 2)
    assert_unsupported_dtype(str(volume_error(folder)), "slice_0.tif", "complex64")


def test_bool_zarr_array(tmp_path: Path) -> None:
    path = tmp_path / "mask.zarr"
    zarr.create_array(store=str(path), shape=(3, 4, 5), dtype=bool)
    assert_unsupported_dtype(str(volume_error(path)), "mask.zarr", "bool")


def test_rgb_tiff_file(tmp_path: Path) -> None:
    path = tmp_path / "colour.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 9, 3), np.uint8), photometric="rgb")
    message = str(volume_error(path))
    assert "colour.tif" in message
    assert "grayscale" in message


def test_rgb_slice_in_folder(tmp_path: Path) -> None:
    folder = slice_folder(tmp_path / "scan", [np.zeros((8, 9), np.uint8)] * 2)
    tifffile.imwrite(folder / "slice_2.tif", np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    message = str(volume_error(folder))
    assert "slice_2.tif" in message
    assert "grayscale" in message


def test_multi_page_slice_in_folder(tmp_path: Path) -> None:
    folder = slice_folder(tmp_path / "scan", [np.zeros((8, 9), np.uint8)] * 2)
    tifffile.imwrite(
        folder / "slice_2.tif", np.zeros((4, 8, 9), np.uint8), photometric="minisblack"
    )
    message = str(volume_error(folder))
    assert "slice_2.tif" in message
    assert "4 pages" in message


def test_tiff_hyperstack_with_channels(tmp_path: Path) -> None:
    path = tmp_path / "channels.tif"
    tifffile.imwrite(
        path, np.zeros((3, 2, 8, 9), np.uint16), imagej=True, metadata={"axes": "ZCYX"}
    )
    message = str(volume_error(path))
    assert "channels.tif" in message
    assert "(3, 2, 8, 9)" in message


def test_zarr_group(tmp_path: Path) -> None:
    path = tmp_path / "dataset.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("raw", shape=(3, 4, 5), dtype="uint16")
    message = str(volume_error(path))
    assert "dataset.zarr" in message
    assert "group" in message
    assert "raw" in message
    assert isinstance(open_volume(path / "raw"), ZarrVolume)


def test_zarr_array_not_3d(tmp_path: Path) -> None:
    path = tmp_path / "image.zarr"
    zarr.create_array(store=str(path), shape=(4, 5), dtype="uint16")
    message = str(volume_error(path))
    assert "image.zarr" in message
    assert "3D" in message


def test_zarr_folder_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "broken.zarr"
    path.mkdir()
    error = volume_error(path)
    assert "broken.zarr" in str(error)
    assert error.__cause__ is not None


@pytest.mark.parametrize("name", ["scan.png", "scan.npy", "scan"])
def test_file_that_is_not_a_volume(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG")
    message = str(volume_error(path))
    assert name in message
    for valid in ("folder of .tif/.tiff slices", ".tif/.tiff file", ".zarr"):
        assert valid in message
