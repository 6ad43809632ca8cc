"""The synthetic series as a whole: consistent, faithful to its truth, hard, resumable."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import batteryct.synth.generate as generate_module
from batteryct.classes import ANALYSIS_CLASSES
from batteryct.errors import ConfigError
from batteryct.evaluation import otsu_best_mapping
from batteryct.series import load_series
from batteryct.synth import CycleProtocol, HandLabelSettings, generate_series
from tests.conftest import SMALL_SHAPE, SMALL_VOXEL_UM, small_series_kwargs

ID = {name: cid for cid, name in ANALYSIS_CLASSES.items()}


@pytest.fixture(scope="module")
def series(small_series_dir: Path):
    return load_series(small_series_dir / "series.yaml")


@pytest.fixture(scope="module")
def truths(series) -> list[np.ndarray]:
    return [series.open_labels_gt(scan).read() for scan in series.scans]


def _count(labels: np.ndarray, name: str) -> int:
    return int((labels == ID[name]).sum())


def test_manifest_describes_25_scans_in_time(series) -> None:
    assert len(series.scans) == 25
    assert [s.phase for s in series.scans] == ["pristine"] + ["charge"] * 12 + ["discharge"] * 12
    assert [s.minutes for s in series.scans] == [10.0 * k for k in range(25)]
    assert series.cell.voxel_size_um == SMALL_VOXEL_UM
    assert series.cell.plating_side == "end"
    assert series.classes == ANALYSIS_CLASSES
    for scan in series.scans:
        assert series.open_image(scan).shape == SMALL_SHAPE
        assert series.open_image(scan).dtype == np.uint8


def test_voxel_counts_match_the_truth_json(small_series_dir: Path, truths) -> None:
    truth = json.loads((small_series_dir / "truth.json").read_text())
    voxel_um3 = SMALL_VOXEL_UM**3
    for labels, entry in zip(truths, truth["scans"], strict=True):
        counts = np.bincount(labels.ravel(), minlength=7)
        for cid, name in ANALYSIS_CLASSES.items():
            assert entry["voxels"][name] == counts[cid]
            assert entry["volume_um3"][name] == pytest.approx(counts[cid] * voxel_um3)


def test_moved_li_follows_faraday_times_efficiency(small_series_dir: Path, truths) -> None:
    # Independent arithmetic: 1.5 mA/cm² × 0.5 cm² × 10 min = 0.125 mAh -> µm³ of Li per segment,
    # spread over the 0.5 cm² active area and taken over the ROI's in-plane area.
    volume_um3 = 0.125 / 3860.0 / 0.534 * 1e12
    thickness_um = volume_um3 / 0.5e8
    roi_um2 = SMALL_SHAPE[1] * SMALL_SHAPE[2] * SMALL_VOXEL_UM**2
    voxel_um3 = SMALL_VOXEL_UM**3
    per_segment_um3 = CycleProtocol().efficiency * thickness_um * roi_um2
    truth = json.loads((small_series_dir / "truth.json").read_text())
    entries = truth["scans"]
    stripped = [
        _count(truths[0], "stripping_electrode") - _count(t, "stripping_electrode")
        for t in truths[:13]
    ]
    for k in range(13):
        # the stripping electrode loses dense Li, voxel for voxel
        assert stripped[k] == round(k * per_segment_um3 / voxel_um3)
        # the porous plating-side phases hold that Li (within one voxel of deposit)
        li = entries[k]["li_volume_um3"]
        assert li["deposited_li"] + li["dendrite"] == pytest.approx(
            k * per_segment_um3, abs=voxel_um3
        )
        assert li["deposited_li"] <= entries[k]["volume_um3"]["deposited_li"]
    for j, entry in enumerate(entries[12:]):
        assert entry["li_volume_um3"]["redeposited_li"] == pytest.approx(
            j * per_segment_um3, abs=voxel_um3
        )
    assert truth["moved_li_per_segment_roi_um3"] == pytest.approx(per_segment_um3)


def test_deposited_li_grows_in_charge_and_recedes_in_discharge(truths) -> None:
    deposited = [_count(t, "deposited_li") for t in truths]
    assert all(a < b for a, b in pairwise(deposited[:13]))
    assert all(a > b or a == b == 0 for a, b in pairwise(deposited[12:]))  # until none is left
    assert deposited[0] == 0 and deposited[-1] < 0.05 * deposited[12]
    pits = [_count(t, "pit") for t in truths]
    assert all(a < b for a, b in pairwise(pits[:13]))


def test_classes_only_where_the_domain_allows_them(truths) -> None:
    for labels in truths:
        strip_depths = np.flatnonzero((labels == ID["stripping_electrode"]).mean(axis=(1, 2)) > 0.5)
        plate_depths = np.flatnonzero((labels == ID["plating_electrode"]).mean(axis=(1, 2)) > 0.5)
        middle = (strip_depths.max() + plate_depths.min()) / 2
        depth_of = {
            name: np.nonzero(labels == ID[name])[0]
            for name in ("pit", "redeposited_li", "deposited_li", "dendrite")
        }
        assert np.all(depth_of["pit"] < middle)
        assert np.all(depth_of["redeposited_li"] < middle)
        assert np.all(depth_of["deposited_li"] > middle)
        assert np.all(depth_of["dendrite"] > middle)
        # pits are holes in the stripping electrode: never deeper than its far face
        assert np.all(
            depth_of["pit"]
            >= np.flatnonzero((labels == ID["stripping_electrode"]).any(axis=(1, 2))).min()
        )
    # dendrites protrude beyond the uniform deposit, into the electrolyte
    half_cycle = truths[12]
    deposit_top = np.nonzero(half_cycle == ID["deposited_li"])[0].min()
    assert np.nonzero(half_cycle == ID["dendrite"])[0].min() < deposit_top


def test_dead_li_remains_detached_after_the_cycle(truths) -> None:
    end = truths[-1]
    dendrite = end == ID["dendrite"]
    assert dendrite.sum() > 0
    components, _ = ndimage.label(dendrite | (end == ID["plating_electrode"]))
    electrode_components = set(np.unique(components[end == ID["plating_electrode"]]))
    dendrite_components = set(np.unique(components[dendrite]))
    assert dendrite_components - electrode_components, "no dendrite is detached from the electrode"


def test_hand_labels_are_sparse_partial_and_correct(series, truths) -> None:
    labelled = [(i, s) for i, s in enumerate(series.scans) if s.labels is not None]
    assert [i for i, _ in labelled] == list(HandLabelSettings().scans)
    assert series.hand_label_values == {cid + 1: name for cid, name in ANALYSIS_CLASSES.items()}
    painted_classes: set[int] = set()
    for index, scan in labelled:
        hand = series.open_labels(scan).read()
        on_slice = np.zeros(hand.shape, bool)
        for axis, indices in scan.labelled_slices.items():
            position = ("depth", "rows", "cols").index(axis)
            for i in indices:
                key = [slice(None)] * 3
                key[position] = i
                on_slice[tuple(key)] = True
                fraction = (hand[tuple(key)] > 0).mean()
                assert 0.05 < fraction < 0.95, f"{scan.id} {axis} {i} painted {fraction:.0%}"
        assert np.all(hand[~on_slice] == 0), "labels outside the listed slices"
        painted = hand > 0
        np.testing.assert_array_equal(hand[painted], truths[index][painted] + 1)
        painted_classes |= set(np.unique(hand[painted]) - 1)
    assert painted_classes == set(ANALYSIS_CLASSES)


def test_grey_values_alone_segment_li_poorly(series) -> None:
    """Multi-Otsu thresholds, even with the best bins for each class, cannot find dendrites
    and deposited Li: that is why a network is needed (as the paper says of its data)."""
    scans = [series.scans[i] for i in (3, 9, 15, 21)]
    best = otsu_best_mapping(series, scans)["network"]
    assert best["dendrite"] <= 0.4 and best["deposited_li"] <= 0.4
    assert best["electrode"] > 0.5  # the thresholds do find the big dense layers


def test_plating_side_start_flips_the_cell(tmp_path: Path) -> None:
    kwargs = small_series_kwargs(
        plating_side="start",
        protocol=CycleProtocol(n_charge=2, n_discharge=1),
        hand_labels=generate_module.HandLabelSettings(scans=(2,)),
    )
    series = generate_series(tmp_path / "flipped", **kwargs)
    labels = series.open_labels_gt(series.scans[2]).read()
    plating = np.nonzero(labels == ID["plating_electrode"])[0].mean()
    stripping = np.nonzero(labels == ID["stripping_electrode"])[0].mean()
    assert plating < stripping
    assert series.cell.plating_side == "start"


def test_interrupted_generation_resumes_to_identical_output(tmp_path: Path, monkeypatch) -> None:
    kwargs = small_series_kwargs(
        protocol=CycleProtocol(n_charge=3, n_discharge=2),
        hand_labels=generate_module.HandLabelSettings(scans=(0, 3)),
    )
    reference = generate_series(tmp_path / "reference", **kwargs)

    real_write = generate_module._write_scan
    calls = {"n": 0}

    def failing_write(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real_write(*args, **kw)

    monkeypatch.setattr(generate_module, "_write_scan", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_series(tmp_path / "resumed", **kwargs)
    assert not (tmp_path / "resumed" / "series.yaml").exists()
    monkeypatch.setattr(generate_module, "_write_scan", real_write)
    written = []
    monkeypatch.setattr(
        generate_module, "_write_scan", lambda *a, **k: written.append(a[2]) or real_write(*a, **k)
    )
    resumed = generate_series(tmp_path / "resumed", **kwargs)
    assert written == ["scan_03", "scan_04", "scan_05"]
    for a, b in zip(reference.scans, resumed.scans, strict=True):
        np.testing.assert_array_equal(reference.open_image(a).read(), resumed.open_image(b).read())
        np.testing.assert_array_equal(
            reference.open_labels_gt(a).read(), resumed.open_labels_gt(b).read()
        )
        if a.labels is not None:
            np.testing.assert_array_equal(
                reference.open_labels(a).read(), resumed.open_labels(b).read()
            )
    assert [s.labelled_slices for s in reference.scans] == [
        s.labelled_slices for s in resumed.scans
    ]


def test_existing_folder_with_other_settings_is_refused(tmp_path: Path) -> None:
    kwargs = small_series_kwargs(protocol=CycleProtocol(n_charge=1, n_discharge=0))
    kwargs["hand_labels"] = generate_module.HandLabelSettings(scans=(1,))
    generate_series(tmp_path / "s", **kwargs)
    with pytest.raises(ConfigError, match="overwrite=true"):
        generate_series(tmp_path / "s", **{**kwargs, "seed": 99})
    again = generate_series(tmp_path / "s", **{**kwargs, "seed": 99, "overwrite": True})
    assert len(again.scans) == 2


def test_bad_settings_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hand_labels\.scans"):
        generate_series(
            tmp_path / "x",
            **small_series_kwargs(hand_labels=generate_module.HandLabelSettings(scans=(99,))),
        )
    with pytest.raises(ConfigError, match="efficiency"):
        generate_series(tmp_path / "y", **small_series_kwargs(protocol=CycleProtocol(efficiency=2)))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("inside", [False, True], ids=["out is a file", "out inside a file"])
def test_out_pointing_at_a_file_is_refused_with_one_message(tmp_path: Path, inside: bool) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    out = blocker / "series" if inside else blocker
    message = rf"out={re.escape(str(out))}.*{re.escape(str(blocker))} is a file, not a folder"
    with pytest.raises(ConfigError, match=message):
        generate_series(out, **small_series_kwargs())
    assert blocker.read_text() == "keep me"
