"""Held-out quality against full labels: scores, the thresholding baseline, quantity errors."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from batteryct.classes import ANALYSIS_CLASSES, NETWORK_CLASSES
from batteryct.evaluation import (
    _best_subset_iou,
    evaluate_predictions,
    held_out_scans,
    relative_errors,
    scores,
    to_network,
)
from batteryct.io import write_zarr
from batteryct.series import load_series
from batteryct.synth import HandLabelSettings
from tests.entry_point import ROOT


def test_scores_equal_a_hand_computation() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 1])
    preds = np.array([0, 1, 0, 1, 0, 2, 2, 0, 0, 1])
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (truth, preds), 1)
    result = scores(confusion, ["background", "a", "b"])
    for cid in range(3):
        inter = np.sum((truth == cid) & (preds == cid))
        union = np.sum((truth == cid) | (preds == cid))
        assert result.iou[cid] == pytest.approx(inter / union)
    assert result.foreground_mean == pytest.approx(np.mean(result.iou[1:]))
    foreground_tp = np.sum((truth == preds) & (truth != 0))
    background_tn = np.sum((truth == 0) & (preds == 0))
    assert result.total_iou == pytest.approx(foreground_tp / (truth.size - background_tn))
    assert result.accuracy == pytest.approx(np.mean(truth == preds))


def test_analysis_classes_merge_into_network_classes() -> None:
    rng = np.random.default_rng(0)
    truth, preds = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    confusion = np.zeros((7, 7), int)
    np.add.at(confusion, (truth, preds), 1)
    names = list(NETWORK_CLASSES.values())
    lookup = {
        "background": "background",
        "dendrite": "dendrite",
        "pit": "pit",
        "deposited_li": "deposited_li",
        "redeposited_li": "deposited_li",
        "plating_electrode": "electrode",
        "stripping_electrode": "electrode",
    }
    to5 = np.array([names.index(lookup[ANALYSIS_CLASSES[c]]) for c in range(7)])
    expected = np.zeros((5, 5), int)
    np.add.at(expected, (to5[truth], to5[preds]), 1)
    np.testing.assert_array_equal(to_network(confusion), expected)


def test_best_bins_for_each_class_equal_a_brute_force_search() -> None:
    rng = np.random.default_rng(1)
    bins, labels = rng.integers(0, 4, 400), rng.integers(0, 3, 400)
    counts = np.zeros((4, 3), int)
    np.add.at(counts, (bins, labels), 1)
    best = _best_subset_iou(counts)
    for cls in range(3):
        expected = 0.0
        for size in range(1, 5):
            for subset in itertools.combinations(range(4), size):
                found = np.isin(bins, subset)
                true = labels == cls
                expected = max(expected, (found & true).sum() / (found | true).sum())
        assert best[cls] == pytest.approx(expected)


def test_relative_errors_fall_back_to_the_other_cycle_point_for_an_absent_class() -> None:
    truth = {
        "deposited_li volume, half cycle": 200.0,
        "deposited_li volume, full cycle": 0.0,
        "dead Li volume": 0.0,
    }
    predicted = {
        "deposited_li volume, half cycle": 180.0,
        "deposited_li volume, full cycle": 10.0,
        "dead Li volume": 5.0,
    }
    errors = relative_errors(predicted, truth)
    assert errors["deposited_li volume, half cycle"] == pytest.approx(-0.1)
    assert errors["deposited_li volume, full cycle"] == pytest.approx(0.05)
    assert np.isnan(errors["dead Li volume"])


@pytest.fixture(scope="module")
def blind_predictions(small_series_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictions manifest: the truth with every dendrite voxel turned into background."""
    folder = tmp_path_factory.mktemp("blind")
    truth = load_series(small_series_dir / "series.yaml")
    raw = yaml.safe_load((small_series_dir / "series.yaml").read_text())
    for entry, scan in zip(raw["scans"], truth.scans, strict=True):
        labels = truth.open_labels_gt(scan).read()
        labels[labels == 1] = 0
        write_zarr(folder / f"{scan.id}.zarr", labels)
        entry["labels_gt"] = str(folder / f"{scan.id}.zarr")
        entry["image"] = str(scan.image)
        entry.pop("labels", None)
        entry.pop("labelled_slices", None)
    raw.pop("hand_labels", None)
    (folder / "series.yaml").write_text(yaml.safe_dump(raw))
    return folder / "series.yaml"


def test_the_truth_scores_perfectly_against_itself(small_series_dir: Path) -> None:
    manifest = small_series_dir / "series.yaml"
    evaluation = evaluate_predictions(manifest, manifest)
    truth = load_series(manifest)
    assert evaluation.scans == [s.id for s in held_out_scans(truth)]
    assert len(evaluation.scans) == 25 - len(HandLabelSettings().scans)
    assert np.all(evaluation.network.iou[~np.isnan(evaluation.network.iou)] == 1.0)
    assert all(e == 0 or np.isnan(e) for e in evaluation.errors.values())


def test_a_missed_class_shows_in_its_iou_its_volumes_and_a_warning(
    small_series_dir: Path, blind_predictions: Path
) -> None:
    evaluation = evaluate_predictions(blind_predictions, small_series_dir / "series.yaml")
    names = evaluation.network.names
    assert evaluation.network.iou[names.index("dendrite")] == 0.0
    assert evaluation.network.iou[names.index("electrode")] == 1.0
    assert evaluation.errors["dendrite volume, half cycle"] == pytest.approx(-1.0)
    assert any("no dendrite in any scan" in w for w in evaluation.warnings)


def test_evaluate_entry_point_prints_and_writes_the_tables(
    small_series_dir: Path, blind_predictions: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            f"predictions={blind_predictions}",
            f"truth={small_series_dir / 'series.yaml'}",
            f"out={tmp_path / 'evaluation'}",
            f"paths.root_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "IoU (%) per network class" in done.stdout and "paper" in done.stdout
    text = (tmp_path / "evaluation" / "evaluation.txt").read_text()
    assert "dendrite volume, half cycle" in text and "-100.0%" in text
    saved = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert saved["network_classes"]["iou"]["dendrite"] == 0.0
