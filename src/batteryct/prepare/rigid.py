"""Rigid maps between voxel frames, and their conversion to and from SimpleITK's Euler3D.

All maps here are in voxel index coordinates in canonical (depth, rows, cols) order and go the way
resampling needs them: from a position `u` of the output frame to the position `M @ u + t` of the
input volume that supplies its value (scipy's `affine_transform` and ITK's convention).
SimpleITK images of numpy arrays have their axes reversed (x = cols, y = rows, z = depth); with
unit spacing and the origin at a box's first voxel, ITK's physical points are index coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813

REVERSE = np.eye(3)[::-1]  # (d, r, c) <-> (x, y, z)


@dataclass(frozen=True)
class Rigid:
    """Output position u -> input position `matrix @ u + offset` (depth, rows, cols)."""

    matrix: np.ndarray
    offset: np.ndarray

    @staticmethod
    def identity() -> Rigid:
        return Rigid(np.eye(3), np.zeros(3))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map points (..., 3) in (depth, rows, cols)."""
        return np.asarray(points, dtype=float) @ self.matrix.T + self.offset

    def then(self, inner: Rigid) -> Rigid:
        """The map u -> self(inner(u)): apply `inner` first, then `self`."""
        return Rigid(self.matrix @ inner.matrix, self.matrix @ inner.offset + self.offset)

    def inverse(self) -> Rigid:
        inv = np.linalg.inv(self.matrix)
        return Rigid(inv, -inv @ self.offset)

    def rotation_deg(self) -> float:
        """Angle of the rotation part, in degrees."""
        cos = (np.trace(self.matrix) - 1) / 2
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    def to_dict(self) -> dict[str, Any]:
        return {"matrix": self.matrix.tolist(), "offset": self.offset.tolist()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Rigid:
        return Rigid(np.asarray(data["matrix"], float), np.asarray(data["offset"], float))


def about_centre(
    rotation: np.ndarray, centre: np.ndarray, shift: np.ndarray | None = None
) -> Rigid:
    """u -> rotation (u - centre) + centre + shift."""
    centre = np.asarray(centre, float)
    shift = np.zeros(3) if shift is None else np.asarray(shift, float)
    return Rigid(np.asarray(rotation, float), centre + shift - rotation @ centre)


@dataclass(frozen=True)
class EulerParams:
    """An Euler3D transform about a centre: ITK angles and the translation in (d, r, c) voxels.

    `angles_deg` are ITK's (about x = cols, about y = rows, about z = depth), in degrees.
    """

    angles_deg: np.ndarray
    translation_vox: np.ndarray
    centre_vox: np.ndarray

    def to_rigid(self) -> Rigid:
        transform = self.to_sitk()
        matrix_xyz = np.asarray(transform.GetMatrix()).reshape(3, 3)
        rotation = REVERSE @ matrix_xyz @ REVERSE
        return about_centre(rotation, self.centre_vox, self.translation_vox)

    def to_sitk(self) -> sitk.Euler3DTransform:
        transform = sitk.Euler3DTransform()
        transform.SetCenter(tuple(float(v) for v in self.centre_vox[::-1]))
        ax, ay, az = np.radians(self.angles_deg)
        transform.SetRotation(float(ax), float(ay), float(az))
        transform.SetTranslation(tuple(float(v) for v in self.translation_vox[::-1]))
        return transform

    @staticmethod
    def from_sitk(transform: sitk.Transform) -> EulerParams:
        euler = sitk.Euler3DTransform(transform)
        return EulerParams(
            np.degrees([euler.GetAngleX(), euler.GetAngleY(), euler.GetAngleZ()]),
            np.asarray(euler.GetTranslation())[::-1],
            np.asarray(euler.GetCenter())[::-1],
        )

    def recentred(self, centre_vox: np.ndarray) -> EulerParams:
        """The same map written about another centre (the translation changes, angles do not)."""
        rotation = self.to_rigid().matrix
        centre_vox = np.asarray(centre_vox, float)
        shift = self.translation_vox + (rotation - np.eye(3)) @ (centre_vox - self.centre_vox)
        return EulerParams(self.angles_deg.copy(), shift, centre_vox)

    def to_dict(self) -> dict[str, Any]:
        return {
            "angles_deg_about_cols_rows_depth": [float(a) for a in self.angles_deg],
            "translation_vox_depth_rows_cols": [float(t) for t in self.translation_vox],
            "centre_vox_depth_rows_cols": [float(c) for c in self.centre_vox],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> EulerParams:
        return EulerParams(
            np.asarray(data["angles_deg_about_cols_rows_depth"], float),
            np.asarray(data["translation_vox_depth_rows_cols"], float),
            np.asarray(data["centre_vox_depth_rows_cols"], float),
        )


def rigid_to_euler(rigid: Rigid, centre_vox: np.ndarray) -> EulerParams:
    """The Euler3D parameters (about `centre_vox`) of a rigid map."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(v) for v in np.asarray(centre_vox)[::-1]))
    transform.SetMatrix(tuple((REVERSE @ rigid.matrix @ REVERSE).ravel().tolist()), 1e-6)
    centre = np.asarray(centre_vox, float)
    shift = rigid(centre) - centre
    transform.SetTranslation(tuple(float(v) for v in shift[::-1]))
    return EulerParams.from_sitk(transform)
