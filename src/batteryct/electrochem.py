"""Faraday's law for lithium: how much Li one current segment moves.

Shared by the synthetic cell (which moves exactly this much Li, times an efficiency) and the
analysis (which compares the CT-measured Li with it).
"""

from __future__ import annotations

from dataclasses import dataclass

LI_SPECIFIC_CAPACITY_MAH_PER_G = 3860.0
"""Theoretical specific capacity of lithium metal."""
LI_DENSITY_G_PER_CM3 = 0.534
UM3_PER_CM3 = 1e12
UM2_PER_CM2 = 1e8


@dataclass(frozen=True)
class FaradaySegment:
    """Li moved by one current segment, for the whole active area."""

    capacity_mAh: float
    mass_g: float
    volume_um3: float
    thickness_um: float
    """The volume spread evenly over the active area: the equivalent Li layer thickness."""


def faraday_segment(
    current_density_mA_cm2: float,
    active_area_cm2: float,
    duration_min: float,
) -> FaradaySegment:
    """Capacity, mass, volume and equivalent thickness of Li moved by one constant-current
    segment."""
    if current_density_mA_cm2 < 0 or active_area_cm2 <= 0 or duration_min < 0:
        raise ValueError(
            "faraday_segment needs current density >= 0 mA/cm², active area > 0 cm² and "
            f"duration >= 0 min; got {current_density_mA_cm2}, {active_area_cm2}, {duration_min}"
        )
    capacity_mAh = current_density_mA_cm2 * active_area_cm2 * duration_min / 60.0
    mass_g = capacity_mAh / LI_SPECIFIC_CAPACITY_MAH_PER_G
    volume_um3 = mass_g / LI_DENSITY_G_PER_CM3 * UM3_PER_CM3
    thickness_um = volume_um3 / (active_area_cm2 * UM2_PER_CM2)
    return FaradaySegment(capacity_mAh, mass_g, volume_um3, thickness_um)
