import numpy as np
import pytest
import torch

from batteryct.data import IGNORE_INDEX
from batteryct.models import TotalIoU, named_scalars, segmentation_metrics

NAMES = ["background", "dendrite", "pit"]


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.tensor(
        [[0, 0, 0, 1, 1, 2, 2, IGNORE_INDEX], [0, 1, 2, 2, 0, 1, IGNORE_INDEX, 0]]
    )
    preds = torch.tensor([[0, 0, 1, 1, 0, 2, 1, 2], [0, 1, 2, 0, 0, 1, 2, 1]])
    return preds, target


def _by_hand(preds: np.ndarray, target: np.ndarray) -> dict[str, float]:
    keep = target != IGNORE_INDEX
    p, t = preds[keep], target[keep]
    out = {"acc": float((p == t).mean())}
    ious = []
    for c, name in enumerate(NAMES):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        out[f"iou_{name}"] = inter / union
        ious.append(inter / union)
    out["iou_mean"] = float(np.mean(ious))
    out["iou_fg_mean"] = float(np.mean(ious[1:]))
    foreground_tp = np.sum((p == t) & (t != 0))
    background_tn = np.sum((p == 0) & (t == 0))
    out["iou_total"] = foreground_tp / (t.size - background_tn)
    return out


def test_metrics_equal_a_hand_computation_on_labelled_pixels_only() -> None:
    preds, target = _case()
    metrics = segmentation_metrics(3, IGNORE_INDEX)
    metrics.update(preds, target)
    scalars = named_scalars(metrics.compute(), NAMES, "val")
    expected = _by_hand(preds.numpy(), target.numpy())
    for key, value in expected.items():
        assert float(scalars[f"val/{key}"]) == pytest.approx(value), key
    confusion = metrics.compute()["confusion"]
    assert int(confusion.sum()) == int((target != IGNORE_INDEX).sum())


def test_total_iou_pools_foreground_and_penalises_confusions() -> None:
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    metric = TotalIoU(3)
    metric.update(torch.tensor([0, 0, 1, 1, 2, 2]), target)
    assert float(metric.compute()) == 1.0
    metric.reset()
    # Swapping the two foreground classes keeps "any foreground" perfect but total IoU at 0.
    metric.update(torch.tensor([0, 0, 2, 2, 1, 1]), target)
    assert float(metric.compute()) == 0.0


def test_total_iou_accepts_logits() -> None:
    target = torch.tensor([[0, 1], [2, 1]])
    logits = torch.nn.functional.one_hot(target, 3).permute(2, 0, 1)[None].float()
    metric = TotalIoU(3)
    metric.update(logits, target[None])
    assert float(metric.compute()) == 1.0


def test_a_class_absent_from_labels_and_predictions_is_nan_and_left_out_of_the_mean() -> None:
    metrics = segmentation_metrics(3, IGNORE_INDEX)
    metrics.update(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 1]))
    scalars = named_scalars(metrics.compute(), NAMES, "val")
    assert torch.isnan(scalars["val/iou_pit"])
    assert float(scalars["val/iou_mean"]) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_a_missed_rare_class_cannot_hide_in_the_foreground_mean() -> None:
    """A dendrite class that is never predicted leaves accuracy and total IoU high but costs
    the foreground mean its whole share."""
    target = torch.tensor([0] * 90 + [2] * 8 + [1] * 2)
    preds = torch.tensor([0] * 90 + [2] * 8 + [0] * 2)
    metrics = segmentation_metrics(3, IGNORE_INDEX)
    metrics.update(preds, target)
    scalars = named_scalars(metrics.compute(), NAMES, "val")
    assert float(scalars["val/acc"]) == pytest.approx(0.98)
    assert float(scalars["val/iou_total"]) == pytest.approx(0.8)
    assert float(scalars["val/iou_dendrite"]) == 0.0
    assert float(scalars["val/iou_fg_mean"]) == pytest.approx(0.5)
