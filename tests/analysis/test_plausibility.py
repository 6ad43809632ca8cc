"""Warnings when a segmented series tells a story no real cycle can: console, summary, report."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from batteryct.analysis import AnalysisSettings, AnalysisWarning, analyze_series
from tests.analysis.helpers import C, hand_built_cell, write_series

CELL = {
    "plating_side": "end",
    "active_area_cm2": 0.5,
    "current_density_mA_cm2": 1.5,
    "segment_min": 10,
}
PHASES = ["pristine", "charge", "discharge"]


def _warnings(tmp_path, volumes, out=None) -> list[str]:
    manifest = write_series(tmp_path / "series", volumes, [0, 10, 20], PHASES, **CELL)
    settings = AnalysisSettings(meshes=None, figures=out is not None, report=out is not None)
    with pytest.warns(AnalysisWarning) as record:
        result = analyze_series(manifest, out, settings, console=Console(quiet=True))
    assert [str(w.message) for w in record] == result.warnings
    return result.warnings


def test_a_faithful_series_raises_no_story_warning(tmp_path) -> None:
    manifest = write_series(tmp_path, hand_built_cell(), [0, 10, 20], PHASES, **CELL)
    result = analyze_series(
        manifest, None, AnalysisSettings(meshes=None, figures=False), console=Console(quiet=True)
    )
    assert result.warnings == []


def test_no_dendrite_anywhere_is_reported(tmp_path) -> None:
    volumes = hand_built_cell()
    for volume in volumes:
        volume[volume == C["dendrite"]] = 0
    warnings = _warnings(tmp_path, volumes)
    assert any("no dendrite in any scan" in w for w in warnings)


def test_deposited_li_in_the_pristine_scan_is_reported_and_written(tmp_path) -> None:
    volumes = hand_built_cell()
    volumes[0][14:16] = C["deposited_li"]  # 2 voxels of 2 µm: 4 µm effective thickness
    out = tmp_path / "analysis"
    warnings = _warnings(tmp_path, volumes, out)
    assert any("deposited li in the pristine scan scan_00" in w for w in warnings)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == warnings
    assert "pristine scan scan_00" in (out / "report.html").read_text()


def test_a_series_without_electrodes_says_why_the_edges_are_nan(tmp_path) -> None:
    volumes = hand_built_cell()
    for volume in volumes:
        volume[(volume == C["plating_electrode"]) | (volume == C["stripping_electrode"])] = 0
    warnings = _warnings(tmp_path, volumes)
    assert any("no plating electrode voxel in any scan" in w for w in warnings)
    assert any("no stripping electrode voxel in any scan" in w for w in warnings)
