"""The DataModule on the small synthetic series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.utils import instantiate

from batteryct.data import IGNORE_INDEX, LabelMap, PatchDataModule, find_labelled_slices
from batteryct.errors import ConfigError
from batteryct.classes import ANALYSIS_TO_NETWORK
from batteryct.classes import NETWORK_CLASSES as NETWORK_CLASSES_BY_ID
from batteryct.series import load_series
from tests.training.helpers import train_config

NETWORK_MAP = dict(ANALYSIS_TO_NETWORK)
NETWORK_CLASSES = list(NETWORK_CLASSES_BY_ID.values())


def _datamodule(series: Path, **kwargs: object) -> PatchDataModule:
    settings = {
        "label_map": LabelMap(NETWORK_CLASSES, NETWORK_MAP),
        "patch_size": (32, 32),
        "train_patches_per_epoch": 64,
        "val_patches": 32,
    }
    settings.update(kwargs)
    return PatchDataModule(series, **settings)


def test_no_patch_comes_from_a_slice_of_another_split(small_series_dir: Path) -> None:
    dm = _datamodule(small_series_dir / "series.yaml", split=(0.6, 0.2, 0.2), test_patches=32)
    dm.setup("fit")
    parts = {name: set(refs) for name, refs in dm.split.items()}
    assert all(parts.values())
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert not (parts["val"] & parts["test"])
    for name, dataset in dm.datasets.items():
        seen = {dataset.slices[dataset.place(i)[0]].ref for i in range(200)}
        assert seen <= parts[name], name


def test_patches_sit_where_labels_are_and_carry_only_mapped_ids(small_series_dir: Path) -> None:
    dm = _datamodule(small_series_dir / "series.yaml", min_labelled_fraction=0.2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 1, 32, 32)
    assert batch["label"].shape == (8, 32, 32)
    labels = batch["label"].numpy()
    assert set(np.unique(labels)) <= {*range(len(NETWORK_CLASSES)), IGNORE_INDEX}
    fractions = [(dm.datasets["val"][i]["label"] != IGNORE_INDEX).float().mean() for i in range(32)]
    assert np.mean([float(f) >= 0.2 for f in fractions]) > 0.9
    # validation patches are the same in every epoch
    first = dm.datasets["val"][5]["image"]
    assert np.array_equal(first.numpy(), dm.datasets["val"][5]["image"].numpy())


def test_augmentation_never_invents_labels_where_there_were_none(small_series_dir: Path) -> None:
    cfg = train_config(small_series_dir / "series.yaml", small_series_dir / "unused")
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dataset = dm.datasets["train"]
    for i in range(40):
        item = dataset[i]
        labels = item["label"].numpy()
        assert set(np.unique(labels)) <= {*range(5), IGNORE_INDEX}
        assert item["image"].shape == (1, 32, 32)


def test_labelled_slices_found_by_scanning_equal_the_manifest_list(small_series_dir: Path) -> None:
    series = load_series(small_series_dir / "series.yaml")
    listed = find_labelled_slices(series, "labels", ("depth", "rows", "cols"))
    for scan in series.scans:
        object.__setattr__(scan, "labelled_slices", None)
    scanned = find_labelled_slices(series, "labels", ("depth", "rows", "cols"))
    assert listed == scanned and len(listed) > 20


def test_unmapped_label_values_are_listed(small_series_dir: Path) -> None:
    mapping = {k: v for k, v in NETWORK_MAP.items() if k != "pit"}
    dm = _datamodule(small_series_dir / "series.yaml", label_map=LabelMap(NETWORK_CLASSES, mapping))
    with pytest.raises(ConfigError, match=r"label values \[3\] are missing from the label map"):
        dm.setup("fit")


def test_patch_larger_than_the_slices_is_a_clear_error(small_series_dir: Path) -> None:
    dm = _datamodule(small_series_dir / "series.yaml", patch_size=(128, 128))
    with pytest.raises(ConfigError, match=r"patch_size \[128, 128\] is larger than slice"):
        dm.setup("fit")


def test_a_manifest_without_labelled_slices_is_a_clear_error(
    small_series_dir: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load((small_series_dir / "series.yaml").read_text())
    for scan in raw["scans"]:
        scan.pop("labels", None)
        scan.pop("labelled_slices", None)
        scan["image"] = str(small_series_dir / scan["image"])
        scan["labels_gt"] = str(small_series_dir / scan["labels_gt"])
    (tmp_path / "series.yaml").write_text(yaml.safe_dump(raw))
    dm = _datamodule(tmp_path / "series.yaml")
    with pytest.raises(ConfigError, match="has no labelled cross_section slices in 'labels'"):
        dm.setup("fit")


def test_class_balance_shows_rare_phases_more_often(small_series_dir: Path) -> None:
    def share_with_rarest(balance: float) -> float:
        # Small patches: on the small cell a 32-pixel patch holds most of a slice anyway.
        dm = _datamodule(small_series_dir / "series.yaml", class_balance=balance, patch_size=(8, 8))
        dm.setup("fit")
        dataset = dm.datasets["train"]
        pixels = np.bincount(
            np.concatenate([s.target[s.target != IGNORE_INDEX] for s in dataset.slices]),
            minlength=len(NETWORK_CLASSES),
        )
        rarest = int(np.argmin(np.where(pixels > 0, pixels, pixels.max() + 1)))
        hits = [(dataset[i]["label"] == rarest).float().mean() for i in range(300)]
        return float(np.mean(hits))

    assert share_with_rarest(1.0) > 1.5 * share_with_rarest(0.0)
    with pytest.raises(ConfigError, match="class_balance"):
        _datamodule(small_series_dir / "series.yaml", class_balance=2.0).setup("fit")


def test_validation_scores_every_labelled_pixel_of_its_slices_exactly_once(
    small_series_dir: Path,
) -> None:
    dm = _datamodule(small_series_dir / "series.yaml", val_patches=None)
    dm.setup("fit")
    dataset = dm.datasets["val"]
    assert dataset.tiles and len(dataset) == len(dataset.tiles)
    scored = [np.zeros(item.target.shape, int) for item in dataset.slices]
    for index, (which, top, left, _) in enumerate(dataset.tiles):
        label = dataset[index]["label"].numpy()
        window = scored[which][top : top + label.shape[0], left : left + label.shape[1]]
        window += label != IGNORE_INDEX
    for item, count in zip(dataset.slices, scored, strict=True):
        labelled = item.target != IGNORE_INDEX
        assert np.all(count[labelled] == 1) and np.all(count[~labelled] == 0)


def test_the_default_split_keeps_every_class_in_validation(small_series_dir: Path) -> None:
    dm = _datamodule(small_series_dir / "series.yaml", orientation="both")
    dm.setup("fit")
    present = set()
    for item in dm.datasets["val"].slices:
        present |= set(np.unique(item.target).tolist()) - {IGNORE_INDEX}
    assert present == set(range(len(NETWORK_CLASSES)))
