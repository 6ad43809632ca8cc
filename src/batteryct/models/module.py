"""The LightningModule: a segmentation network, its loss, optimiser and metrics."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from batteryct.data.label_map import IGNORE_INDEX
from batteryct.models.losses import DiceCELoss
from batteryct.models.metrics import named_scalars, segmentation_metrics

CHECKPOINT_KEY = "batteryct"
"""Key of the run description that every batteryct checkpoint carries (see `run_info`)."""


class SegmentationModule(pl.LightningModule):
    """Training of a 2D segmentation network on labelled pixels only.

    `loss` maps (logits, targets) to a scalar and ignores IGNORE_INDEX pixels (default: Dice +
    cross-entropy). `optimizer` and `scheduler` are factories (Hydra `_partial_`):
    optimizer(params) and scheduler(optimizer). The scheduler steps on `monitor`
    (ReduceLROnPlateau style), by default the mean foreground IoU, which a missed rare class
    pulls down by its full share; without validation results it keeps its rate.
    """

    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        loss: nn.Module | None = None,
        monitor: str = "val/iou_fg_mean",
    ) -> None:
        super().__init__()
        self.net = net
        self.class_names = list(class_names)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.loss_fn = loss if loss is not None else DiceCELoss()
        if hasattr(self.loss_fn, "use_classes"):
            self.loss_fn.use_classes(self.class_names)
        n = len(self.class_names)
        self.val_metrics = segmentation_metrics(n, IGNORE_INDEX)
        self.test_metrics = segmentation_metrics(n, IGNORE_INDEX)
        self.run_info: dict[str, Any] = {}
        """What prediction needs to rebuild this model (config, classes, orientation, patch);
        stored in every checkpoint under CHECKPOINT_KEY."""
        self.output_dir: Path | None = None
        """Where metric tables go (default: the trainer's root folder)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss over labelled pixels; exactly 0 (with gradients) if none is."""
        if not torch.any(target != IGNORE_INDEX):
            return logits.sum() * 0.0
        return self.loss_fn(logits, target)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def _evaluate(self, batch: dict[str, torch.Tensor], prefix: str, metrics: Any) -> None:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        self.log(f"{prefix}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        metrics.update(logits.argmax(dim=1), batch["label"])

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_confusion(self.last_confusion, self._output_dir() / "val_confusion.csv")

    def on_test_epoch_end(self) -> None:
        values = self._log_metrics("test", self.test_metrics)
        if self.trainer.is_global_zero:
            self._write_test_table(values)

    def _log_metrics(self, prefix: str, metrics: Any) -> dict[str, torch.Tensor]:
        values = metrics.compute()
        metrics.reset()
        scalars = named_scalars(values, self.class_names, prefix)
        # torchmetrics already reduced the states over ranks: every rank holds the same values.
        self.log_dict({k: v.float() for k, v in scalars.items()}, prog_bar=False)
        self.last_confusion = values["confusion"].cpu()
        return scalars

    def _output_dir(self) -> Path:
        out = self.output_dir or Path(self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out

    def _write_confusion(self, confusion: torch.Tensor, path: Path) -> None:
        """Confusion matrix as CSV: rows are labels, columns predictions, in pixels."""
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["label \\ prediction", *self.class_names])
            for name, row in zip(self.class_names, confusion.tolist(), strict=True):
                writer.writerow([name, *row])

    def _write_test_table(self, scalars: dict[str, torch.Tensor]) -> None:
        out = self._output_dir()
        self._write_confusion(self.last_confusion, out / "test_confusion.csv")
        rows = [
            {"class": name, "iou": float(scalars[f"test/iou_{name}"])} for name in self.class_names
        ]
        summary = {
            "per_class_iou": {r["class"]: r["iou"] for r in rows},
            "iou_mean": float(scalars["test/iou_mean"]),
            "iou_total": float(scalars["test/iou_total"]),
            "accuracy": float(scalars["test/acc"]),
            "confusion_matrix": self.last_confusion.tolist(),
            "confusion_axes": "rows: label, columns: prediction",
            "classes": self.class_names,
        }
        (out / "test_iou.json").write_text(json.dumps(summary, indent=1))
        with (out / "test_iou.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["class", "iou"])
            writer.writeheader()
            writer.writerows(rows)
            writer.writerow({"class": "mean", "iou": summary["iou_mean"]})
            writer.writerow({"class": "total", "iou": summary["iou_total"]})
            writer.writerow({"class": "accuracy", "iou": summary["accuracy"]})

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        # strict=False: a plateau schedule steps on validation results only; a run without
        # validation (trainer.limit_val_batches=0) keeps its rate, and Lightning warns.
        config = {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"}
        return {"optimizer": optimizer, "lr_scheduler": {**config, "strict": False}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.run_info

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.run_info = checkpoint.get(CHECKPOINT_KEY, {})
