"""Segmentation metrics on labelled pixels only (torchmetrics, synchronised across DDP ranks)."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassJaccardIndex,
)


class TotalIoU(Metric):
    """The paper's "total IoU": foreground classes pooled.

    Sum of the true positives of every foreground class divided by (all labelled pixels minus
    the background's true negatives, i.e. the pixels that are background in both the label and
    the prediction). Equals IoU of "any foreground" when no foreground class is confused with
    another, and is lower when one is.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, background: int = 0, ignore_index: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.background = background
        self.ignore_index = ignore_index
        self.add_state(
            "foreground_tp", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("union", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        keep = (
            target != self.ignore_index
            if self.ignore_index is not None
            else torch.ones_like(target, dtype=torch.bool)
        )
        preds, target = preds[keep], target[keep]
        both_background = (preds == self.background) & (target == self.background)
        self.foreground_tp += ((preds == target) & (target != self.background)).sum()
        self.union += target.numel() - both_background.sum()

    def compute(self) -> torch.Tensor:
        if self.union == 0:
            return torch.tensor(float("nan"))
        return self.foreground_tp.float() / self.union.float()


def segmentation_metrics(num_classes: int, ignore_index: int) -> MetricCollection:
    """Accuracy, per-class IoU (a vector), total IoU and the confusion matrix."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index),
            "iou": MulticlassJaccardIndex(
                num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan")
            ),
            "iou_total": TotalIoU(num_classes, ignore_index=ignore_index),
            "confusion": MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index),
        },
        compute_groups=False,
    )


def named_scalars(
    values: dict[str, torch.Tensor], class_names: list[str], prefix: str
) -> dict[str, torch.Tensor]:
    """Stable metric names: `<prefix>/acc`, `<prefix>/iou_<class>`, `<prefix>/iou_mean`,
    `<prefix>/iou_fg_mean` (foreground classes: all but the first), `<prefix>/iou_total`.

    A class absent from both labels and predictions has IoU NaN and does not count in a mean; a
    class in the labels that is never predicted has IoU 0 and pulls the means down by its full
    share, which accuracy and total IoU hide when the class is rare."""
    out = {f"{prefix}/acc": values["acc"], f"{prefix}/iou_total": values["iou_total"]}
    iou = values["iou"]
    for name, value in zip(class_names, iou, strict=True):
        out[f"{prefix}/iou_{name}"] = value
    out[f"{prefix}/iou_mean"] = torch.nanmean(iou)
    out[f"{prefix}/iou_fg_mean"] = torch.nanmean(iou[1:])
    return out
