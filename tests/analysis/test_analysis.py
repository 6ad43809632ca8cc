"""Every quantity on a hand-built cell with exact answers, the synthetic series against its truth,
errors, and the entry point end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from batteryct.analysis import (
    AnalysisError,
    AnalysisSettings,
    AnalysisWarning,
    MeshSettings,
    analyze_series,
)
from batteryct.analysis.scanpass import LabelValueError
from batteryct.electrochem import faraday_segment
from batteryct.errors import ConfigError
from tests.analysis.helpers import C, hand_built_cell, write_series
from tests.entry_point import ROOT, Finished, run_entry_point

QUIET = Console(quiet=True)
V = 2.0  # µm voxels of the hand-built cell
AREA = 8 * 10 * V**2  # ROI in-plane area, µm²
CELL = {
    "plating_side": "end",
    "active_area_cm2": 0.5,
    "current_density_mA_cm2": 1.5,
    "segment_min": 10,
}


@pytest.fixture(scope="module")
def hand_result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hand")
    manifest = write_series(
        folder,
        hand_built_cell(),
        [0, 10, 20],
        ["pristine", "charge", "discharge"],
        voxel_um=V,
        chunks=(8, 4, 4),
        **CELL,
    )
    settings = AnalysisSettings(meshes=None, figures=False)
    return analyze_series(manifest, None, settings, console=QUIET)


def test_volumes_and_side_thicknesses(hand_result):
    r = hand_result
    assert r.volume_um3("plating_electrode").tolist() == [320 * V**3, 320 * V**3, 240 * V**3]
    # plating side = electrode + deposited Li: 4 layers, 4 + 2 layers, 3 layers of 2 µm.
    np.testing.assert_allclose(r.thickness_um("plating_electrode", "deposited_li"), [8, 12, 6])
    # stripping side: 4 layers; 3 layers minus a 4 × 4 × 2 pit; plus 16 redeposited voxels.
    stripping = np.array([320, 240 - 32, 240 - 32 + 16]) * V**3 / AREA
    np.testing.assert_allclose(r.thickness_um("stripping_electrode", "redeposited_li"), stripping)
    rates = r.derived["rates"]
    assert rates["plating_side"]["charge_um_per_segment"] == pytest.approx(4.0)
    assert rates["plating_side"]["discharge_um_per_segment"] == pytest.approx(-6.0)
    assert rates["pit"]["half_cycle_um"] == pytest.approx(32 * V**3 / AREA)


def test_projections_and_occupation(hand_result):
    r = hand_result
    full = r.maps["scan_02"]["dendrite"]
    assert full[0:2, 0:2].tolist() == [[4, 4], [4, 4]]
    assert full[5:7, 7:9].tolist() == [[2, 2], [2, 2]]
    assert full.sum() == 24
    assert r.scans[1].occupation["deposited_li"] == 1.0
    assert r.scans[2].occupation["deposited_li"] == 0.0
    assert r.scans[2].occupation["dendrite"] == pytest.approx(8 / 80)
    # depth profile of the pit at half cycle: 16 voxels in slices 1 and 2
    assert r.scans[1].profiles[:, C["pit"]].tolist() == [0, 16, 16] + [0] * 17


def test_dead_li_detached_vs_attached(hand_result):
    dead = hand_result.derived["dead_li"]
    assert dead == {
        "volume_um3": 24 * V**3,
        "count": 2,
        "attached": 1,
        "detached": 1,
        "detached_volume_um3": 8 * V**3,
    }


def test_pit_filled_halfway_and_void_map(hand_result):
    pits = hand_result.derived["pits"]
    assert pits["pit_area_fraction_half_cycle"] == pytest.approx(0.2)
    assert pits["filled_pit_depth_fraction"] == pytest.approx(0.5)
    assert pits["unfilled_pit_area_fraction"] == pytest.approx(1.0)
    assert pits["void_area_fraction"] == pytest.approx(0.2)
    assert pits["contact_area_fraction"] == pytest.approx(0.8)
    assert pits["mean_void_depth_um"] == pytest.approx(V)
    unfilled = hand_result.derived["maps"]["unfilled_pit_um"]
    assert unfilled[2:6, 2:6].tolist() == [[V] * 4] * 4 and unfilled.sum() == 16 * V


def test_traveling_li_maps(hand_result):
    t = hand_result.derived["traveling"]
    # deposited Li (2 layers) left everywhere; the detached dendrite columns kept 2 voxels of
    # dendrite, the attached one went from 2 + 4 to 4.
    assert t["loss_area_fraction"] == pytest.approx(76 / 80)
    assert t["gain_area_fraction"] == pytest.approx(16 / 80)
    assert t["gain_volume_um3"] == pytest.approx(16 * V**3)


def test_electrode_edges_and_gap(hand_result):
    s0, s1, s2 = hand_result.scans
    assert s0.edges_um["plating_electrode_edge_um"] == pytest.approx(16 * V)
    assert s0.edges_um["stripping_electrode_edge_um"] == pytest.approx(4 * V)
    # pit columns (16 of 80) keep only the first stripping layer: their surface is at 1 voxel
    stripping = (64 * 3 + 16 * 1) / 80 * V
    assert s1.edges_um["stripping_electrode_edge_um"] == pytest.approx(stripping)
    assert s2.edges_um["gap_um"] == pytest.approx(17 * V - stripping)
    assert hand_result.derived["gap"]["charge_change_um"] == pytest.approx(
        16 * V - stripping - 12 * V
    )


def test_faraday_comparison_on_hand_built_cell(hand_result):
    f = hand_result.derived["faraday"]
    seg = faraday_segment(1.5, 0.5, 10).thickness_um
    charge, discharge = f["per_segment"]
    assert charge["ct_thickness_um"] == pytest.approx((160 + 16) * V**3 / AREA)
    assert discharge["ct_thickness_um"] == pytest.approx(16 * V**3 / AREA)
    assert charge["ratio"] == pytest.approx(charge["ct_thickness_um"] / seg)
    assert f["cycle_ratio"] == pytest.approx((176 + 16) * V**3 / AREA / (2 * seg))


def test_faraday_numbers_of_the_paper_cell():
    seg = faraday_segment(1.5, 0.5, 10)
    assert seg.volume_um3 == pytest.approx(6.064e7, rel=1e-3)
    assert seg.thickness_um == pytest.approx(1.213, rel=1e-3)
    assert seg.capacity_mAh == pytest.approx(0.125)


def _thickness(truth: dict, index: int, field: str, *names: str) -> float:
    return sum(truth["scans"][index][field][n] for n in names) / truth["roi_area_um2"]


def _cycle_ratio(truth: dict, field: str) -> float:
    """CT-moved thickness per segment over the cycle: plating-side Li gained during charge,
    redeposited Li gained during discharge (the analysis' definition), from truth.json."""
    half, end = 12, len(truth["scans"]) - 1
    charge = _thickness(truth, half, field, "deposited_li", "dendrite") - _thickness(
        truth, 0, field, "deposited_li", "dendrite"
    )
    discharge = _thickness(truth, end, field, "redeposited_li") - _thickness(
        truth, half, field, "redeposited_li"
    )
    return (charge + discharge) / end


def test_synthetic_series_matches_truth_and_recovers_efficiency(small_series_dir):
    truth = json.loads((small_series_dir / "truth.json").read_text())
    result = analyze_series(
        small_series_dir / "series.yaml",
        None,
        AnalysisSettings(meshes=None, figures=False),
        console=QUIET,
    )
    for scan, expected in zip(result.scans, truth["scans"], strict=True):
        assert scan.counts == expected["voxels"], scan.id
        for name, volume in expected["volume_um3"].items():
            assert result.volume_um3(name)[result.scans.index(scan)] == pytest.approx(volume)
    f = result.derived["faraday"]
    seg = faraday_segment(1.5, 0.5, 10).thickness_um
    # The CT counts porous voxels as Li: its ratio is the visible volume's, from truth.json ...
    assert f["cycle_ratio"] == pytest.approx(_cycle_ratio(truth, "volume_um3") / seg, rel=1e-9)
    minutes = [s["minutes"] for s in truth["scans"][:13]]
    plating = [_thickness(truth, i, "volume_um3", "deposited_li", "dendrite") for i in range(13)]
    rate = np.polyfit(minutes, plating, 1)[0] * 10
    assert f["charge_ct_um_per_segment"] == pytest.approx(rate, rel=1e-6)
    # ... and the Li those voxels hold moves at Faraday's rate times the efficiency.
    assert _cycle_ratio(truth, "li_volume_um3") / seg == pytest.approx(
        truth["efficiency"], rel=0.01
    )
    dead = result.derived["dead_li"]
    assert dead["volume_um3"] == pytest.approx(truth["scans"][-1]["volume_um3"]["dendrite"])
    # Only dendrites that lost their base survive the discharge: every piece left is detached
    # (neighbouring dead dendrites may touch, so pieces can be fewer than dead dendrites).
    assert dead["attached"] == 0
    assert 0 < dead["detached"] <= truth["dendrites_dead"]


def test_missing_cell_constants_skip_with_warning(tmp_path):
    manifest = write_series(
        tmp_path, hand_built_cell(), [0, 10, 20], ["pristine", "charge", "discharge"], voxel_um=V
    )
    with pytest.warns(AnalysisWarning) as record:
        result = analyze_series(
            manifest, None, AnalysisSettings(meshes=None, figures=False), console=QUIET
        )
    messages = " ".join(str(w.message) for w in record)
    assert "plating_side" in messages and "current_density_mA_cm2" in messages
    assert result.derived["faraday"] is None and not result.edge_maps
    assert result.derived["dead_li"]["count"] == 2  # the rest is still computed


def test_scans_of_different_shapes_are_refused(tmp_path):
    vols = hand_built_cell()
    vols[2] = vols[2][:, :, :9]
    manifest = write_series(tmp_path, vols, [0, 10, 20], ["pristine", "charge", "discharge"])
    with pytest.raises(AnalysisError, match=r"scan_02 is \(20, 8, 9\)"):
        analyze_series(manifest, None, AnalysisSettings(meshes=None, figures=False), console=QUIET)


def test_label_values_outside_the_table_are_refused(tmp_path):
    vols = hand_built_cell()
    vols[1][5, 5, 5] = 12
    manifest = write_series(
        tmp_path, vols, [0, 10, 20], ["pristine", "charge", "discharge"], **CELL
    )
    with pytest.raises(LabelValueError, match=r"scan_01.*scan_01\.zarr.*\[12\]"):
        analyze_series(manifest, None, AnalysisSettings(meshes=None, figures=False), console=QUIET)


def test_unwritable_output_is_refused_before_the_work(tmp_path):
    manifest = write_series(
        tmp_path / "s", hand_built_cell(), [0, 10, 20], ["pristine", "charge", "discharge"], **CELL
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(AnalysisError, match="cannot write the analysis output folder"):
        analyze_series(manifest, blocker / "out", console=QUIET)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"connectivity": 5}, r"connectivity is 5; expected 1 \(faces.*3 \(corners"),
        ({"connectivity": 0}, "connectivity is 0"),
        ({"dpi": 0}, "dpi is 0"),
        ({"meshes": MeshSettings(format="obj")}, "meshes.format is 'obj'; expected 'ply' or 'stl'"),
        ({"meshes": MeshSettings(step=0)}, "meshes.step is 0"),
        ({"meshes": MeshSettings(scans=["scan_99"])}, r"meshes.scans names unknown scans"),
        ({"meshes": MeshSettings(classes=["lithium"])}, r"meshes.classes .*\['lithium'\]"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, changes, message):
    manifest = write_series(
        tmp_path / "s", hand_built_cell(), [0, 10, 20], ["pristine", "charge", "discharge"], **CELL
    )
    out = tmp_path / "analysis"
    with pytest.raises(ConfigError, match=message):
        analyze_series(manifest, out, AnalysisSettings(**changes), console=QUIET)
    assert not out.exists()


def test_analysis_never_imports_torch():
    code = (
        "import sys, batteryct.analysis, batteryct.analysis.outputs, "
        "batteryct.analysis.figures, batteryct.analysis.report; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_entry_point_end_to_end(small_series_dir, tmp_path):
    out = tmp_path / "analysis"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "analyze.py"),
            f"series={small_series_dir / 'series.yaml'}",
            f"out={out}",
            "meshes.scans=[full]",
            "meshes.classes=[dendrite]",
            "dpi=60",
            f"hydra.run.dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("volumes", "thickness", "profiles", "colocalization", "faraday", "edges"):
        assert (out / f"{name}.csv").stat().st_size > 100
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faraday"]["segment"]["thickness"]["unit"] == "µm"
    truth = json.loads((small_series_dir / "truth.json").read_text())
    expected = _cycle_ratio(truth, "volume_um3") / faraday_segment(1.5, 0.5, 10).thickness_um
    assert summary["faraday"]["cycle_ratio"]["value"] == pytest.approx(expected, rel=1e-6)
    assert summary["config"]["meshes"]["classes"] == ["dendrite"]
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    for name in (
        "volumes",
        "side_thickness",
        "traveling_li",
        "occupation_maps",
        "unfilled_pits",
        "void_depth",
        "electrode_edges",
        "pearson",
        "electrode_thickness",
        "capacity_ratio",
    ):
        assert f"{name}.png" in figures
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == len(figures)
    mesh = (out / "meshes" / "scan_24_dendrite.ply").read_bytes()
    assert mesh.startswith(b"ply\nformat binary_little_endian") and len(mesh) > 500


def run_analyze(tmp_path: Path, series: Path, *overrides: str) -> Finished:
    return run_entry_point(
        "analyze.py",
        f"series={series}",
        f"out={tmp_path / 'o'}",
        f"hydra.run.dir={tmp_path / 'logs'}",
        *overrides,
        cwd=tmp_path,
    )


def test_entry_point_missing_manifest_exits_2_with_one_line(tmp_path):
    proc = run_analyze(tmp_path, tmp_path / "nowhere" / "series.yaml")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batteryct: error:")
    assert "nowhere" in lines[0]


def test_entry_point_invalid_manifest_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "series.yaml"
    bad.write_text("cell: {voxel_size_um: 1.0}\nscans: []\n")
    proc = run_analyze(tmp_path, bad)
    assert proc.returncode == 2
    assert proc.stderr.startswith("batteryct: error: invalid series manifest")
    assert "Traceback" not in proc.stderr


def test_entry_point_connectivity_outside_1_to_3_exits_2_with_one_line(tmp_path):
    manifest = write_series(
        tmp_path / "s", hand_built_cell(), [0, 10, 20], ["pristine", "charge", "discharge"], **CELL
    )
    proc = run_analyze(tmp_path, manifest, "connectivity=5")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "batteryct: error: connectivity is 5; expected 1"
    )
    assert not (tmp_path / "o").exists()
