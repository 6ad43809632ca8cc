"""Post-processing to the 7-class scheme, and the combination of binary models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from batteryct.classes import ANALYSIS_CLASSES
from batteryct.errors import ConfigError
from batteryct.io import write_zarr
from batteryct.predict import PostProcessSettings, postprocess_scan
from batteryct.predict.combine import combine_probabilities, combined_classes
from batteryct.predict.postprocess import UNMAPPED, find_interfaces
from batteryct.series import Cell, load_series
from tests.conftest import SMALL_VOXEL_UM

NETWORK = ["background", "dendrite", "pit", "deposited_li", "electrode"]
TO_NETWORK = np.array([0, 1, 2, 3, 3, 4, 4], np.uint8)  # analysis id -> network id
ID = {name: cid for cid, name in ANALYSIS_CLASSES.items()}


def _postprocess(network: np.ndarray, tmp_path: Path, side: str = "end", **settings) -> np.ndarray:
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_zarr(tmp_path / "net.zarr", network)
    cell = Cell(voxel_size_um=SMALL_VOXEL_UM, plating_side=side)
    postprocess_scan(
        tmp_path / "net.zarr", tmp_path / "out.zarr", NETWORK, cell, PostProcessSettings(**settings)
    )
    return zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]


@pytest.mark.parametrize("scan_index", [12, 18, 24])
def test_true_network_labels_come_back_as_the_true_analysis_labels(
    small_series_dir: Path, tmp_path: Path, scan_index: int
) -> None:
    series = load_series(small_series_dir / "series.yaml")
    truth = series.open_labels_gt(series.scans[scan_index]).read()
    restored = _postprocess(TO_NETWORK[truth], tmp_path, min_component_voxels=0)
    np.testing.assert_array_equal(restored, truth)


def test_the_plating_side_decides_the_split(small_series_dir: Path, tmp_path: Path) -> None:
    series = load_series(small_series_dir / "series.yaml")
    truth = series.open_labels_gt(series.scans[18]).read()
    flipped = truth[::-1].copy()  # the same cell with the plating electrode at the start
    restored = _postprocess(TO_NETWORK[flipped], tmp_path, side="start", min_component_voxels=0)
    np.testing.assert_array_equal(restored, flipped)


def test_classes_outside_their_band_become_background(
    small_series_dir: Path, tmp_path: Path
) -> None:
    series = load_series(small_series_dir / "series.yaml")
    truth = series.open_labels_gt(series.scans[12]).read()
    network = TO_NETWORK[truth].copy()
    electrode = np.flatnonzero((truth == ID["plating_electrode"]).mean(axis=(1, 2)) > 0.9)
    stripping = np.flatnonzero((truth == ID["stripping_electrode"]).mean(axis=(1, 2)) > 0.9)
    lyte = (stripping.max() + electrode.min()) // 2
    network[electrode.min() + 3, 10:14, 10:14] = 2  # a "pit" deep in the plating electrode
    network[stripping.min() + 2, 30:33, 30:33] = 1  # a "dendrite" inside the stripping electrode
    network[0:2, 40:50, 40:50] = 3  # "deposited Li" outside the cell
    restored = _postprocess(network, tmp_path, min_component_voxels=0)
    assert restored[electrode.min() + 3, 10:14, 10:14].tolist() == np.zeros((4, 4)).tolist()
    assert np.all(restored[stripping.min() + 2, 30:33, 30:33] == 0)
    assert np.all(restored[0:2, 40:50, 40:50] == 0)
    depth = np.arange(truth.shape[0])[:, None, None] * np.ones_like(restored)
    for name in ("pit", "redeposited_li", "stripping_electrode"):
        assert np.all(depth[restored == ID[name]] < lyte + 3), name
    for name in ("dendrite", "deposited_li", "plating_electrode"):
        assert np.all(depth[restored == ID[name]] > lyte - 3), name


def test_small_components_are_removed(tmp_path: Path) -> None:
    network = np.zeros((30, 40, 40), np.uint8)
    network[2:8] = 4  # stripping electrode
    network[22:28] = 4  # plating electrode
    network[18:22, 5:10, 5:10] = 1  # a dendrite of 100 voxels
    network[19, 30, 30] = 1  # a single-voxel speck
    restored = _postprocess(network, tmp_path, min_component_voxels=8, slab_rows=40)
    assert np.all(restored[18:22, 5:10, 5:10] == ID["dendrite"])
    assert restored[19, 30, 30] == 0


def test_without_postprocessing_classes_the_analysis_lacks_become_unmapped(
    tmp_path: Path,
) -> None:
    network = np.zeros((8, 6, 6), np.uint8)
    network[2:4] = 1  # li (iteration 1): no analysis class
    network[5] = 2  # pit
    write_zarr(tmp_path / "net.zarr", network)
    cell = Cell(voxel_size_um=SMALL_VOXEL_UM, plating_side="end")
    off = PostProcessSettings(enabled=False)
    classes = ["background", "li", "pit"]
    postprocess_scan(tmp_path / "net.zarr", tmp_path / "out.zarr", classes, cell, off)
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]
    assert np.all(out[2:4] == UNMAPPED) and np.all(out[5] == ID["pit"]) and np.all(out[0] == 0)
    with pytest.raises(ConfigError, match="li"):  # post-processing itself needs known classes
        postprocess_scan(
            tmp_path / "net.zarr", tmp_path / "on.zarr", classes, cell, PostProcessSettings()
        )


@pytest.mark.parametrize("slab_rows", [3, 7, 40])
def test_small_component_removal_in_slabs_equals_a_whole_volume_labelling(
    tmp_path: Path, slab_rows: int
) -> None:
    rng = np.random.default_rng(5)
    network = np.zeros((30, 40, 24), np.uint8)
    network[2:8] = 4
    network[22:28] = 4
    specks = rng.random((12, 40, 24)) < 0.12  # components of every size, across slab edges
    network[9:21][specks] = rng.choice([1, 3], size=int(specks.sum()))
    split = _postprocess(network, tmp_path / "split", min_component_voxels=0)
    expected = split.copy()
    for cid in np.unique(split[split > 0]):
        components, _ = ndimage.label(split == cid, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(components.ravel())
        expected[(sizes[components] < 5) & (components > 0)] = 0
    assert (expected != split).sum() > 50  # the volume has small components to remove
    restored = _postprocess(
        network, tmp_path / "slabs", min_component_voxels=5, slab_rows=slab_rows
    )
    np.testing.assert_array_equal(restored, expected)


def test_interfaces_are_the_edges_of_the_widest_gap() -> None:
    electrode = np.zeros((20, 1, 2), bool)
    electrode[1:5, 0, 0] = True
    electrode[12:18, 0, 0] = True
    electrode[6, 0, 0] = True  # a stray electrode voxel in the electrolyte
    outer1, inner1, inner2, outer2 = find_interfaces(electrode)
    assert (outer1[0, 0], inner1[0, 0], inner2[0, 0], outer2[0, 0]) == (1, 6, 12, 17)
    assert np.isnan(inner1[0, 1])  # no electrode in that column


def test_combination_follows_the_priority_order() -> None:
    first = np.array([0.9, 0.9, 0.1, 0.1, 0.5, 0.1])
    second = np.array([0.95, 0.1, 0.9, 0.1, 0.1, 0.1])
    multi = np.array(  # classes of the multi-class model: background, li, pit
        [[0.1, 0.1, 0.1, 0.95, 0.9, 0.05], [0.0] * 6, [0.9, 0.9, 0.9, 0.05, 0.1, 0.95]]
    )
    out = combine_probabilities([first, second], multi, [2], threshold=0.8)
    # voxel 0: both binaries sure -> the first in priority; 2: second; 5: pit from the
    # multi-class model; 3: everyone sure it is background; 4: the first model unsure -> 0
    assert out.tolist() == [2, 2, 3, 1, 0, 4]
    assert combine_probabilities([second, first], None, [], 0.8)[0] == 2  # order decides


def test_combined_classes_need_binary_models() -> None:
    class Model:
        def __init__(self, names: list[str], path: str) -> None:
            self.class_names, self.path = names, path

    names = combined_classes(
        [Model(["background", "deposited_li"], "a"), Model(["background", "electrode"], "b")],
        Model(["background", "li", "pit"], "c"),
        ("pit",),
    )
    assert names == ["background", "deposited_li", "electrode", "pit"]
    with pytest.raises(Exception, match="a binary model"):
        combined_classes([Model(NETWORK, "x")], None, ())


@pytest.mark.parametrize("enabled", [True, False])
def test_post_processing_reports_each_stage_slab_by_slab(tmp_path: Path, enabled: bool) -> None:
    network = np.zeros((12, 10, 7), np.uint8)
    network[:3] = network[-3:] = 4  # electrode layers at both ends
    write_zarr(tmp_path / "net.zarr", network)
    heard: list[tuple[str, int]] = []
    postprocess_scan(
        tmp_path / "net.zarr",
        tmp_path / "out.zarr",
        NETWORK,
        Cell(voxel_size_um=SMALL_VOXEL_UM, plating_side="end"),
        PostProcessSettings(enabled=enabled, slab_rows=3),
        lambda stage, voxels: heard.append((stage, voxels)),
    )
    stages = ["interfaces", "post-processing"] if enabled else ["post-processing"]
    assert [stage for stage, _ in heard] == [s for s in stages for _ in range(5)]  # 10 rows / 3
    for stage in stages:  # its start, then its slabs
        assert [v for s, v in heard if s == stage] == [0] + [3 * 12 * 7] * 3 + [12 * 7]
