"""Misaligned scans, as a beamline delivers them: a tilted cell that moves a little between scans.

The preparation stage (`batteryct.prepare`) has to level and register real scans; this module
makes synthetic ones that need it. A misaligned scan is the aligned cell moved through a known
rigid map before the CT projection: its attenuation volume resampled linearly (sub-voxel, as a
real cell moves), its label volume by nearest neighbour. All coordinates are voxel indices in
canonical (depth, rows, cols) order.

- `tilt_deg` = (rows, cols): the whole cell is tilted so that its electrode planes rise by
  tan(tilt) voxels of depth per voxel along rows and along cols. The same for every scan.
- `shift_vox_max` / `rotation_deg_max`: each scan is moved by its own random rigid motion,
  translation uniform in ±shift per axis, rotation uniform in ±rotation about each axis.
- `steady_scans`: scans (indices in time order, negative from the end) left without the random
  motion; by default the last one, the registration reference of `prepare.py`, so a prepared
  series lands in the frame of the aligned original and can be compared with it voxel by voxel.
- `inclusions_per_pixel`: dense inert inclusions (ceramic grains, impurities) in the pouch and the
  stripping electrode, per in-plane pixel. They never change over the cycle, so a misaligned
  series has the static in-plane features that registration needs (a real cell has them; the
  layers of the synthetic one are nearly featureless in plane). Only misaligned series get them:
  aligned series stay exactly as they were.

The map of each scan is recorded (`raw_to_aligned`): the aligned position `M @ p + t` of the
voxel at index `p` of the misaligned volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from batteryct.errors import ConfigError


@dataclass(frozen=True)
class MisalignSettings:
    """How the scans are tilted and moved; the defaults change nothing."""

    tilt_deg: tuple[float, float] = (0.0, 0.0)
    shift_vox_max: float = 0.0
    rotation_deg_max: float = 0.0
    steady_scans: tuple[int, ...] = (-1,)
    inclusions_per_pixel: float = 0.01
    inclusion_radius_vox: tuple[float, float] = (1.0, 2.0)

    @property
    def active(self) -> bool:
        return bool(any(self.tilt_deg) or self.shift_vox_max or self.rotation_deg_max)

    def check(self) -> None:
        tilt = tuple(self.tilt_deg)
        if len(tilt) != 2 or any(abs(float(a)) >= 45 for a in tilt):
            raise ConfigError(
                f"misalign.tilt_deg is {list(tilt)}; expected [rows, cols] angles under 45°"
            )
        if self.shift_vox_max < 0 or self.rotation_deg_max < 0 or self.rotation_deg_max >= 45:
            raise ConfigError(
                "misalign.shift_vox_max must be >= 0 and misalign.rotation_deg_max in [0, 45)"
            )
        low, high = (float(r) for r in self.inclusion_radius_vox)
        if self.inclusions_per_pixel < 0 or not 0 < low <= high:
            raise ConfigError(
                "misalign.inclusions_per_pixel must be >= 0 and misalign.inclusion_radius_vox"
                " [smallest, largest] > 0"
            )


def tilt_matrix(tilt_deg: tuple[float, float]) -> np.ndarray:
    """Rotation (depth, rows, cols) taking the depth axis onto the normal of a plane that rises
    by tan(tilt_rows) per row and tan(tilt_cols) per column, with the smallest rotation angle."""
    slope_rows, slope_cols = np.tan(np.radians(np.asarray(tilt_deg, dtype=float)))
    normal = np.array([1.0, -slope_rows, -slope_cols])
    normal /= np.linalg.norm(normal)
    axis = np.cross([1.0, 0.0, 0.0], normal)
    sin = np.linalg.norm(axis)
    if sin < 1e-15:
        return np.eye(3)
    angle = np.arctan2(sin, normal[0])
    return Rotation.from_rotvec(axis / sin * angle).as_matrix()


def scan_map(
    settings: MisalignSettings,
    shape: tuple[int, int, int],
    index: int,
    n_scans: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(matrix, offset, record) of scan `index`: misaligned index p -> aligned position M p + t.

    The cell is tilted about the volume centre, then moved by the scan's random motion.
    """
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    steady = {i % n_scans for i in settings.steady_scans}
    if index in steady:
        angles = np.zeros(3)
        shift = np.zeros(3)
    else:
        angles = rng.uniform(-1, 1, 3) * settings.rotation_deg_max
        shift = rng.uniform(-1, 1, 3) * settings.shift_vox_max
    motion = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    tilt = tilt_matrix(settings.tilt_deg)
    # A misaligned position p shows what the aligned cell has at
    #   tilt^T (motion (p - c) + c + shift - c) + c  (the tilt undone after the motion).
    matrix = tilt.T @ motion
    offset = tilt.T @ (shift - motion @ centre) + centre
    record = {
        "tilt_deg": [float(a) for a in settings.tilt_deg],
        "motion_angles_deg": [float(a) for a in angles],
        "motion_angles_axes": "rotations about depth, rows, cols (scipy 'xyz' on d, r, c)",
        "motion_shift_vox": [float(s) for s in shift],
        "raw_to_aligned": {
            "matrix": matrix.tolist(),
            "offset": offset.tolist(),
            "axes": ["depth", "rows", "cols"],
        },
    }
    return matrix, offset, record


def misalign_volume(
    volume: np.ndarray, matrix: np.ndarray, offset: np.ndarray, order: int = 0
) -> np.ndarray:
    """Resampling of an aligned volume into the misaligned frame: nearest neighbour (order 0) for
    labels, linear (order 1) for the attenuation, so that a moved plane stays a plane with partial
    volumes at its edge instead of becoming a staircase that differs from scan to scan.

    Beyond the volume the nearest edge voxel continues (the cell is wider than the field of view).
    """
    return ndimage.affine_transform(
        volume, matrix, offset, output_shape=volume.shape, order=order, mode="nearest"
    )


def inclusion_mask(
    settings: MisalignSettings,
    shape: tuple[int, int, int],
    depth_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Voxels of the static inclusions: balls with centres uniform in plane and in `depth_range`
    (internal orientation, the static stripping side of the cell)."""
    mask = np.zeros(shape, bool)
    count = round(settings.inclusions_per_pixel * shape[1] * shape[2])
    low, high = (float(r) for r in settings.inclusion_radius_vox)
    for _ in range(count):
        centre = np.array(
            [rng.uniform(*depth_range), rng.uniform(0, shape[1]), rng.uniform(0, shape[2])]
        )
        radius = rng.uniform(low, high)
        lo = np.maximum(np.floor(centre - radius).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        grid = np.mgrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= dist2 <= radius**2
    return mask
