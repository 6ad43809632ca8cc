"""Lazy access to CT volumes on disk (TIFF slices, TIFF stacks, zarr) and writers for them."""

from batteryct.io.errors import SUPPORTED_DTYPES, VolumeError
from batteryct.io.stores import TiffFileVolume, TiffFolderVolume, ZarrVolume, open_volume
from batteryct.io.volume import AXES, TransposedVolume, Volume
from batteryct.io.writers import create_zarr, export_tiff, open_zarr_for_writing, write_zarr

__all__ = [
    "AXES",
    "SUPPORTED_DTYPES",
    "TiffFileVolume",
    "TiffFolderVolume",
    "TransposedVolume",
    "Volume",
    "VolumeError",
    "ZarrVolume",
    "create_zarr",
    "export_tiff",
    "open_volume",
    "open_zarr_for_writing",
    "write_zarr",
]
