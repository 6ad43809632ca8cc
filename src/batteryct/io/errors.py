"""The error raised for unusable volume data, and the data types a volume may hold."""

from __future__ import annotations

import numpy as np

from batteryct.errors import BatteryCTError

SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(name) for name in ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
)


class VolumeError(BatteryCTError):
    """A volume path or its data cannot be used; the message names the file and what is valid."""


def check_dtype(dtype: np.dtype | None, source: object) -> np.dtype:
    """Return `dtype` in native byte order, or raise VolumeError if volumes cannot hold it."""
    if dtype is not None and np.dtype(dtype).newbyteorder("=") in SUPPORTED_DTYPES:
        return np.dtype(dtype).newbyteorder("=")
    found = "an unknown sample format" if dtype is None else f"dtype {np.dtype(dtype).name}"
    supported = ", ".join(d.name for d in SUPPORTED_DTYPES)
    raise VolumeError(f"{source} has {found}; supported dtypes are {supported}")
