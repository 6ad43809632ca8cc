"""The analysis' own error: a series or output folder it cannot use."""

from __future__ import annotations

from batteryct.errors import BatteryCTError


class AnalysisError(BatteryCTError, ValueError):
    """A series the analysis cannot use (shapes, classes, output folder)."""
