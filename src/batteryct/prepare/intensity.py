"""Intensity normalisation: robust percentiles from a sample of a volume, mapped to uint8/uint16."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from batteryct.errors import ConfigError
from batteryct.io import Volume

OUTPUT_DTYPES = ("uint8", "uint16")


@dataclass(frozen=True)
class IntensitySettings:
    """How grey values are mapped to the prepared scans' integer type.

    The `low_percentile` and `high_percentile` of a sample of at most `max_samples` voxels (evenly
    spaced depth slices, strided in-plane) become 0 and the type's maximum; values beyond are
    clipped. `scope: scan` maps each scan by its own percentiles, `series` pools the samples of all
    scans (keeps real brightness trends between scans). `invert` flips dark and bright.
    """

    dtype: str = "uint8"
    low_percentile: float = 0.1
    high_percentile: float = 99.9
    max_samples: int = 4_000_000
    scope: str = "scan"
    invert: bool = False

    def check(self) -> None:
        if self.dtype not in OUTPUT_DTYPES:
            raise ConfigError(
                f"intensity.dtype is {self.dtype!r}; prepared scans are"
                f" {' or '.join(OUTPUT_DTYPES)}"
            )
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ConfigError(
                f"intensity percentiles are {self.low_percentile}, {self.high_percentile};"
                " expected 0 <= low_percentile < high_percentile <= 100"
            )
        if self.scope not in ("scan", "series"):
            raise ConfigError(f"intensity.scope is {self.scope!r}; expected 'scan' or 'series'")
        if self.max_samples < 1000:
            raise ConfigError(f"intensity.max_samples is {self.max_samples}; use at least 1000")


def sample_values(volume: Volume | np.ndarray, max_samples: int) -> np.ndarray:
    """Up to about `max_samples` voxel values spread over the volume, read slice by slice.

    A volume with no more voxels than `max_samples` is sampled whole.
    """
    depth, rows, cols = volume.shape
    total = depth * rows * cols
    if total <= max_samples:
        return np.asarray(volume[...]).ravel()
    n_slices = min(depth, 64)
    per_slice = max_samples / n_slices
    stride = max(1, math.ceil(math.sqrt(rows * cols / per_slice)))
    picks = np.unique(np.linspace(0, depth - 1, n_slices).round().astype(int))
    return np.concatenate([np.asarray(volume[int(d), ::stride, ::stride]).ravel() for d in picks])


@dataclass(frozen=True)
class Normaliser:
    """Maps grey values linearly so that `low` -> 0 and `high` -> the type's maximum."""

    low: float
    high: float
    dtype: str = "uint8"
    invert: bool = False

    @property
    def top(self) -> int:
        return int(np.iinfo(np.dtype(self.dtype)).max)

    def to_float(self, block: np.ndarray) -> np.ndarray:
        """Normalised values in [0, top] as float32 (not yet rounded)."""
        span = self.high - self.low if self.high > self.low else 1.0
        scaled = (block.astype(np.float32) - np.float32(self.low)) * np.float32(self.top / span)
        np.clip(scaled, 0, self.top, out=scaled)
        if self.invert:
            scaled = np.float32(self.top) - scaled
        return scaled

    def quantise(self, values: np.ndarray) -> np.ndarray:
        """Round float values in [0, top] to the output type."""
        return np.clip(np.rint(values), 0, self.top).astype(self.dtype)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return self.quantise(self.to_float(block))

    def to_dict(self) -> dict[str, float | str | bool]:
        return {
            "low": float(self.low),
            "high": float(self.high),
            "dtype": self.dtype,
            "invert": self.invert,
        }


def percentiles(values: np.ndarray, settings: IntensitySettings) -> tuple[float, float]:
    """The settings' low and high percentiles of `values` (numpy's linear interpolation)."""
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        raise ConfigError("the intensity sample holds no finite values; is the scan empty?")
    low, high = np.percentile(values, [settings.low_percentile, settings.high_percentile])
    return float(low), float(high)
