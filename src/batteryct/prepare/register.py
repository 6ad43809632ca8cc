"""Rigid registration of a scan to the reference on several sub-volumes (SimpleITK Euler3D).

Each sub-volume of the (levelled) reference is registered on its own: 6 parameters (3 rotations,
3 translations), normalised cross-correlation, multi-resolution, linear interpolation, ITK's
regular-step gradient descent, started from the translation that phase correlation finds. The
results are written about one common centre and averaged, rotations and translations, as in the
paper; their spread says how far the cell deformed non-rigidly, or how well the data constrain the
fit, and is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813
from skimage.registration import phase_cross_correlation

from batteryct.errors import ConfigError
from batteryct.prepare.resample import Box
from batteryct.prepare.rigid import EulerParams, Rigid

# Values (float32) of a scan over a box of the levelled frame, and where it has data (bool).
Sampler = Callable[[Box], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RegisterSettings:
    """Registration settings (see conf/prepare.yaml for each key)."""

    reference: str | int = -1
    subvolume_vox: int | Sequence[int] | None = None
    default_subvolume_vox: int = 300
    n_subvolumes: tuple[int, int] = (2, 2)
    centres_vox: Sequence[Sequence[int]] | None = None
    search_margin_vox: int = 12
    edge_margin_vox: float = 2.0
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_vox: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    learning_rate: float = 1.0
    min_step: float = 1e-4
    full_sampling_max_voxels: int = 2_000_000
    sampling_fraction: float = 0.2
    seed: int = 0
    tolerance_vox: float = 0.5
    tolerance_deg: float = 0.1
    threads: int = 0

    def check(self) -> None:
        if len(self.shrink_factors) != len(self.smoothing_sigmas_vox) or not self.shrink_factors:
            raise ConfigError(
                "register.shrink_factors and register.smoothing_sigmas_vox need the same"
                f" number of levels; got {list(self.shrink_factors)} and"
                f" {list(self.smoothing_sigmas_vox)}"
            )
        if any(int(f) < 1 for f in self.shrink_factors):
            raise ConfigError("register.shrink_factors must be integers >= 1")
        if not 0 < self.sampling_fraction <= 1:
            raise ConfigError(
                f"register.sampling_fraction is {self.sampling_fraction}; expected (0, 1]"
            )
        if len(tuple(self.n_subvolumes)) != 2 or min(self.n_subvolumes) < 1:
            raise ConfigError(
                f"register.n_subvolumes is {list(self.n_subvolumes)}; expected [rows, cols] >= 1"
            )
        if self.search_margin_vox < 0 or self.iterations < 1 or self.edge_margin_vox < 0:
            raise ConfigError(
                "register.search_margin_vox and edge_margin_vox must be >= 0, iterations >= 1"
            )


def subvolume_size(settings: RegisterSettings, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The sub-volume size: the configured one (which must fit), or the default clipped to shape."""
    if settings.subvolume_vox is None:
        d, r, c = (min(settings.default_subvolume_vox, n) for n in shape)
        return d, r, c
    size = settings.subvolume_vox
    sizes = [int(size)] * 3 if isinstance(size, int | float) else [int(s) for s in size]
    if len(sizes) != 3 or min(sizes) < 8:
        raise ConfigError(
            f"register.subvolume_vox is {size!r}; expected one size or [depth, rows, cols], >= 8"
        )
    if any(s > n for s, n in zip(sizes, shape, strict=True)):
        raise ConfigError(
            f"register.subvolume_vox {sizes} is larger than the reference scan {list(shape)}"
            " (depth, rows, cols); choose a smaller size or leave it null for"
            f" min({settings.default_subvolume_vox}, scan size)"
        )
    return sizes[0], sizes[1], sizes[2]


def subvolume_boxes(settings: RegisterSettings, shape: tuple[int, int, int]) -> list[Box]:
    """Sub-volumes spread over the cell: a rows × cols grid at mid-depth, or the given centres."""
    size = subvolume_size(settings, shape)
    if settings.centres_vox:
        centres = [tuple(int(v) for v in c) for c in settings.centres_vox]
        if any(len(c) != 3 for c in centres):
            raise ConfigError("register.centres_vox: each centre is [depth, rows, cols]")
    else:
        n_rows, n_cols = (int(n) for n in settings.n_subvolumes)
        spots = [
            _spread(n, s, extent)
            for n, s, extent in zip((n_rows, n_cols), size[1:], shape[1:], strict=True)
        ]
        centres = [(shape[0] // 2, r, c) for r in spots[0] for c in spots[1]]
    boxes: list[Box] = []
    for centre in centres:
        box = []
        for axis, (c, s, n) in enumerate(zip(centre, size, shape, strict=True)):
            if not 0 <= c < n:
                raise ConfigError(
                    f"register.centres_vox {list(centre)} lies outside the reference scan"
                    f" {list(shape)} (axis {axis})"
                )
            start = min(max(c - s // 2, 0), n - s)
            box.append((start, start + s))
        if tuple(box) not in boxes:
            boxes.append((box[0], box[1], box[2]))
    return boxes


def _spread(n: int, size: int, extent: int) -> list[int]:
    """`n` centres of boxes of `size` spread evenly over `extent`, touching its ends."""
    if n == 1 or size >= extent:
        return [extent // 2]
    return [round(v) for v in np.linspace(size / 2, extent - size / 2, n)]


@dataclass(frozen=True)
class SubvolumeResult:
    box: Box
    params: EulerParams  # about the common centre
    metric: float
    iterations: int
    stop: str


@dataclass(frozen=True)
class ScanRegistration:
    """The averaged transform (reference frame -> scan, levelled), per-box results and spread."""

    mean: EulerParams
    subvolumes: list[SubvolumeResult]
    spread_vox: float
    spread_deg: float
    agrees: bool

    def rigid(self) -> Rigid:
        return self.mean.to_rigid()

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.to_dict(),
            "spread_vox": round(self.spread_vox, 4),
            "spread_deg": round(self.spread_deg, 5),
            "within_tolerance": self.agrees,
            "subvolumes": [
                {
                    "box_vox": [list(b) for b in s.box],
                    **s.params.to_dict(),
                    "metric": s.metric,
                    "iterations": s.iterations,
                    "stop": s.stop,
                }
                for s in self.subvolumes
            ],
        }

    @staticmethod
    def identity(centre: np.ndarray, boxes: list[Box]) -> ScanRegistration:
        params = EulerParams(np.zeros(3), np.zeros(3), np.asarray(centre, float))
        subs = [SubvolumeResult(b, params, float("nan"), 0, "reference") for b in boxes]
        return ScanRegistration(params, subs, 0.0, 0.0, True)


def register_scan(
    reference: Sampler,
    moving: Sampler,
    boxes: list[Box],
    shape: tuple[int, int, int],
    centre: np.ndarray,
    settings: RegisterSettings,
) -> ScanRegistration:
    """Register `moving` to `reference` on each box; average about `centre`."""
    results = []
    for box in boxes:
        fixed, fixed_mask = reference(box)
        grown = _grow(box, settings.search_margin_vox, shape)
        values, mask = moving(grown)
        params, metric, iterations, stop = register_arrays(
            fixed,
            np.array([b[0] for b in box]),
            values,
            np.array([g[0] for g in grown]),
            settings,
            fixed_mask=fixed_mask,
            moving_mask=mask,
        )
        results.append(SubvolumeResult(box, params.recentred(centre), metric, iterations, stop))
    angles = np.array([r.params.angles_deg for r in results])
    shifts = np.array([r.params.translation_vox for r in results])
    mean = EulerParams(angles.mean(axis=0), shifts.mean(axis=0), np.asarray(centre, float))
    spread_vox, spread_deg = _spread_of(results, mean, shape)
    agrees = spread_vox <= settings.tolerance_vox and spread_deg <= settings.tolerance_deg
    return ScanRegistration(mean, results, spread_vox, spread_deg, agrees)


def _spread_of(
    results: list[SubvolumeResult], mean: EulerParams, shape: tuple[int, int, int]
) -> tuple[float, float]:
    """Largest disagreement of a sub-volume with the mean: voxel displacement over the scan's
    corners and the angle between their rotations."""
    mean_rigid = mean.to_rigid()
    corners = np.array(
        [
            [d, r, c]
            for d in (0, shape[0] - 1)
            for r in (0, shape[1] - 1)
            for c in (0, shape[2] - 1)
        ],
        float,
    )
    reference_points = mean_rigid(corners)
    worst_vox = worst_deg = 0.0
    for result in results:
        rigid = result.params.to_rigid()
        worst_vox = max(worst_vox, float(np.abs(rigid(corners) - reference_points).max()))
        relative = Rigid(rigid.matrix @ mean_rigid.matrix.T, np.zeros(3))
        worst_deg = max(worst_deg, relative.rotation_deg())
    return worst_vox, worst_deg


def _grow(box: Box, margin: int, shape: tuple[int, int, int]) -> Box:
    d, r, c = (
        (max(start - margin, 0), min(stop + margin, n))
        for (start, stop), n in zip(box, shape, strict=True)
    )
    return d, r, c


def _image(array: np.ndarray, origin_drc: np.ndarray, dtype: type = np.float32) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=dtype))
    image.SetOrigin(tuple(float(v) for v in origin_drc[::-1]))
    return image


def register_arrays(
    fixed: np.ndarray,
    fixed_origin: np.ndarray,
    moving: np.ndarray,
    moving_origin: np.ndarray,
    settings: RegisterSettings,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
) -> tuple[EulerParams, float, int, str]:
    """Euler3D parameters (about the fixed box's centre) with moving(T(u)) ≈ fixed(u).

    Positions are voxel indices of the common frame; each array starts at its origin (d, r, c).
    The masks (True = data) keep voxels without data (beyond a scan's edges) out of the metric.
    """
    fixed_image = _image(fixed, fixed_origin)
    moving_image = _image(moving, moving_origin)
    centre = np.asarray(fixed_origin, float) + (np.asarray(fixed.shape) - 1) / 2
    shift0 = _initial_shift(fixed, fixed_origin, moving, moving_origin)
    initial = EulerParams(np.zeros(3), shift0, centre).to_sitk()

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    if fixed.size <= settings.full_sampling_max_voxels:
        method.SetMetricSamplingStrategy(method.NONE)
    else:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(settings.sampling_fraction, settings.seed)
    if fixed_mask is not None and not fixed_mask.all():
        method.SetMetricFixedMask(_image(fixed_mask, fixed_origin, np.uint8))
    if moving_mask is not None and not moving_mask.all():
        method.SetMetricMovingMask(_image(moving_mask, moving_origin, np.uint8))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.learning_rate,
        minStep=settings.min_step,
        numberOfIterations=settings.iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-10,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([int(f) for f in settings.shrink_factors])
    method.SetSmoothingSigmasPerLevel([float(s) for s in settings.smoothing_sigmas_vox])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    if settings.threads:
        method.SetNumberOfThreads(int(settings.threads))
    try:
        result = method.Execute(fixed_image, moving_image)
    except RuntimeError as err:
        raise ConfigError(
            f"registration failed on the sub-volume at {list(fixed_origin)} of shape"
            f" {list(fixed.shape)}: {str(err).strip().splitlines()[-1]}; try a larger"
            " register.subvolume_vox or fewer register.shrink_factors levels"
        ) from err
    final = result.GetNthTransform(0) if isinstance(result, sitk.CompositeTransform) else result
    params = EulerParams.from_sitk(final)
    return (
        params,
        float(method.GetMetricValue()),
        int(method.GetOptimizerIteration()),
        method.GetOptimizerStopConditionDescription().split(".")[0][:120],
    )


def _initial_shift(
    fixed: np.ndarray, fixed_origin: np.ndarray, moving: np.ndarray, moving_origin: np.ndarray
) -> np.ndarray:
    """Translation (d, r, c) from phase correlation of the fixed box with the same box of moving."""
    start = (np.asarray(fixed_origin) - np.asarray(moving_origin)).round().astype(int)
    stop = start + np.asarray(fixed.shape)
    if np.any(start < 0) or np.any(stop > moving.shape):
        return np.zeros(3)
    same = moving[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    if min(fixed.shape) < 4 or not np.std(fixed) or not np.std(same):
        return np.zeros(3)
    shift, _, _ = phase_cross_correlation(
        fixed - fixed.mean(), same - same.mean(), normalization=None
    )
    # phase_cross_correlation returns the shift that moves `same` onto `fixed`; the transform
    # maps fixed positions to moving ones, which is its negative.
    shift = -np.asarray(shift, float)
    limit = np.asarray(fixed.shape) / 3
    return np.where(np.abs(shift) <= limit, shift, 0.0)


def describe(params: EulerParams) -> str:
    t = params.translation_vox
    a = params.angles_deg
    return (
        f"shift (d,r,c) {t[0]:+.2f} {t[1]:+.2f} {t[2]:+.2f} vox,"
        f" rotation {a[0]:+.3f} {a[1]:+.3f} {a[2]:+.3f}°"
    )


def max_abs_angle(params: EulerParams) -> float:
    return float(np.max(np.abs(params.angles_deg))) if params.angles_deg.size else math.nan
