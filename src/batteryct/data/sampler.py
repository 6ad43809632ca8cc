"""A sampler that gives every training patch of a run its own index, epoch after epoch."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Indices `epoch * n ... epoch * n + n - 1` of the current epoch, in order.

    A dataset that draws item `index` from a generator seeded by the index (PatchDataset) then
    sees fresh patches in every epoch that depend on the epoch and position alone: not on the
    DataLoader workers, the process, or whether the run was resumed. Lightning calls `set_epoch`
    before each epoch, also through its distributed wrapper, which shards these indices by rank.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.n, (self.epoch + 1) * self.n))

    def __len__(self) -> int:
        return self.n
