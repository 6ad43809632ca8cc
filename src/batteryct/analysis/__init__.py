"""Analysis of a segmented operando CT series: quantities, projections, colocalization,
electrochemistry, events, figures, report and meshes. Reads manifests and label volumes only
(never imports torch)."""

from batteryct.analysis.coloc import Colocalization, colocalize
from batteryct.analysis.errors import AnalysisError
from batteryct.analysis.run import (
    AnalysisResult,
    AnalysisSettings,
    AnalysisWarning,
    MeshSettings,
    analyze_series,
)
from batteryct.analysis.scanpass import LabelValueError, ScanStats, scan_stats

__all__ = [
    "AnalysisError",
    "AnalysisResult",
    "AnalysisSettings",
    "AnalysisWarning",
    "Colocalization",
    "LabelValueError",
    "MeshSettings",
    "ScanStats",
    "analyze_series",
    "colocalize",
    "scan_stats",
]
