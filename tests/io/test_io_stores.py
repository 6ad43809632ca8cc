"""The lazy stores agree with numpy, read only what a key needs, and reorder axes lazily."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from batteryct.io import (
    AXES,
    TiffFileVolume,
    TiffFolderVolume,
    TransposedVolume,
    VolumeError,
    ZarrVolume,
    open_volume,
)

KEYS = [
    0,
    3,
    -1,
    np.int64(2),
    (slice(None), 5),
    (slice(None), -1, slice(None)),
    (slice(None), slice(None), 7),
    (..., 4),
    (2, ..., 3),
    (...,),
    (slice(1, 6, 2),),
    (slice(None, None, -1),),
    (slice(None, None, -2), slice(3, None, 4), slice(-1, 0, -3)),
    (slice(-3, None), slice(-5, -1), slice(None, None, 5)),
    (2, 5, 9),
    (-7, -19, -23),
    (slice(5, 2),),
    (slice(10, None),),
    (slice(None), slice(2, 12, 3), -4),
]

EXPECTED = {  # kind: (class, chunks, TIFF access path)
    "folder": (TiffFolderVolume, (1, 19, 23), None),
    "tiff-memmap": (TiffFileVolume, (1, 19, 23), "memmap"),
    "tiff-imagej": (TiffFileVolume, (1, 19, 23), "memmap"),
    "tiff-zlib": (TiffFileVolume, (1, 19, 23), "zarr"),
    "tiff-tiled": (TiffFileVolume, (1, 16, 16), "zarr"),
    "zarr-v3": (ZarrVolume, (2, 8, 16), None),
    "zarr-v2": (ZarrVolume, (3, 19, 5), None),
}


def test_open_volume_reports_layout(stored: tuple[Path, str], data: np.ndarray) -> None:
    path, kind = stored
    volume_class, chunks, access = EXPECTED[kind]
    volume = open_volume(path)
    assert type(volume) is volume_class
    assert volume.path == path
    assert volume.shape == data.shape
    assert volume.dtype == data.dtype
    assert volume.ndim == 3
    assert volume.nbytes == data.nbytes
    assert volume.chunks == chunks
    assert getattr(volume, "access", None) == access
    assert repr(volume) == (
        f"{volume_class.__name__}('{path}', shape=(7, 19, 23), dtype={data.dtype.name}, "
        f"chunks={chunks})"
    )


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_indexing_matches_numpy(stored: tuple[Path, str], data: np.ndarray, key: object) -> None:
    result = open_volume(stored[0])[key]
    expected = data[key]
    assert isinstance(result, np.ndarray)
    assert result.dtype == data.dtype
    assert result.shape == np.shape(expected)
    np.testing.assert_array_equal(result, expected)


def test_every_slice_and_cross_section(stored: tuple[Path, str], data: np.ndarray) -> None:
    volume = open_volume(stored[0])
    np.testing.assert_array_equal(volume.read(), data)
    for depth in range(data.shape[0]):
        np.testing.assert_array_equal(volume[depth], data[depth])
    for row in range(data.shape[1]):
        np.testing.assert_array_equal(volume[:, row, :], data[:, row, :])
    for col in range(data.shape[2]):
        np.testing.assert_array_equal(volume[:, :, col], data[:, :, col])


def test_results_are_writable_copies(stored: tuple[Path, str], data: np.ndarray) -> None:
    volume = open_volume(stored[0])
    plane = volume[1]
    plane[...] = 0
    np.testing.assert_array_equal(volume[1], data[1])


def test_pickled_volume_reads_the_same(stored: tuple[Path, str], data: np.ndarray) -> None:
    payload = pickle.dumps(open_volume(stored[0]))
    assert len(payload) < data.nbytes  # pickled by reference to the file, not by content
    np.testing.assert_array_equal(pickle.loads(payload).read(), data)


@pytest.mark.parametrize(
    "key", [7, -8, (0, 19), (0, 0, -24), (0, 0, 0, 0), (..., 0, ...), None, True, [1, 2], 1.0]
)
def test_invalid_keys_raise_index_error(tmp_path: Path, key: object) -> None:
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.zeros((7, 19, 23), np.uint8))
    with pytest.raises(IndexError):
        open_volume(path)[key]


def test_subclasses_read_normalized_keys(array_volume: type, data: np.ndarray) -> None:
    volume = array_volume(data, chunks=(1, 19, 23))
    np.testing.assert_array_equal(volume[-1, ::-3, 2:100], data[-1, ::-3, 2:100])
    np.testing.assert_array_equal(volume[..., -23], data[..., -23])
    assert volume.keys == [
        (6, slice(0, 19, 3), slice(2, 23, 1)),
        (slice(0, 7, 1), slice(0, 19, 1), 0),
    ]


def test_folder_is_ordered_by_numbers_in_names(tmp_path: Path) -> None:
    data = np.arange(12 * 3 * 4, dtype=np.uint8).reshape(12, 3, 4)
    folder = tmp_path / "scan"
    folder.mkdir()
    suffixes = [".tif", ".TIF", ".tiff"]
    for index in np.random.default_rng(0).permutation(12):  # creation order is irrelevant
        tifffile.imwrite(folder / f"slice_{index + 1}{suffixes[index % 3]}", data[index])
    (folder / "notes.txt").write_text("not a slice")
    (folder / ".slice_0.tif").write_bytes(b"hidden resource fork")
    (folder / "sub.tif").mkdir()

    volume = open_volume(folder)

    assert [file.name for file in volume.files][:4] == [
        "slice_1.tif",
        "slice_2.TIF",
        "slice_3.tiff",
        "slice_4.tif",
    ]
    assert volume.files[-3].name == "slice_10.tif"
    np.testing.assert_array_equal(volume.read(), data)


def test_folder_opens_from_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "slices"
    folder.mkdir()
    for index in range(5):
        tifffile.imwrite(folder / f"s{index}.tif", np.full((4, 6), index, np.uint16))

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixel data decoded while opening")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_decoding)
    monkeypatch.setattr(tifffile, "imread", no_decoding)
    volume = TiffFolderVolume(folder)
    assert volume.shape == (5, 4, 6)


def test_folder_reads_each_needed_slice_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.arange(7 * 5 * 6, dtype=np.uint16).reshape(7, 5, 6)
    for index, plane in enumerate(data):
        (tmp_path / "slices").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "slices" / f"s{index}.tif", plane)
    volume = open_volume(tmp_path / "slices")
    read_files: list[str] = []
    imread = tifffile.imread

    def recording_imread(file: Path, **kwargs: object) -> np.ndarray:
        read_files.append(Path(file).name)
        return imread(file, **kwargs)

    monkeypatch.setattr(tifffile, "imread", recording_imread)
    cases = [
        ((slice(None), 2, slice(None)), [f"s{i}.tif" for i in range(7)]),
        ((slice(None), slice(None), -1), [f"s{i}.tif" for i in range(7)]),
        ((slice(2, 5),), ["s2.tif", "s3.tif", "s4.tif"]),
        ((slice(None, None, -3), 1), ["s0.tif", "s3.tif", "s6.tif"]),
        ((4, 1, 1), ["s4.tif"]),
    ]
    for key, expected_files in cases:
        read_files.clear()
        np.testing.assert_array_equal(volume[key], data[key])
        assert sorted(read_files) == expected_files, key


def _corrupt(path: Path, offset: int, size: int) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * size)


def test_zarr_reads_only_the_chunks_a_key_needs(tmp_path: Path, data: np.ndarray) -> None:
    path = tmp_path / "v.zarr"
    array = zarr.create_array(
        store=str(path), shape=data.shape, chunks=(1, 19, 23), dtype=data.dtype
    )
    array[:] = data
    for depth in (0, 1, 2, 4, 5, 6):  # every chunk file except the one of depth 3
        chunk = path / "c" / str(depth) / "0" / "0"
        _corrupt(chunk, 0, chunk.stat().st_size)
    volume = open_volume(path)

    np.testing.assert_array_equal(volume[3], data[3])
    np.testing.assert_array_equal(volume[3:4, 2:9, ::-2], data[3:4, 2:9, ::-2])
    with pytest.raises(VolumeError, match=r"v\.zarr"):
        volume[2:4]


def test_compressed_tiff_decodes_only_the_pages_a_key_needs(
    tmp_path: Path, data: np.ndarray
) -> None:
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, data, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        first_page = tif.pages.first
        _corrupt(path, first_page.dataoffsets[0], first_page.databytecounts[0])
    volume = open_volume(path)

    assert volume.access == "zarr"
    np.testing.assert_array_equal(volume[1:], data[1:])
    np.testing.assert_array_equal(volume[3, :, 5], data[3, :, 5])
    with pytest.raises(VolumeError, match=r"zlib\.tif") as error:
        volume[:, 0, 0]
    assert error.value.__cause__ is not None


def test_single_page_tiff_is_a_volume_of_depth_one(tmp_path: Path, data: np.ndarray) -> None:
    for compression in (None, "zlib"):
        path = tmp_path / f"page-{compression}.tif"
        tifffile.imwrite(path, data[0], compression=compression)
        volume = open_volume(path)
        assert volume.shape == (1, 19, 23)
        assert volume.access == ("memmap" if compression is None else "zarr")
        for key in [0, -1, (slice(None), 3), (..., slice(2, None, -1)), (slice(1, None),)]:
            np.testing.assert_array_equal(volume[key], data[:1][key])


def test_big_endian_tiff_is_read_in_native_byte_order(tmp_path: Path, data: np.ndarray) -> None:
    path = tmp_path / "big-endian.tif"
    tifffile.imwrite(path, data, byteorder=">")
    volume = open_volume(path)
    assert volume.access == "memmap"
    assert volume.dtype == data.dtype
    assert volume[2:4].dtype.isnative
    np.testing.assert_array_equal(volume[2:4], data[2:4])


def test_directory_with_zarr_metadata_opens_as_zarr(tmp_path: Path, data: np.ndarray) -> None:
    for zarr_format in (2, 3):
        path = tmp_path / f"array-v{zarr_format}"  # no .zarr suffix
        array = zarr.create_array(
            store=str(path), shape=data.shape, dtype=data.dtype, zarr_format=zarr_format
        )
        array[:] = data
        volume = open_volume(path)
        assert isinstance(volume, ZarrVolume)
        np.testing.assert_array_equal(volume.read(), data)


PERMUTATIONS = list(itertools.permutations(AXES))


@pytest.mark.parametrize("axes", PERMUTATIONS, ids="-".join)
def test_axes_present_the_canonical_order(
    tmp_path: Path, data: np.ndarray, axes: tuple[str, str, str]
) -> None:
    stored = np.transpose(data, [AXES.index(name) for name in axes])
    stored_chunks = (2, 5, 7)
    path = tmp_path / "stored.zarr"
    array = zarr.create_array(
        store=str(path), shape=stored.shape, chunks=stored_chunks, dtype=stored.dtype
    )
    array[:] = stored

    volume = open_volume(path, axes=axes)

    assert isinstance(volume, TransposedVolume) == (axes != AXES)
    assert volume.shape == data.shape
    assert volume.chunks == tuple(stored_chunks[axes.index(name)] for name in AXES)
    np.testing.assert_array_equal(volume.read(), data)
    for key in KEYS:
        np.testing.assert_array_equal(volume[key], data[key], err_msg=repr(key))
    assert pickle.loads(pickle.dumps(volume)).shape == data.shape


def test_transposed_view_reads_only_the_stored_key(array_volume: type, data: np.ndarray) -> None:
    stored = array_volume(np.transpose(data, (1, 2, 0)), chunks=(19, 23, 1))
    volume = TransposedVolume(stored, ("rows", "cols", "depth"))

    np.testing.assert_array_equal(volume[2], data[2])
    np.testing.assert_array_equal(volume[::-2, 4, 1:3], data[::-2, 4, 1:3])

    assert stored.keys == [
        (slice(0, 19, 1), slice(0, 23, 1), 2),
        (4, slice(1, 3, 1), slice(0, 7, 2)),
    ]
    assert volume.chunks == (1, 19, 23)
    assert "axes=('rows', 'cols', 'depth')" in repr(volume)


@pytest.mark.parametrize(
    "axes",
    [("depth", "rows"), ("depth", "depth", "cols"), ("z", "y", "x"), "zyx", "depthrowscols"],
)
def test_invalid_axes_raise_value_error(tmp_path: Path, axes: object) -> None:
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(ValueError, match="permutation of") as error:
        open_volume(path, axes=axes)
    assert repr(axes) in str(error.value)
