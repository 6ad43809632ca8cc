"""Levelling: turn the cell so that its electrodes lie parallel to the in-plane slices.

The tilt is given as two angles (rows, cols): the electrode planes rise by tan(angle) voxels of
depth per voxel along rows and along cols. `level_map` is the rotation about the volume centre
that makes such planes flat; `suggest_tilt` measures the angles from a scan by fitting a plane to
the strongest depth gradient of every in-plane column, so nobody has to pick them by eye.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from batteryct.errors import ConfigError
from batteryct.io import Volume
from batteryct.prepare.rigid import Rigid, about_centre


@dataclass(frozen=True)
class LevelSettings:
    """Fixed levelling rotations, or the measured suggestion (`use_suggestion: true`).

    `max_tilt_deg` bounds the search of the suggestion; `max_voxels` caps the in-plane
    subsampled volume it is measured on.
    """

    tilt_deg: tuple[float, float] = (0.0, 0.0)
    use_suggestion: bool = False
    max_tilt_deg: float = 5.0
    max_voxels: int = 16_000_000
    smoothing_vox: float = 1.0

    def check(self) -> None:
        tilt = list(self.tilt_deg)
        if len(tilt) != 2 or any(abs(float(a)) >= 45 for a in tilt):
            raise ConfigError(
                f"level.tilt_deg is {tilt}; expected two angles [rows, cols] under 45 degrees"
            )
        if not 0 < self.max_tilt_deg < 45:
            raise ConfigError(f"level.max_tilt_deg is {self.max_tilt_deg}; expected 0 to 45")


def tilt_rotation(tilt_deg: tuple[float, float]) -> np.ndarray:
    """The smallest rotation taking the depth axis onto the normal of the tilted planes."""
    slope_rows, slope_cols = np.tan(np.radians(np.asarray(tilt_deg, float)))
    normal = np.array([1.0, -slope_rows, -slope_cols])
    normal /= np.linalg.norm(normal)
    axis = np.cross([1.0, 0.0, 0.0], normal)
    sin = float(np.linalg.norm(axis))
    if sin < 1e-15:
        return np.eye(3)
    return Rotation.from_rotvec(axis / sin * math.atan2(sin, normal[0])).as_matrix()


def level_map(tilt_deg: tuple[float, float], shape: tuple[int, int, int]) -> Rigid:
    """Levelled position -> position in a scan whose electrodes are tilted by `tilt_deg`."""
    centre = (np.asarray(shape, float) - 1) / 2
    return about_centre(tilt_rotation(tilt_deg), centre)


@dataclass(frozen=True)
class TiltSuggestion:
    """Measured electrode tilt and how well a plane fits the interface."""

    tilt_deg: tuple[float, float]
    interface_depth_vox: float
    residual_rms_vox: float
    inlier_fraction: float
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "tilt_deg_rows_cols": [round(a, 4) for a in self.tilt_deg],
            "interface_depth_vox": round(self.interface_depth_vox, 2),
            "residual_rms_vox": round(self.residual_rms_vox, 3),
            "inlier_fraction": round(self.inlier_fraction, 3),
            "in_plane_stride": self.stride,
        }


def suggest_tilt(volume: Volume | np.ndarray, settings: LevelSettings) -> TiltSuggestion:
    """Measure the electrode tilt of a scan (canonical axes) from its strongest depth gradient.

    The volume is read at full depth resolution and an in-plane stride that keeps it under
    `settings.max_voxels`. The depth gradient of the smoothed volume is averaged over all columns
    to find the strongest interface; in each column its depth is then located (sub-voxel) within
    the band a tilt up to `max_tilt_deg` allows, and a plane is fitted robustly.
    """
    depth, rows, cols = volume.shape
    stride = max(1, math.ceil(math.sqrt(depth * rows * cols / settings.max_voxels)))
    data = np.asarray(volume[:, ::stride, ::stride], dtype=np.float32)
    if data.shape[1] * data.shape[2] < 9 or depth < 5:
        raise ConfigError(f"volume of shape {volume.shape} is too small to measure its tilt")
    sigma = settings.smoothing_vox
    in_plane = max(sigma / stride, 0.5)
    gradient = np.gradient(ndimage.gaussian_filter(data, (sigma, in_plane, in_plane)), axis=0)
    profile = gradient.mean(axis=(1, 2))
    half = 3.0
    # An edge at the ends of the volume has its band cut off there, which pulls the slope
    # towards zero: the interface is sought at least a band and a smoothing width inside.
    margin = int(half + 2 * sigma) + 1
    if depth <= 2 * margin:
        raise ConfigError(f"volume of shape {volume.shape} is too thin to measure its tilt")
    profile[:margin] = 0
    profile[depth - margin :] = 0
    peak = int(np.argmax(np.abs(profile)))
    # The strongest interface, with the sign of its mean edge: light-to-dark and dark-to-light
    # edges of a thin layer are not mixed up.
    strength = np.clip(np.sign(profile[peak]) * gradient, 0, None)
    del gradient
    rr, cc = np.meshgrid(
        np.arange(data.shape[1]) * stride, np.arange(data.shape[2]) * stride, indexing="ij"
    )
    depths = np.arange(depth, dtype=np.float32)[:, None, None]
    centre = np.full(rr.shape, float(peak))
    a = b = e = 0.0
    inliers = rms = 0.0
    # Locate the edge in each column by the centroid of its strength in a window around the
    # current plane, refit, recentre: a fixed window would pull the slope towards zero.
    for _ in range(8):
        window = np.where(np.abs(depths - centre[None]) <= half, strength, 0)
        weight = window.sum(axis=0)
        positions = (window * depths).sum(axis=0) / np.maximum(weight, 1e-12)
        inside = (centre - half >= 0) & (centre + half <= depth - 1)
        valid = ((weight > 0) & inside).ravel()
        if valid.sum() < 3:
            raise ConfigError("no electrode interface found to measure the tilt on")
        a, b, e, inliers, rms = _robust_plane(
            rr.ravel()[valid], cc.ravel()[valid], positions.ravel()[valid]
        )
        new_centre = a * rr + b * cc + e
        if np.abs(new_centre - centre).max() < 0.01:
            break
        centre = new_centre
    return TiltSuggestion(
        tilt_deg=(math.degrees(math.atan(a)), math.degrees(math.atan(b))),
        interface_depth_vox=float(a * (rows - 1) / 2 + b * (cols - 1) / 2 + e),
        residual_rms_vox=rms,
        inlier_fraction=inliers,
        stride=stride,
    )


def _robust_plane(
    r: np.ndarray, c: np.ndarray, d: np.ndarray
) -> tuple[float, float, float, float, float]:
    """Least-squares plane d = a r + b c + e, refitted without outliers (3 robust sigmas)."""
    design = np.column_stack([r, c, np.ones_like(r)]).astype(float)
    keep = np.ones(d.size, bool)
    coef = np.zeros(3)
    for _ in range(5):
        coef, *_ = np.linalg.lstsq(design[keep], d[keep], rcond=None)
        residual = d - design @ coef
        mad = np.median(np.abs(residual[keep] - np.median(residual[keep])))
        limit = max(3 * 1.4826 * mad, 0.5)
        new_keep = np.abs(residual) <= limit
        if new_keep.sum() < 3 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    residual = d - design @ coef
    rms = float(np.sqrt(np.mean(residual[keep] ** 2)))
    return float(coef[0]), float(coef[1]), float(coef[2]), float(keep.mean()), rms
