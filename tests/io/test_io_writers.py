"""Writers produce compressed zarr and Fiji-readable TIFF, streaming and atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from zarr.codecs import ZstdCodec

from batteryct.io import (
    TiffFileVolume,
    VolumeError,
    ZarrVolume,
    create_zarr,
    export_tiff,
    open_volume,
    write_zarr,
    writers,
)


def entries(folder: Path) -> set[str]:
    """Names of everything under `folder`, hidden temporaries included."""
    return {str(entry.relative_to(folder)) for entry in folder.rglob("*")}


def disk_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def test_create_zarr_defaults(tmp_path: Path) -> None:
    large = create_zarr(tmp_path / "large.zarr", (100, 300, 200), "uint16")
    assert large.chunks == (64, 256, 200)
    assert large.compressors == (ZstdCodec(level=3),)
    assert large.metadata.zarr_format == 3
    small = create_zarr(tmp_path / "small.zarr", (7, 19, 23), np.float32, fill_value=1.5)
    assert small.chunks == (7, 19, 23)
    np.testing.assert_array_equal(small[:], np.full((7, 19, 23), 1.5, np.float32))


def test_create_zarr_is_filled_incrementally(tmp_path: Path, data: np.ndarray) -> None:
    array = create_zarr(tmp_path / "v.zarr", data.shape, data.dtype, chunks=(2, 10, 10))
    for depth, plane in enumerate(data):
        array[depth] = plane
    volume = open_volume(tmp_path / "v.zarr")
    assert volume.chunks == (2, 10, 10)
    np.testing.assert_array_equal(volume.read(), data)


def test_create_zarr_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "v.zarr"
    create_zarr(path, (2, 3, 4), "uint8", fill_value=1)
    with pytest.raises(VolumeError, match=r"v\.zarr already exists.*overwrite=True"):
        create_zarr(path, (2, 3, 4), "uint8")
    replaced = create_zarr(path, (5, 3, 4), "uint16", overwrite=True)
    assert replaced.shape == (5, 3, 4)
    assert ZarrVolume(path).dtype == np.uint16


def test_create_zarr_rejects_unsupported_dtype_and_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match=r"complex64.*supported dtypes are uint8"):
        create_zarr(tmp_path / "v.zarr", (2, 3, 4), np.complex64)
    with pytest.raises(ValueError, match="shape"):
        create_zarr(tmp_path / "v.zarr", (3, 4), "uint8")
    with pytest.raises(ValueError, match="chunks"):
        create_zarr(tmp_path / "v.zarr", (2, 3, 4), "uint8", chunks=(0, 3, 4))
    assert entries(tmp_path) == set()


def test_write_zarr_round_trip(tmp_path: Path, data: np.ndarray) -> None:
    path = write_zarr(tmp_path / "v.zarr", data, chunks=(3, 8, 8))
    assert path == tmp_path / "v.zarr"
    volume = open_volume(path)
    assert volume.chunks == (3, 8, 8)
    assert volume.dtype == data.dtype
    np.testing.assert_array_equal(volume.read(), data)
    assert [entry.name for entry in tmp_path.iterdir()] == ["v.zarr"]


def test_write_zarr_compresses_chunks(tmp_path: Path) -> None:
    constant = np.full((16, 64, 64), 7, np.uint16)
    path = write_zarr(tmp_path / "constant.zarr", constant, chunks=(4, 32, 32))
    chunk_files = [entry for entry in (path / "c").rglob("*") if entry.is_file()]
    assert len(chunk_files) == 16
    assert disk_size(path) < constant.nbytes / 20
    np.testing.assert_array_equal(open_volume(path).read(), constant)


def test_write_zarr_streams_a_volume_slab_by_slab(
    tmp_path: Path, data: np.ndarray, array_volume: type
) -> None:
    source = array_volume(data, chunks=(1, 19, 23))
    write_zarr(tmp_path / "v.zarr", source, chunks=(2, 19, 23))
    depths = [key[0] for key in source.keys]
    assert depths == [slice(0, 2, 1), slice(2, 4, 1), slice(4, 6, 1), slice(6, 7, 1)]
    np.testing.assert_array_equal(open_volume(tmp_path / "v.zarr").read(), data)


def test_write_zarr_converts_another_store(tmp_path: Path, data: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", data, compression="zlib")
    write_zarr(tmp_path / "v.zarr", open_volume(tmp_path / "stack.tif"))
    np.testing.assert_array_equal(open_volume(tmp_path / "v.zarr").read(), data)


def test_write_zarr_refuses_to_overwrite(tmp_path: Path, data: np.ndarray) -> None:
    path = write_zarr(tmp_path / "v.zarr", data)
    with pytest.raises(VolumeError, match=r"v\.zarr already exists"):
        write_zarr(path, data[::-1])
    np.testing.assert_array_equal(open_volume(path).read(), data)
    write_zarr(path, data[::-1].copy(), overwrite=True)
    np.testing.assert_array_equal(open_volume(path).read(), data[::-1])
    assert not any(name.startswith(".") for name in entries(tmp_path))


def test_write_zarr_rejects_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="int64"):
        write_zarr(tmp_path / "v.zarr", np.zeros((2, 3, 4), np.int64))
    with pytest.raises(ValueError, match="3D"):
        write_zarr(tmp_path / "v.zarr", np.zeros((3, 4), np.uint8))
    assert entries(tmp_path) == set()


@pytest.mark.parametrize("existing", [False, True])
def test_write_zarr_failure_leaves_nothing_behind(
    tmp_path: Path, data: np.ndarray, array_volume: type, existing: bool
) -> None:
    path = tmp_path / "v.zarr"
    if existing:
        write_zarr(path, data)
    before = entries(tmp_path)
    failing = array_volume(data[::-1].copy(), chunks=(2, 19, 23), fail_on=2)

    with pytest.raises(RuntimeError, match="simulated failure"):
        write_zarr(path, failing, chunks=(2, 19, 23), overwrite=True)

    assert len(failing.keys) == 2
    assert entries(tmp_path) == before
    if existing:
        np.testing.assert_array_equal(open_volume(path).read(), data)


def test_export_tiff_imagej_round_trip(tmp_path: Path, data: np.ndarray) -> None:
    path = export_tiff(data, tmp_path / "stack.tif", voxel_size_um=(2.0, 0.5, 0.25))
    assert path == tmp_path / "stack.tif"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["slices"] == 7
        assert tif.imagej_metadata["spacing"] == 2.0
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.series[0].axes == "ZYX"
        tags = tif.pages.first.tags
        assert tags["XResolution"].value == (4, 1)  # pixels per µm along cols
        assert tags["YResolution"].value == (2, 1)  # pixels per µm along rows
        np.testing.assert_array_equal(tif.asarray(), data)
    volume = open_volume(path)
    assert volume.access == "memmap"
    np.testing.assert_array_equal(volume.read(), data)
    assert entries(tmp_path) == {"stack.tif"}


@pytest.mark.parametrize("dtype", ["int16", "uint32", "int32", "float64"])
def test_export_tiff_plain_multipage_for_other_dtypes(tmp_path: Path, dtype: str) -> None:
    data = np.arange(7 * 19 * 23).reshape(7, 19, 23).astype(dtype)
    path = export_tiff(data, tmp_path / "stack.tif", voxel_size_um=0.5)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_imagej
        assert not tif.is_bigtiff
        assert len(tif.pages) == 7
        assert tif.shaped_metadata[0]["spacing"] == 0.5
        tags = tif.pages.first.tags
        assert tags["XResolution"].value == (20000, 1)  # pixels per cm
        assert tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
    np.testing.assert_array_equal(open_volume(path).read(), data)


def test_export_tiff_compressed(tmp_path: Path, data: np.ndarray) -> None:
    path = export_tiff(data, tmp_path / "stack.tif", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert "spacing" not in tif.imagej_metadata
    volume = open_volume(path)
    assert volume.access == "zarr"
    np.testing.assert_array_equal(volume.read(), data)


def test_export_tiff_streams_a_volume(tmp_path: Path, data: np.ndarray, array_volume: type) -> None:
    source = array_volume(data, chunks=(3, 19, 23))
    export_tiff(source, tmp_path / "stack.tif")
    assert [key[0] for key in source.keys] == [slice(0, 3, 1), slice(3, 6, 1), slice(6, 7, 1)]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "stack.tif"), data)


def test_export_tiff_uses_bigtiff_beyond_the_classic_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writers, "BIGTIFF_THRESHOLD_BYTES", 1000)
    data = np.arange(7 * 19 * 23).reshape(7, 19, 23)
    cases = [  # dtype, compression -> ImageJ?, BigTIFF?
        ("int16", None, False, True),
        ("uint16", None, True, False),
        ("uint16", "zlib", False, True),
    ]
    for dtype, compression, imagej, bigtiff in cases:
        path = export_tiff(data.astype(dtype), tmp_path / f"{dtype}.tif", compression=compression)
        with tifffile.TiffFile(path) as tif:
            assert (tif.is_imagej, tif.is_bigtiff) == (imagej, bigtiff), (dtype, compression)
            np.testing.assert_array_equal(tif.asarray(), data.astype(dtype))


def test_export_tiff_replaces_an_existing_file(tmp_path: Path, data: np.ndarray) -> None:
    path = tmp_path / "stack.tif"
    export_tiff(data, path)
    export_tiff(data[:2], path)
    assert TiffFileVolume(path).shape == (2, 19, 23)


def test_export_tiff_failure_leaves_nothing_behind(
    tmp_path: Path, data: np.ndarray, array_volume: type
) -> None:
    path = tmp_path / "stack.tif"
    export_tiff(data, path)
    failing = array_volume(data[:3].copy(), chunks=(1, 19, 23), fail_on=2)

    with pytest.raises(RuntimeError, match="simulated failure"):
        export_tiff(failing, path)

    assert entries(tmp_path) == {"stack.tif"}
    np.testing.assert_array_equal(open_volume(path).read(), data)


def test_export_tiff_rejects_bad_arguments(tmp_path: Path, data: np.ndarray) -> None:
    for voxel_size in (-1.0, 0, (1.0, 2.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(ValueError, match="voxel_size_um"):
            export_tiff(data, tmp_path / "stack.tif", voxel_size_um=voxel_size)
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(VolumeError, match=r"folder\.tif is a folder"):
        export_tiff(data, tmp_path / "folder.tif")
    with pytest.raises(VolumeError, match="complex64"):
        export_tiff(data.astype(np.complex64), tmp_path / "stack.tif")
    assert entries(tmp_path) == {"folder.tif"}


def test_zarr_written_by_create_zarr_is_plain_zarr(tmp_path: Path, data: np.ndarray) -> None:
    write_zarr(tmp_path / "v.zarr", data)
    array = zarr.open_array(str(tmp_path / "v.zarr"), mode="r")
    np.testing.assert_array_equal(array[:], data)


def test_writers_create_missing_parent_folders(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    zarr_path = write_zarr(tmp_path / "a" / "b" / "v.zarr", data)
    tiff_path = export_tiff(data, tmp_path / "c" / "d" / "v.tif")
    np.testing.assert_array_equal(open_volume(zarr_path).read(), data)
    np.testing.assert_array_equal(open_volume(tiff_path).read(), data)
