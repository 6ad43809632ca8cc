"""Preparation of raw beamline scans: levelling, rigid registration (SimpleITK), ROI crop and
intensity normalisation into chunked zarr, with the prepared series manifest."""

from batteryct.prepare.intensity import IntensitySettings, Normaliser, sample_values
from batteryct.prepare.level import LevelSettings, level_map, suggest_tilt
from batteryct.prepare.pipeline import OutputSettings, prepare_series
from batteryct.prepare.register import RegisterSettings, register_arrays, register_scan
from batteryct.prepare.rigid import EulerParams, Rigid
from batteryct.prepare.roi import RoiSettings, auto_roi

__all__ = [
    "EulerParams",
    "IntensitySettings",
    "LevelSettings",
    "Normaliser",
    "OutputSettings",
    "RegisterSettings",
    "Rigid",
    "RoiSettings",
    "auto_roi",
    "level_map",
    "prepare_series",
    "register_arrays",
    "register_scan",
    "sample_values",
    "suggest_tilt",
]
