"""Write volumes as compressed zarr arrays or Fiji-readable TIFF stacks, slab by slab."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile
import zarr
from zarr.codecs import ZstdCodec

from batteryct.io.errors import VolumeError, check_dtype
from batteryct.io.volume import Volume

DEFAULT_CHUNKS = (64, 256, 256)
ZSTD_LEVEL = 3
IMAGEJ_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
# Classic TIFF offsets are 32-bit; keep a margin below 4 GiB for tags and IFDs.
BIGTIFF_THRESHOLD_BYTES = 3_900_000_000

VolumeSource = np.ndarray | Volume


def create_zarr(
    path: str | os.PathLike[str],
    shape: tuple[int, int, int],
    dtype: npt.DTypeLike,
    chunks: tuple[int, int, int] | None = None,
    fill_value: float = 0,
    overwrite: bool = False,
) -> zarr.Array:
    """Create an empty zstd-compressed zarr (format 3) array to be filled incrementally.

    `chunks` defaults to (64, 256, 256) clipped to `shape`.
    """
    path = Path(path)
    shape = _positive_triple("shape", shape)
    chunks = (
        tuple(min(chunk, size) for chunk, size in zip(DEFAULT_CHUNKS, shape, strict=True))
        if chunks is None
        else _positive_triple("chunks", chunks)
    )
    dtype = check_dtype(np.dtype(dtype), f"zarr array {path}")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise VolumeError(f"{path} already exists; pass overwrite=True to replace it")
        _remove(path)
    array = zarr.create_array(
        store=str(path),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill_value,
        compressors=ZstdCodec(level=ZSTD_LEVEL),
        zarr_format=3,
    )
    return _storing_every_chunk(array)


def _storing_every_chunk(array: zarr.Array) -> zarr.Array:
    """`array` set to store every chunk written to it, fill values only or not.

    zarr otherwise compares each chunk with the fill value before storing it, which costs
    several times the chunk's compression (see BENCHMARKS.md); a chunk of fill values only
    is a few bytes once compressed."""
    return array.with_config({"write_empty_chunks": True})


def open_zarr_for_writing(path: str | os.PathLike[str]) -> zarr.Array:
    """The zarr array at `path`, opened to be written in place (see `_storing_every_chunk`)."""
    return _storing_every_chunk(zarr.open_array(str(path), mode="r+"))


def write_zarr(
    path: str | os.PathLike[str],
    source: VolumeSource,
    chunks: tuple[int, int, int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `source` to a compressed zarr array at `path`, one chunk-deep slab at a time.

    The array is built in a temporary sibling and renamed onto `path` only once complete.
    """
    path = Path(path)
    shape, dtype = _source_layout(source)
    with _atomic_output(path, overwrite) as temporary:
        array = create_zarr(temporary, shape, dtype, chunks)
        slab_depth = array.chunks[0]
        for start in range(0, shape[0], slab_depth):
            array[start : start + slab_depth] = source[start : start + slab_depth]
    return path


def export_tiff(
    source: VolumeSource,
    path: str | os.PathLike[str],
    voxel_size_um: float | tuple[float, float, float] | None = None,
    compression: str | None = None,
) -> Path:
    """Export `source` as a multi-page TIFF that Fiji opens as a z-stack, replacing `path`.

    uint8, uint16 and float32 are written as ImageJ hyperstacks; other dtypes as plain
    multi-page TIFF (BigTIFF beyond ~3.9 GB). `voxel_size_um` is one size or
    (depth, rows, cols) in micrometres. `compression` is any tifffile codec name, e.g. "zlib".
    """
    path = Path(path)
    if path.is_dir():
        raise VolumeError(f"{path} is a folder; export_tiff writes a single .tif file")
    shape, dtype = _source_layout(source)
    large = math.prod(shape) * dtype.itemsize > BIGTIFF_THRESHOLD_BYTES
    # ImageJ stacks cannot be BigTIFF: beyond 4 GB they rely on contiguous, uncompressed data.
    imagej = dtype in IMAGEJ_DTYPES and not (large and compression is not None)
    metadata: dict[str, object] = {"axes": "ZYX"}
    resolution_options: dict[str, object] = {}
    if voxel_size_um is not None:
        depth_um, rows_um, cols_um = _voxel_size(voxel_size_um)
        metadata.update(spacing=depth_um, unit="um")
        # ImageJ reads pixels per `unit`; plain TIFF readers know inch or centimetre only.
        per_unit = 1.0 if imagej else 1e4
        resolution_options = {
            "resolution": (per_unit / cols_um, per_unit / rows_um),
            "resolutionunit": "NONE" if imagej else "CENTIMETER",
        }
    with _atomic_output(path, overwrite=True) as temporary:
        tifffile.imwrite(
            temporary,
            data=_planes(source, dtype),
            shape=shape,
            dtype=dtype,
            imagej=imagej,
            bigtiff=large and not imagej,
            compression=compression,
            metadata=metadata,
            **resolution_options,
        )
    return path


def _planes(source: VolumeSource, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Yield the depth planes of `source`, reading a Volume one chunk-deep slab at a time."""
    slab_depth = source.chunks[0] if isinstance(source, Volume) else 1
    for start in range(0, source.shape[0], slab_depth):
        for plane in source[start : start + slab_depth]:
            yield np.asarray(plane, dtype=dtype)


def _source_layout(source: VolumeSource) -> tuple[tuple[int, int, int], np.dtype]:
    if not isinstance(source, (np.ndarray, Volume)):
        raise TypeError(f"source must be a numpy array or a Volume, got {type(source).__name__}")
    if source.ndim != 3:
        raise ValueError(f"source must be 3D (depth, rows, cols), got shape {source.shape}")
    depth, rows, cols = source.shape
    return (depth, rows, cols), check_dtype(source.dtype, "source data")


def _positive_triple(name: str, value: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(value) != 3 or any(int(size) < 1 for size in value):
        raise ValueError(f"{name} must be three positive ints (depth, rows, cols), got {value}")
    depth, rows, cols = (int(size) for size in value)
    return depth, rows, cols


def _voxel_size(voxel_size_um: float | tuple[float, float, float]) -> tuple[float, float, float]:
    sizes = (voxel_size_um,) * 3 if np.isscalar(voxel_size_um) else tuple(voxel_size_um)
    if len(sizes) != 3 or not all(math.isfinite(size) and size > 0 for size in sizes):
        raise ValueError(
            "voxel_size_um must be a positive size or (depth, rows, cols) sizes in µm, "
            f"got {voxel_size_um!r}"
        )
    depth_um, rows_um, cols_um = (float(size) for size in sizes)
    return depth_um, rows_um, cols_um


@contextmanager
def _atomic_output(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; move it onto `path` only on success."""
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise VolumeError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(temporary)  # left over by a crashed run that had the same process id
    try:
        yield temporary
        if temporary.is_dir():
            _remove(path)  # a folder cannot be renamed onto an existing path
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
