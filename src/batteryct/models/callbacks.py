"""Callbacks of batteryct runs: validation overlays, the resolved config beside checkpoints, and
per-batch seeds."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from batteryct.data.label_map import IGNORE_INDEX
from batteryct.figures import class_colormap, show_labels


class ValidationOverlays(pl.Callback):
    """After each validation epoch: image | label | prediction of a few fixed validation patches.

    Saved as PNG in `<run>/overlays/` and sent to the W&B or TensorBoard logger when one is
    active.
    """

    def __init__(self, n_images: int = 4, every_n_epochs: int = 1, dirpath: str | None = None):
        self.n_images = n_images
        self.every_n_epochs = every_n_epochs
        self.dirpath = dirpath

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if not trainer.is_global_zero or self.n_images <= 0:
            return
        dataset = trainer.datamodule.datasets.get("val") if trainer.datamodule else None
        if dataset is None:
            return
        items = [dataset[i] for i in range(min(self.n_images, len(dataset)))]
        images = torch.stack([item["image"] for item in items]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            predictions = pl_module(images).argmax(dim=1).cpu().numpy()
        pl_module.train(was_training)
        figure = self.render(items, predictions, pl_module.class_names, trainer.current_epoch)
        out = Path(self.dirpath or trainer.default_root_dir) / "overlays"
        out.mkdir(parents=True, exist_ok=True)
        figure.savefig(out / f"epoch_{trainer.current_epoch:04d}.png", dpi=90)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/overlays", [figure], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("val/overlays", figure, trainer.global_step)
        plt.close(figure)

    @staticmethod
    def render(
        items: list[dict[str, torch.Tensor]],
        predictions: np.ndarray,
        class_names: list[str],
        epoch: int,
    ) -> plt.Figure:
        """One row per patch: the image, its labels (unlabelled transparent), the prediction."""
        cmap = class_colormap(dict(enumerate(class_names)))
        fig, axes = plt.subplots(len(items), 3, figsize=(7.5, 2.5 * len(items)), squeeze=False)
        for row, (item, prediction) in enumerate(zip(items, predictions, strict=True)):
            image = item["image"][0].numpy()
            label = item["label"].numpy()
            shown_label = np.ma.masked_equal(label, IGNORE_INDEX)
            for col, (title, overlay) in enumerate(
                (("image", None), ("label", shown_label), ("prediction", prediction))
            ):
                ax = axes[row, col]
                show_labels(ax, image, overlay, cmap)
                ax.set_axis_off()
                if row == 0:
                    ax.set_title(title)
        fig.suptitle(f"validation patches, epoch {epoch}")
        fig.tight_layout()
        return fig


class SaveResolvedConfig(pl.Callback):
    """Write the run's resolved config as `config.yaml` next to its checkpoints.

    Written when training starts: resuming a finished run, which trains nothing, leaves it.
    """

    def __init__(self, config: DictConfig | dict[str, Any], dirpath: str) -> None:
        self.config = config
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            config = (
                self.config
                if isinstance(self.config, DictConfig)
                else OmegaConf.create(self.config)
            )
            OmegaConf.save(config, self.dirpath / "config.yaml", resolve=True)


class SeedEachBatch(pl.Callback):
    """Seed torch, NumPy and `random` from (seed, epoch, batch) before every training batch.

    A batch's random draws (dropout) then depend on its place in the run alone, not on what
    drew random numbers before it (DataLoader iterators, callbacks), so a resumed run trains
    exactly as the uninterrupted run did.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        sequence = np.random.SeedSequence([self.seed, trainer.current_epoch, batch_idx])
        batch_seed = int(sequence.generate_state(1)[0])
        torch.manual_seed(batch_seed)
        np.random.seed(batch_seed)
        random.seed(batch_seed)
