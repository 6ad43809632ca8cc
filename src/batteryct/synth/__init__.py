"""The synthetic operando cell: the embedded dataset for the demo, the tests and benchmarks."""

from batteryct.synth.ct import CTSettings, ParallelBeamProjector, simulate_scan
from batteryct.synth.generate import CycleProtocol, generate_series
from batteryct.synth.geometry import CellGeometry, Material, StepCounts, SyntheticCell
from batteryct.synth.hand_labels import HandLabelSettings
from batteryct.synth.misalign import MisalignSettings

__all__ = [
    "CTSettings",
    "CellGeometry",
    "CycleProtocol",
    "HandLabelSettings",
    "Material",
    "MisalignSettings",
    "ParallelBeamProjector",
    "StepCounts",
    "SyntheticCell",
    "generate_series",
    "simulate_scan",
]
