"""The grey-value scale a network sees, recorded at training and applied at prediction.

Training maps grey values to 0-1 with `batteryct.data.slices.to_unit_range`: integers by their
type's range (uint8: 0-255), floats as they are. A checkpoint records that mapping per image type
and where a sample of the training images lay on it (`GreyValues.of_series`, saved as
`grey_values` in the checkpoint). Prediction maps every scan with the same numbers
(`GreyValues.scale_for`): a scan of a type the model was trained on exactly as in training; any
other scan (a float64 image holding 0-255, an int16 image) with the training scale, and only
when its grey values lie inside the training range and spread like the training images' -
otherwise it is refused rather than segmented as garbage.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch

from batteryct.errors import ConfigError
from batteryct.io import Volume
from batteryct.series import load_series

SAMPLE_CHUNKS = 4
"""Chunks read from each volume for a sample of its grey values (spread over the volume)."""
SAMPLE_VALUES_PER_CHUNK = 100_000
QUANTILES = (1.0, 99.0)
"""Percentiles that describe where a sample lies on the 0-1 scale."""
MAX_SPREAD_RATIO = 4.0
"""A scan whose percentile range is this many times wider or narrower than the training
images' is on another grey-value scale."""


def dtype_scale(dtype: np.dtype) -> tuple[float, float]:
    """The grey values that `to_unit_range` maps to 0 and to 1 for images of `dtype`."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


@dataclass(frozen=True)
class GreyScale:
    """Grey value `low` -> 0 and `high` -> 1; `bounded`: values outside are refused."""

    low: float
    high: float
    bounded: bool = False
    described: str = ""
    """Where the scale comes from, for messages."""

    def apply(self, block: np.ndarray, where: str) -> np.ndarray:
        """`block` on the model's 0-1 scale (float32); a ConfigError for values out of range."""
        self.check(block, where)
        return (block.astype(np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)

    def apply_tensor(self, block: torch.Tensor) -> torch.Tensor:
        """A checked block, on its device, on the model's 0-1 scale: float32 arithmetic as
        `apply`'s, so both give the same values."""
        low, span = np.float32(self.low), np.float32(self.high - self.low)
        return block.to(torch.float32).sub_(float(low)).div_(float(span))

    def check(self, block: np.ndarray, where: str) -> None:
        """A ConfigError when `block` holds grey values outside a bounded scale."""
        if self.bounded and block.size:
            lowest, highest = float(block.min()), float(block.max())
            if lowest < self.low or highest > self.high:
                raise ConfigError(
                    f"{where}: grey values {lowest:g} to {highest:g} lie outside "
                    f"{self.low:g}-{self.high:g}, {self.described}"
                )


def legacy_scale(dtype: np.dtype) -> GreyScale:
    """What prediction did before checkpoints recorded their grey values: `to_unit_range`."""
    low, high = dtype_scale(dtype)
    return GreyScale(low, high)


def sample_values(volume: Volume) -> np.ndarray:
    """Grey values (float64) of a few whole chunks spread over the volume, thinned evenly."""
    grid = [range(0, size, chunk) for size, chunk in zip(volume.shape, volume.chunks, strict=True)]
    corners = list(product(*grid))
    picks = np.unique(np.linspace(0, len(corners) - 1, SAMPLE_CHUNKS).round().astype(int))
    parts = []
    for pick in picks:
        key = tuple(
            slice(start, start + chunk)
            for start, chunk in zip(corners[pick], volume.chunks, strict=True)
        )
        values = np.asarray(volume[key]).ravel()
        step = max(1, values.size // SAMPLE_VALUES_PER_CHUNK)
        parts.append(values[::step].astype(np.float64))
    return np.concatenate(parts)


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, QUANTILES)
    return float(low), float(high)


@dataclass(frozen=True)
class GreyValues:
    """The grey-value mapping of a model's training images and where they lay on it."""

    scales: dict[str, tuple[float, float]]
    """Image dtype name -> the grey values mapped to 0 and 1."""
    quantiles: tuple[float, float]
    """1st and 99th percentile of a sample of the training images on the 0-1 scale."""

    @classmethod
    def of_series(cls, series: str | Path) -> GreyValues:
        """The mapping that training applies to the images of the manifest `series`."""
        manifest = load_series(series)
        scales: dict[str, tuple[float, float]] = {}
        samples = []
        for scan in manifest.scans:
            volume = manifest.open_image(scan)
            low, high = dtype_scale(volume.dtype)
            scales[volume.dtype.name] = (low, high)
            samples.append((sample_values(volume) - low) / (high - low))
        return cls(scales, _quantiles(np.concatenate(samples)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "scales": {name: list(scale) for name, scale in self.scales.items()},
            "quantiles": list(self.quantiles),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GreyValues:
        scales = {str(k): (float(v[0]), float(v[1])) for k, v in data["scales"].items()}
        low, high = data["quantiles"]
        return cls(scales, (float(low), float(high)))

    def describe(self) -> str:
        return " and ".join(f"{name} ({lo:g}-{hi:g})" for name, (lo, hi) in self.scales.items())

    def scale_for(self, volume: Volume, where: str) -> GreyScale:
        """The scale that maps `volume` as training mapped its images, or a ConfigError that
        says why this volume cannot be mapped so. An integer type the model was trained on is
        mapped as in training; any other volume is checked on a sample of its grey values."""
        dtype = volume.dtype
        if dtype.name in self.scales:
            name = dtype.name
        elif len(self.scales) == 1:
            (name,) = self.scales
        else:
            raise ConfigError(
                f"{where} holds {dtype.name} grey values; the model was trained on "
                f"{self.describe()} images, each type mapped to 0-1 by its own range: convert "
                "the scan to one of these types"
            )
        low, high = self.scales[name]
        if dtype.kind in "ui" and name == dtype.name:
            return GreyScale(low, high)
        remedy = f"map the scans to {low:g}-{high:g} first" + (
            f" (prepare.py does, with intensity.dtype={name})"
            if name in ("uint8", "uint16")
            else ""
        )
        scale = GreyScale(
            low,
            high,
            bounded=np.dtype(name).kind in "ui",
            described=f"the range of the {name} images the model was trained on; {remedy}",
        )
        mapped = _quantiles(scale.apply(sample_values(volume), f"{where} ({dtype.name})"))
        spread = mapped[1] - mapped[0]
        trained_spread = max(self.quantiles[1] - self.quantiles[0], 1e-6)
        apart = mapped[1] < self.quantiles[0] or mapped[0] > self.quantiles[1]
        if apart or not 1 / MAX_SPREAD_RATIO <= spread / trained_spread <= MAX_SPREAD_RATIO:
            raise ConfigError(
                f"{where} holds {dtype.name} grey values on another scale than the model's "
                f"training images: mapped like them ({low:g}-{high:g} -> 0-1) its 1st-99th "
                f"percentiles are {mapped[0]:.3f}-{mapped[1]:.3f}, theirs were "
                f"{self.quantiles[0]:.3f}-{self.quantiles[1]:.3f}; {remedy}"
            )
        return scale
