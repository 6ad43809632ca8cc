"""The synthetic cell against the paper: the numbers its defaults are calibrated to.

`scan_measures` reads, off one scan's true labels, what the paper reports per scan (side
thicknesses, area occupations, electrode gap); `calibration_table` sets the measures of a series
next to the paper's values. Both follow the analysis' definitions (docs/analysis.md): thickness =
volume / ROI area; area occupation = share of in-plane pixels with the class anywhere along
depth; gap = mean inner face of the plating electrode minus that of the stripping electrode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from batteryct.synth.geometry import (
    DENDRITE,
    DEPOSITED,
    PIT,
    PLATING_ELECTRODE,
    REDEPOSITED,
    STRIPPING_ELECTRODE,
)

PAPER_VALUES: dict[str, tuple[float, str]] = {
    "plating side, pristine (µm)": (107.7, "107.7 µm"),
    "plating side, half cycle (µm)": (140.1, "140.1 µm"),
    "stripping side, pristine (µm)": (112.9, "112.9 µm"),
    "stripping side, half cycle (µm)": (101.7, "101.7 µm"),
    "stripping side, full cycle (µm)": (130.5, "130.5 µm"),
    "dendrite area, half cycle (%)": (30.0, "about 30 %"),
    "dendrite area, full cycle (%)": (12.0, "about 12 %"),
    "deposited Li area, half cycle (%)": (98.4, "98.4 %"),
    "deposited Li area, full cycle (%)": (0.16, "0.16 %"),
    "void area, full cycle (%)": (53.9, "53.9 %"),
    "gap growth during charge (µm)": (39.3, "39.3 µm"),
}
"""Quantity -> (paper value, as the paper states it)."""


def scan_measures(labels: np.ndarray, voxel_size_um: float, plating_at_end: bool) -> dict:
    """Side thicknesses (µm), area occupations (fractions) and the electrode gap (µm) of one
    scan's 7-class labels (depth, rows, cols)."""
    area_um2 = labels.shape[1] * labels.shape[2] * voxel_size_um**2
    counts = np.bincount(labels.ravel(), minlength=7)

    def thickness(*classes: int) -> float:
        return float(sum(counts[c] for c in classes) * voxel_size_um**3 / area_um2)

    def area(cid: int) -> float:
        return float((labels == cid).any(axis=0).mean())

    oriented = labels if plating_at_end else labels[::-1]
    plating = oriented == PLATING_ELECTRODE
    stripping = oriented == STRIPPING_ELECTRODE
    gap = np.nan
    if plating.any() and stripping.any():
        depth = labels.shape[0]
        plating_face = np.where(plating.any(0), plating.argmax(0), np.nan)
        stripping_face = np.where(stripping.any(0), depth - stripping[::-1].argmax(0), np.nan)
        gap = float((np.nanmean(plating_face) - np.nanmean(stripping_face)) * voxel_size_um)
    return {
        "plating_side_um": thickness(PLATING_ELECTRODE, DEPOSITED),
        "stripping_side_um": thickness(STRIPPING_ELECTRODE, REDEPOSITED),
        "area_fraction": {
            "dendrite": area(DENDRITE),
            "deposited_li": area(DEPOSITED),
            "pit": area(PIT),
            "redeposited_li": area(REDEPOSITED),
        },
        "gap_um": gap,
    }


def calibration_table(
    measures: Sequence[dict[str, Any]], half: int
) -> dict[str, dict[str, float | str]]:
    """Quantity -> {"paper", "paper_text", "synthetic"} from the measures of every scan in time
    order; `half` is the index of the half-cycle scan (the last of the charge)."""
    start, end = measures[0], measures[-1]
    at_half = measures[half]
    synthetic = {
        "plating side, pristine (µm)": start["plating_side_um"],
        "plating side, half cycle (µm)": at_half["plating_side_um"],
        "stripping side, pristine (µm)": start["stripping_side_um"],
        "stripping side, half cycle (µm)": at_half["stripping_side_um"],
        "stripping side, full cycle (µm)": end["stripping_side_um"],
        "dendrite area, half cycle (%)": 100 * at_half["area_fraction"]["dendrite"],
        "dendrite area, full cycle (%)": 100 * end["area_fraction"]["dendrite"],
        "deposited Li area, half cycle (%)": 100 * at_half["area_fraction"]["deposited_li"],
        "deposited Li area, full cycle (%)": 100 * end["area_fraction"]["deposited_li"],
        "void area, full cycle (%)": 100 * end["area_fraction"]["pit"],
        "gap growth during charge (µm)": at_half["gap_um"] - start["gap_um"],
    }
    return {
        name: {"paper": paper, "paper_text": text, "synthetic": float(synthetic[name])}
        for name, (paper, text) in PAPER_VALUES.items()
    }
