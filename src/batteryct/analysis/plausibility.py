"""Checks of a segmented series against the paper's story: what no real cycle would show.

A segmentation that misses a class, or finds one where it cannot be, still gives numbers; these
checks say when the numbers tell a story the experiment cannot have (a wrong model, a series
segmented with another cell's checkpoint, a manifest whose sides are swapped).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batteryct.analysis.run import AnalysisResult

PRISTINE_LIMIT_UM = 0.5
"""Effective thickness of a cycling product (deposit, dendrite, pit) above which its presence
in the pristine scan is reported; a real pristine cell has none of them."""
CYCLING_PRODUCTS = ("dendrite", "pit", "deposited_li", "redeposited_li")


def implausibilities(result: AnalysisResult) -> list[str]:
    """One sentence per way the series contradicts the paper's story (empty: none found)."""
    found: list[str] = []
    names = {s.id: s for s in result.scans}
    electrodes = ("plating_electrode", "stripping_electrode")
    for name in electrodes:
        if not any(s.counts[name] for s in result.scans):
            found.append(
                f"no {name.replace('_', ' ')} voxel in any scan: electrode edges, the gap and the "
                "side thicknesses are undefined (NaN); does the model predict an electrode class?"
            )
    for name in ("dendrite", "deposited_li", "pit"):
        if not any(s.counts[name] for s in result.scans):
            found.append(
                f"no {name.replace('_', ' ')} in any scan: the paper found it in every charged "
                "scan; the segmentation probably misses the class"
            )
    pristine = [s for s in result.scans if s.phase == "pristine"]
    for scan in pristine:
        for name in CYCLING_PRODUCTS:
            thickness = scan.counts[name] * result.voxel_um**3 / result.roi_area_um2
            if thickness > PRISTINE_LIMIT_UM:
                found.append(
                    f"{name.replace('_', ' ')} in the pristine scan {scan.id} "
                    f"({thickness:.2f} µm effective thickness): a cell that has not cycled has "
                    "none; the segmentation confuses it with another phase"
                )
    rates = result.derived.get("rates", {})
    plating = rates.get("plating_li", {}).get("charge_um_per_segment", math.nan)
    if not math.isnan(plating) and plating <= 0:
        found.append(
            f"the plating side's Li does not grow during charge ({plating:+.2f} µm per segment): "
            "check cell.plating_side in the manifest"
        )
    gap = result.derived.get("gap", {})
    some_electrode = all(any(s.counts[n] for s in result.scans) for n in electrodes)
    if some_electrode and any(math.isnan(v) for v in gap.values()):
        found.append(
            "the electrode gap is undefined (NaN) in some scans: an electrode is missing there"
        )
    if result.half_id in names and result.full_id in names:
        half = names[result.half_id].counts["deposited_li"]
        full = names[result.full_id].counts["deposited_li"]
        if half and full > half:
            found.append(
                "more deposited Li after the full cycle than at half cycle: discharge should "
                "strip it; check the half_cycle / full_cycle scans and the phases"
            )
    return found
