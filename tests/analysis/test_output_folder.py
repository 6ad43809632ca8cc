"""The analysis output folder: whose it is, what a rerun leaves behind, whether it finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import batteryct.analysis.figures as figures_module
from batteryct.analysis import AnalysisError, AnalysisSettings, MeshSettings, analyze_series
from batteryct.analysis.outputs import OUTPUTS
from batteryct.io import write_zarr
from tests.analysis.helpers import C, hand_built_cell, write_series
from tests.entry_point import Finished, run_entry_point

QUIET = Console(quiet=True)
PHASES = ["pristine", "charge", "discharge"]
CELL = {
    "plating_side": "end",
    "active_area_cm2": 0.5,
    "current_density_mA_cm2": 1.5,
    "segment_min": 10,
}
MESH = "meshes/scan_02_dendrite.ply"


def _series(folder: Path, dendrites: bool = True) -> Path:
    volumes = hand_built_cell()
    if not dendrites:
        volumes[2][volumes[2] == C["dendrite"]] = 0
    return write_series(folder, volumes, [0, 10, 20], PHASES, **CELL)


def _settings(**changes: object) -> AnalysisSettings:
    meshes = MeshSettings(scans=["full"], classes=["dendrite"])
    return AnalysisSettings(**{"meshes": meshes, "figures": False, **changes})


def _analyze(manifest: Path, out: Path, **kwargs: object):
    settings = kwargs.pop("settings", None) or _settings()
    return analyze_series(manifest, out, settings, console=QUIET, **kwargs)


def _contents(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _record(out: Path) -> dict:
    return json.loads((out / "analysis.json").read_text())


def test_another_series_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    first = _series(tmp_path / "a")
    second = _series(tmp_path / "b", dendrites=False)
    out = tmp_path / "analysis"
    _analyze(first, out)
    assert (out / MESH).exists()
    before = _contents(out)

    with pytest.raises(AnalysisError, match=r"another series \(.*a/series\.yaml\).*overwrite=true"):
        _analyze(second, out)
    assert _contents(out) == before

    _analyze(second, out, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["series"] == str(second.resolve())
    assert not (out / MESH).exists()  # the first cell's dendrite mesh is gone
    assert _record(out)["complete"] is True


def test_same_analysis_again_replaces_its_outputs_and_drops_stale_ones(tmp_path: Path) -> None:
    manifest = _series(tmp_path / "s")
    out = tmp_path / "analysis"
    _analyze(manifest, out)
    assert (out / MESH).exists()
    (out / "notes.txt").write_text("mine")
    # The labels change under the same manifest (predict.py run again): no dendrite any more.
    volume = hand_built_cell()[2]
    volume[volume == C["dendrite"]] = 0
    write_zarr(tmp_path / "s" / "scan_02.zarr", volume, overwrite=True)

    _analyze(manifest, out, settings=_settings(workers=1))  # workers: not part of the identity
    assert not (out / MESH).exists()
    assert (out / "notes.txt").read_text() == "mine"  # not an output: left alone
    assert _record(out)["complete"] is True


def test_every_output_is_one_a_rerun_replaces(tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    _analyze(_series(tmp_path / "s"), out, settings=_settings(figures=True, dpi=40))
    top_level = {p.name for p in out.iterdir()}
    assert top_level - {"analysis.json"} <= set(OUTPUTS)
    assert {"figures", "meshes", "report.html", "maps.npz", "faraday.csv"} <= top_level
    record = _record(out)
    assert record["complete"] is True
    assert set(record["outputs"]) == {
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "analysis.json"
    }


def test_other_settings_or_foreign_files_are_refused_unless_overwrite(tmp_path: Path) -> None:
    manifest = _series(tmp_path / "s")
    out = tmp_path / "analysis"
    _analyze(manifest, out)
    with pytest.raises(AnalysisError, match=r"this series made with other settings.*overwrite="):
        _analyze(manifest, out, settings=_settings(connectivity=1))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "volumes.csv").write_text("somebody else's table")
    with pytest.raises(AnalysisError, match=r"foreign already holds files that are not an"):
        _analyze(manifest, foreign)
    assert [p.name for p in foreign.iterdir()] == ["volumes.csv"]
    _analyze(manifest, foreign, overwrite=True)
    assert (foreign / "volumes.csv").read_text().startswith("scan,minutes")


def test_an_interrupted_analysis_is_marked_and_redone(tmp_path: Path, monkeypatch) -> None:
    manifest = _series(tmp_path / "s")
    out = tmp_path / "analysis"
    settings = _settings(figures=True, dpi=40)

    def killed(result, folder: Path, dpi: int) -> dict[str, Path]:
        folder.mkdir()
        (folder / "volumes.png").write_bytes(b"half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(figures_module, "make_figures", killed)
    with pytest.raises(KeyboardInterrupt):
        _analyze(manifest, out, settings=settings)
    assert (out / "volumes.csv").exists() and not (out / "report.html").exists()
    assert _record(out)["complete"] is False

    monkeypatch.undo()
    _analyze(manifest, out, settings=settings)  # same analysis: redone without overwrite
    record = _record(out)
    assert record["complete"] is True and "report.html" in record["outputs"]
    assert (out / "figures" / "volumes.png").read_bytes().startswith(b"\x89PNG")


def _run_analyze(tmp_path: Path, *overrides: str) -> Finished:
    return run_entry_point(
        "analyze.py",
        "figures=false",
        "meshes=null",
        f"hydra.run.dir={tmp_path / 'logs'}",
        *overrides,
        cwd=tmp_path,
    )


def test_entry_point_refuses_another_series_folder_unless_overwrite(tmp_path) -> None:
    out = tmp_path / "analysis"
    first, second = _series(tmp_path / "a"), _series(tmp_path / "b")
    assert _run_analyze(tmp_path, f"series={first}", f"out={out}").returncode == 0

    refused = _run_analyze(tmp_path, f"series={second}", f"out={out}")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batteryct: error: ")
    assert "another series" in lines[0] and "overwrite=true" in lines[0]

    replaced = _run_analyze(tmp_path, f"series={second}", f"out={out}", "overwrite=true")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((out / "summary.json").read_text())["series"] == str(second.resolve())
