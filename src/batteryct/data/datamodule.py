"""The LightningDataModule: patches from the labelled slices of a series manifest."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import DataLoader

from batteryct.data.label_map import IGNORE_INDEX, LabelMap
from batteryct.data.patches import PatchDataset
from batteryct.data.sampler import EpochSampler
from batteryct.data.slices import (
    LabelledSlice,
    SliceRef,
    find_labelled_slices,
    load_slices,
    orientation_axes,
)
from batteryct.data.splits import save_split, split_slices
from batteryct.errors import ConfigError
from batteryct.series import Series, load_series

log = logging.getLogger(__name__)


class PatchDataModule(pl.LightningDataModule):
    """Samples 2D patches from the labelled slices of a series, split by slice.

    Only labelled slices are read, once, and kept in memory; patches are cut from them on the
    fly. The split keeps every class in the validation (and test) slices where it can;
    `val_patches` / `test_patches` = None scores those slices whole (tiles), a number scores
    that many random patches (the paper's 31 test patches). `augment` is a list of MONAI
    dictionary transforms on keys "image" and "label".
    """

    def __init__(
        self,
        series: str | Path,
        label_map: LabelMap,
        orientation: str = "cross_section",
        patch_size: Sequence[int] = (512, 512),
        batch_size: int = 8,
        num_workers: int = 0,
        split: Sequence[float] = (0.85, 0.15),
        split_seed: int = 0,
        min_labelled_fraction: float = 0.05,
        class_balance: float = 0.0,
        train_patches_per_epoch: int = 256,
        val_patches: int | None = None,
        test_patches: int | None = None,
        slice_step: int = 1,
        augment: Mapping[str, Callable | None] | Sequence[Callable] | None = None,
    ) -> None:
        super().__init__()
        self.series_path = Path(series)
        self.label_map = label_map
        self.orientation = orientation
        self.axes = orientation_axes(orientation)
        if len(patch_size) != 2 or min(patch_size) < 1:
            raise ConfigError(f"data.patch_size is {list(patch_size)}; expected [height, width]")
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_fractions = tuple(split)
        self.split_seed = split_seed
        self.min_labelled_fraction = min_labelled_fraction
        self.class_balance = class_balance
        self.train_patches_per_epoch = train_patches_per_epoch
        self.val_patches = val_patches
        self.test_patches = test_patches
        self.slice_step = slice_step
        transforms = list(augment.values()) if isinstance(augment, Mapping) else list(augment or [])
        transforms = [t for t in transforms if t is not None]
        self.augment = Compose(transforms) if transforms else None
        self.series: Series | None = None
        self.split: dict[str, list[SliceRef]] = {}
        self.datasets: dict[str, PatchDataset] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.label_map.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.series = load_series(self.series_path)
        refs = find_labelled_slices(self.series, self.label_map.source, self.axes, self.slice_step)
        if not refs:
            raise ConfigError(
                f"{self.series_path} has no labelled {self.orientation} slices in "
                f"'{self.label_map.source}' ({' / '.join(self.axes)} axes): label some slices, "
                "or choose another data.orientation or data.label_map.source"
            )
        loaded = {item.ref: item for item in load_slices(self.series, refs, self.label_map)}
        contents = [set(np.unique(loaded[ref].target).tolist()) - {IGNORE_INDEX} for ref in refs]
        self.split = split_slices(refs, self.split_fractions, self.split_seed, contents)
        counts = {name: len(r) for name, r in self.split.items()}
        log.info("split by slice (%s): %s", self.orientation, counts)
        sizes = {"train": self.train_patches_per_epoch, "val": self.val_patches}
        sizes["test"] = self.test_patches
        for name, part in self.split.items():
            if part:
                self.datasets[name] = self._dataset(name, [loaded[r] for r in part], sizes[name])

    def _dataset(
        self, name: str, part: list[LabelledSlice], n_patches: int | None
    ) -> PatchDataset:
        training = name == "train"
        return PatchDataset(
            part,
            self.patch_size,
            n_patches,
            self.min_labelled_fraction,
            transform=self.augment if training else None,
            seed=self.split_seed + {"train": 0, "val": 1, "test": 2}[name],
            class_balance=self.class_balance if training else 0.0,
        )

    def save_split(self, path: Path) -> None:
        """Write the slice split of this run (JSON)."""
        save_split(self.split, path)

    def _loader(self, name: str) -> DataLoader:
        if name not in self.datasets:
            raise ConfigError(
                f"this run has no {name} slices: data.split is {list(self.split_fractions)}"
                + ("; give a third fraction for a test set" if name == "test" else "")
            )
        dataset = self.datasets[name]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(dataset)) if name == "train" else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
