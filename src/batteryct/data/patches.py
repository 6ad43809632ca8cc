"""Patch sampling from labelled slices, with MONAI augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Compose, Randomizable
from torch.utils.data import Dataset

from batteryct.data.label_map import IGNORE_INDEX
from batteryct.data.slices import LabelledSlice
from batteryct.errors import ConfigError

MAX_PLACEMENT_TRIES = 20


class PatchDataset(Dataset):
    """Square-ish 2D patches placed where labels are, or tiles that cover whole slices.

    A patch is centred near a labelled pixel drawn at random (slices weighted by their labelled
    area; with probability `class_balance`, a pixel of a class drawn uniformly, so rare phases
    such as dendrites are seen as often as the electrodes) and kept once its labelled fraction
    reaches `min_labelled_fraction` (else the best of a few tries). Patch `index` and its
    augmentation are drawn from a generator seeded by (`seed`, `index`): the same index always
    gives the same patch, in any process or DataLoader worker. Indices may exceed `len(self)`:
    training reads fresh indices every epoch (EpochSampler). With `n_patches=None`
    (evaluation), the patches are instead the tiles of a grid over every slice, and each
    labelled pixel is scored in exactly one tile (the overlap that fits the last tile to the
    slice's edge is unlabelled in the later tile).
    """

    def __init__(
        self,
        slices: Sequence[LabelledSlice],
        patch_size: tuple[int, int],
        n_patches: int | None,
        min_labelled_fraction: float = 0.05,
        transform: Compose | None = None,
        seed: int = 0,
        class_balance: float = 0.0,
    ) -> None:
        if not slices:
            raise ConfigError("no labelled slices to sample patches from")
        self.slices = list(slices)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        for item in self.slices:
            height, width = item.target.shape
            if height < self.patch_size[0] or width < self.patch_size[1]:
                raise ConfigError(
                    f"data.patch_size {list(self.patch_size)} is larger than slice "
                    f"{item.ref.name()} ({height} × {width}); use a patch of at most "
                    f"{min(s.target.shape[0] for s in self.slices)} × "
                    f"{min(s.target.shape[1] for s in self.slices)} or another orientation"
                )
        self.tiles = _tiles(self.slices, self.patch_size) if n_patches is None else []
        self.n_patches = len(self.tiles) if n_patches is None else int(n_patches)
        self.min_labelled_fraction = float(min_labelled_fraction)
        self.transform = transform
        self.seed = seed
        self._labelled = [np.flatnonzero(s.target.ravel() != IGNORE_INDEX) for s in self.slices]
        weights = np.array([idx.size for idx in self._labelled], float)
        if weights.sum() == 0:
            raise ConfigError("the labelled slices hold no labelled pixel")
        self._weights = weights / weights.sum()
        if not 0.0 <= class_balance <= 1.0:
            raise ConfigError(f"data.class_balance is {class_balance}; expected 0 to 1")
        self.class_balance = class_balance
        # per class: which slices hold it (weighted by its pixels) and where
        self._by_class: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
        for cid in np.unique(np.concatenate([np.unique(s.target) for s in self.slices])):
            if cid == IGNORE_INDEX:
                continue
            where = [np.flatnonzero(s.target.ravel() == cid) for s in self.slices]
            counts = np.array([w.size for w in where], float)
            self._by_class[int(cid)] = (counts / counts.sum(), where)

    def __len__(self) -> int:
        return self.n_patches

    def place(self, index: int) -> tuple[int, int, int]:
        """(slice number, top row, left column) of patch `index`."""
        return self._place(np.random.default_rng([self.seed, index]))

    def _place(self, rng: np.random.Generator) -> tuple[int, int, int]:
        ph, pw = self.patch_size
        best: tuple[float, tuple[int, int, int]] = (-1.0, (0, 0, 0))
        for _ in range(MAX_PLACEMENT_TRIES):
            if self.class_balance and rng.random() < self.class_balance:
                cid = int(rng.choice(list(self._by_class)))
                slice_weights, where = self._by_class[cid]
                which = int(rng.choice(len(self.slices), p=slice_weights))
                pixel = int(rng.choice(where[which]))
            else:
                which = int(rng.choice(len(self.slices), p=self._weights))
                pixel = int(rng.choice(self._labelled[which]))
            target = self.slices[which].target
            height, width = target.shape
            row, col = divmod(pixel, width)
            top = int(np.clip(row - rng.integers(ph), 0, height - ph))
            left = int(np.clip(col - rng.integers(pw), 0, width - pw))
            fraction = float((target[top : top + ph, left : left + pw] != IGNORE_INDEX).mean())
            if fraction >= self.min_labelled_fraction:
                return which, top, left
            if fraction > best[0]:
                best = (fraction, (which, top, left))
        return best[1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        if self.tiles:
            which, top, left, owned = self.tiles[index]
        else:
            (which, top, left), owned = self._place(rng), None
        ph, pw = self.patch_size
        item = self.slices[which]
        image = torch.from_numpy(item.image[top : top + ph, left : left + pw].copy())[None]
        target = torch.from_numpy(item.target[top : top + ph, left : left + pw].astype(np.int64))
        if owned is not None:
            target[~torch.from_numpy(owned)] = IGNORE_INDEX
        if self.transform is None:
            return {"image": image, "label": target}
        # Shift labels so that "unlabelled" is 0: MONAI pads and resamples labels with zeros.
        shifted = torch.where(target == IGNORE_INDEX, 0, target + 1)[None].float()
        self._seed_transform(np.random.RandomState(rng.integers(2**32)))
        out = self.transform({"image": image, "label": shifted})
        label = torch.as_tensor(out["label"])[0].round().long() - 1
        label[label < 0] = IGNORE_INDEX
        return {"image": torch.as_tensor(out["image"]).float(), "label": label}

    def _seed_transform(self, state: np.random.RandomState) -> None:
        """Let every random transform draw from `state` (one generator, drawn in order)."""
        assert self.transform is not None
        for transform in self.transform.transforms:
            if isinstance(transform, Randomizable):
                transform.set_random_state(state=state)


def _starts(size: int, patch: int) -> list[int]:
    """Tile origins along one axis: a step of one patch, the last tile flush with the edge."""
    starts = list(range(0, size - patch + 1, patch))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def _tiles(
    slices: Sequence[LabelledSlice], patch_size: tuple[int, int]
) -> list[tuple[int, int, int, np.ndarray]]:
    """(slice number, top, left, pixels this tile scores) of a grid covering every slice that
    holds labels; tiles without a labelled pixel of their own are left out."""
    ph, pw = patch_size
    tiles = []
    for which, item in enumerate(slices):
        height, width = item.target.shape
        claimed = np.zeros((height, width), bool)
        for top in _starts(height, ph):
            for left in _starts(width, pw):
                owned = ~claimed[top : top + ph, left : left + pw]
                claimed[top : top + ph, left : left + pw] = True
                labelled = item.target[top : top + ph, left : left + pw] != IGNORE_INDEX
                if np.any(owned & labelled):
                    tiles.append((which, top, left, owned.copy()))
    return tiles
