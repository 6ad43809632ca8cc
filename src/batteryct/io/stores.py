"""Volumes backed by a folder of TIFF slices, a TIFF stack, or a zarr array, and `open_volume`."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
import zarr

from batteryct.io.errors import VolumeError, check_dtype
from batteryct.io.volume import AXES, TransposedVolume, Volume, VolumeKey, check_axes

TIFF_SUFFIXES = (".tif", ".tiff")
VALID_VOLUMES = "a folder of .tif/.tiff slices, a .tif/.tiff file, or a .zarr array"
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_SLICE_READ_THREADS = 8


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise VolumeError(f"{path} does not exist; expected {VALID_VOLUMES}")


def _natural_key(path: Path) -> tuple[Any, ...]:
    """Sort key comparing the digit runs of a file name as numbers: slice_2 < slice_10."""
    parts = re.split(r"(\d+)", path.name.lower())
    return (*(int(part) if part.isdigit() else part for part in parts), path.name)


class TiffFolderVolume(Volume):
    """A folder of 2D TIFF slices (.tif/.tiff, any case), one per depth index.

    Slices are ordered by the numbers in their names; hidden files are ignored. Opening
    reads only the TIFF headers; indexing decodes only the slices the key selects.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        _require_exists(folder)
        if not folder.is_dir():
            raise VolumeError(f"{folder} is not a folder; expected a folder of .tif/.tiff slices")
        files = sorted(
            (
                entry
                for entry in folder.iterdir()
                if entry.suffix.lower() in TIFF_SUFFIXES
                and not entry.name.startswith(".")
                and entry.is_file()
            ),
            key=_natural_key,
        )
        if not files:
            raise VolumeError(
                f"folder {folder} holds no TIFF slices; looked for files ending in "
                f"{' or '.join(TIFF_SUFFIXES)} (any case)"
            )
        rows_cols, dtype = _slice_header(files[0])
        for file in files[1:]:
            file_shape, file_dtype = _slice_header(file)
            if file_shape != rows_cols:
                raise VolumeError(
                    f"TIFF slice {file} has shape {file_shape}, expected {rows_cols} "
                    f"like the first slice {files[0].name}"
                )
            if file_dtype != dtype:
                raise VolumeError(
                    f"TIFF slice {file} has dtype {file_dtype}, expected {dtype} "
                    f"like the first slice {files[0].name}"
                )
        self.files: tuple[Path, ...] = tuple(files)
        rows, cols = rows_cols
        super().__init__(
            path=folder,
            shape=(len(files), rows, cols),
            dtype=check_dtype(dtype, f"TIFF slice {files[0]}"),
            chunks=(1, rows, cols),
        )

    def _read(self, key: VolumeKey) -> np.ndarray:
        depth, rows, cols = key
        indices = [depth] if isinstance(depth, int) else range(self.shape[0])[depth]
        plane_shape = [
            len(range(size)[index])
            for index, size in zip((rows, cols), self.shape[1:], strict=True)
            if isinstance(index, slice)
        ]
        out = np.empty((len(indices), *plane_shape), dtype=self.dtype)

        def load(position: int, index: int) -> None:
            file = self.files[index]
            try:
                plane = tifffile.imread(file, key=0)
            except Exception as exc:
                raise VolumeError(f"cannot read TIFF slice {file}: {exc}") from exc
            if plane.shape != self.shape[1:]:
                raise VolumeError(
                    f"TIFF slice {file} has shape {plane.shape}, expected {self.shape[1:]} "
                    f"(it changed after the folder was opened)"
                )
            out[position] = plane[rows, cols]

        with ThreadPoolExecutor(max_workers=min(_SLICE_READ_THREADS, len(indices) or 1)) as pool:
            list(pool.map(load, range(len(indices)), indices))
        return out[0] if isinstance(depth, int) else out


def _check_not_truncated(tif: tifffile.TiffFile, pages: Sequence[Any], source: str) -> None:
    """A VolumeError when the file ends before the pixel data that its pages point at."""
    end = max(
        (
            offset + count
            for page in pages
            if page is not None
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True)
        ),
        default=0,
    )
    size = tif.filehandle.size
    if end > size:
        raise VolumeError(
            f"{source} is truncated: its pixel data reach byte {end:,} but the file holds "
            f"{size:,} bytes; copy or export it again"
        )


def _slice_header(file: Path) -> tuple[tuple[int, ...], np.dtype | None]:
    """Shape and dtype of a 2D grayscale TIFF slice, from its header only."""
    try:
        with tifffile.TiffFile(file) as tif:
            page = tif.pages.first
            shape, dtype, samples, pages = (
                page.shape,
                page.dtype,
                page.samplesperpixel,
                len(tif.pages),
            )
            _check_not_truncated(tif, [page], f"TIFF slice {file}")
    except VolumeError:
        raise
    except Exception as exc:
        raise VolumeError(f"cannot read TIFF slice {file}: {exc}") from exc
    if samples != 1 or len(shape) != 2:
        raise VolumeError(
            f"TIFF slice {file} is not a 2D grayscale image (shape {shape}, "
            f"{samples} samples per pixel); each slice must be a single-channel 2D image"
        )
    if pages != 1:
        raise VolumeError(
            f"TIFF slice {file} holds {pages} pages; a slice folder needs one 2D image per "
            f"file (open a multi-page TIFF as a file instead)"
        )
    return shape, dtype


class TiffFileVolume(Volume):
    """A 3D stack in one multi-page TIFF/BigTIFF (or ImageJ hyperstack); one 2D page = depth 1.

    `access` tells how pixels are read: "memmap" for uncompressed contiguous data, else
    "zarr" (tifffile's zarr view, decoding only the pages or tiles a key touches).
    """

    access: Literal["memmap", "zarr"]

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        _require_exists(path)
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise VolumeError(f"cannot read TIFF file {path}: {exc}") from exc
        with tif:
            try:
                series = tif.series[0]
                page = tif.pages.first
                shape, axes, dtype = series.shape, series.axes, series.dtype
            except Exception as exc:
                raise VolumeError(f"cannot read TIFF file {path}: {exc}") from exc
            if page.samplesperpixel != 1:
                raise VolumeError(
                    f"TIFF file {path} does not hold 2D grayscale pages (axes {axes!r}, "
                    f"shape {shape}, {page.samplesperpixel} samples per pixel); "
                    f"expected single-channel pages stacked along depth"
                )
            if len(shape) not in (2, 3):
                raise VolumeError(
                    f"TIFF file {path} holds a {len(shape)}D image series (axes {axes!r}, "
                    f"shape {shape}); expected a 3D stack of 2D pages or a single 2D page"
                )
            dtype = check_dtype(dtype, f"TIFF file {path}")
            _check_complete(tif, series, path)
            self._data: np.ndarray | zarr.Array
            if series.dataoffset is not None:
                self.access = "memmap"
                stored_dtype = np.dtype(tif.byteorder + dtype.char)
                self._data = np.memmap(path, stored_dtype, "r", series.dataoffset, shape)
            else:
                self.access = "zarr"
                self._data = zarr.open(tif.aszarr(), mode="r")
            rows, cols = shape[-2:]
            plane_chunks = page.chunks if page.is_tiled else (rows, cols)
        super().__init__(
            path=path,
            shape=(shape[0] if len(shape) == 3 else 1, rows, cols),
            dtype=dtype,
            chunks=(1, *plane_chunks),
        )

    def _read(self, key: VolumeKey) -> np.ndarray:
        depth, rows, cols = key
        try:
            if self._data.ndim == 3:
                data = self._data[depth, rows, cols]
            else:  # a single 2D page: depth is 0 or a slice over range(1)
                data = self._data[rows, cols]
                data = data if isinstance(depth, int) else data[np.newaxis][depth]
            if self.access == "memmap":  # copy: views of the read-only file map must not escape
                return np.array(data, dtype=self.dtype)
            return np.asarray(data, dtype=self.dtype)
        except Exception as exc:
            raise VolumeError(f"cannot read TIFF file {self.path}: {exc}") from exc

    def __reduce__(self) -> tuple[type[TiffFileVolume], tuple[Path]]:
        """Pickle by path (reopening the file), not by the open memmap or file handle."""
        return type(self), (self.path,)


def _check_complete(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: Path) -> None:
    """A VolumeError for a truncated or damaged stack: pixel data beyond the end of the file,
    or fewer pages readable than the file's own metadata describe."""
    source = f"TIFF file {path}"
    if series.dataoffset is not None:
        size = tif.filehandle.size
        if series.dataoffset + series.nbytes > size:
            raise VolumeError(
                f"{source} is truncated: its pixel data reach byte "
                f"{series.dataoffset + series.nbytes:,} but the file holds {size:,} bytes; "
                "copy or export it again"
            )
    else:
        _check_not_truncated(tif, series.pages, source)
    described = tif.shaped_metadata[0].get("shape") if tif.shaped_metadata else None
    if described is not None and math.prod(described) != math.prod(series.shape):
        raise VolumeError(
            f"{source} is truncated or damaged: its metadata describe shape {tuple(described)} "
            f"but only {tuple(series.shape)} can be read; copy or export it again"
        )


class ZarrVolume(Volume):
    """A 3D zarr array on disk (zarr format 3 or 2), read through zarr slicing."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        _require_exists(path)
        try:
            node = zarr.open(store=str(path), mode="r")
        except Exception as exc:
            raise VolumeError(
                f"cannot open {path} as a zarr array ({exc}); expected a folder holding "
                f"zarr array metadata (zarr.json or .zarray)"
            ) from exc
        if isinstance(node, zarr.Group):
            arrays = sorted(node.array_keys())
            raise VolumeError(
                f"{path} is a zarr group, not an array; open one of its arrays instead "
                f"(arrays in it: {', '.join(arrays) or 'none'})"
            )
        if node.ndim != 3:
            raise VolumeError(
                f"zarr array {path} has shape {node.shape}; a volume must be 3D (depth, rows, cols)"
            )
        self._array = node
        depth, rows, cols = node.shape
        chunk_depth, chunk_rows, chunk_cols = node.chunks
        super().__init__(
            path=path,
            shape=(depth, rows, cols),
            dtype=check_dtype(node.dtype, f"zarr array {path}"),
            chunks=(chunk_depth, chunk_rows, chunk_cols),
        )

    def _read(self, key: VolumeKey) -> np.ndarray:
        try:
            return np.asarray(self._array[key])
        except Exception as exc:
            raise VolumeError(f"cannot read zarr array {self.path}: {exc}") from exc


def open_volume(path: str | os.PathLike[str], axes: Sequence[str] | None = None) -> Volume:
    """Open the volume at `path` lazily, whatever its storage.

    `axes` names the stored axis order, e.g. ("rows", "cols", "depth"); the result then
    presents the canonical (depth, rows, cols) order as a lazy `TransposedVolume`.
    """
    stored_axes = AXES if axes is None else check_axes(axes)
    path = Path(path)
    _require_exists(path)
    volume: Volume
    if path.is_dir():
        is_zarr = path.suffix.lower() == ".zarr" or any(
            (path / marker).is_file() for marker in _ZARR_MARKERS
        )
        volume = ZarrVolume(path) if is_zarr else TiffFolderVolume(path)
    elif path.suffix.lower() in TIFF_SUFFIXES:
        volume = TiffFileVolume(path)
    else:
        raise VolumeError(f"{path} is not a volume; expected {VALID_VOLUMES}")
    return volume if stored_axes == AXES else TransposedVolume(volume, stored_axes)
