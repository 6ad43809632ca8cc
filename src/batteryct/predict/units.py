"""Units of prediction work, run through Lightning so that DDP ranks share them.

Every unit writes whole chunks of its own, so ranks never write the same chunk: rank r takes
units r, r + world, r + 2·world, …; a unit already recorded as done is never handed out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from batteryct.errors import ConfigError


class _Units(Dataset):
    def __init__(self, units: Sequence[Any]) -> None:
        self.units = list(units)

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> Any:
        return self.units[index]


class UnitRunner(pl.LightningModule):
    """A LightningModule whose predict step runs one unit of work: `work(unit, device)`."""

    def __init__(self, units: Sequence[Any], work: Callable[[Any, torch.device], int]) -> None:
        super().__init__()
        self.units = list(units)
        self.work = work

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        mine = self.units[rank::world]
        return DataLoader(_Units(mine), batch_size=1, collate_fn=lambda items: items[0])

    def predict_step(self, unit: Any, batch_idx: int) -> None:
        self.work(unit, self.device)


def run_units(
    trainer: pl.Trainer, units: Sequence[Any], work: Callable[[Any, torch.device], int]
) -> None:
    """Run `work` on every unit, spread over the trainer's processes; all ranks wait at the end.

    Called even with no units, so that DDP processes start at the first call whatever is left.
    """
    if trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
        raise ConfigError(
            "prediction with several processes needs Trainer(use_distributed_sampler=False): "
            "ranks take disjoint units themselves"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*(does not have many workers|no batches|Total length).*"
        )
        trainer.predict(UnitRunner(units, work), return_predictions=False)
    trainer.strategy.barrier("batteryct-units")
