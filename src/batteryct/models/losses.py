"""Losses on labelled pixels only: MONAI's Dice loss plus cross-entropy, unlabelled pixels out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceLoss
from torch import nn

from batteryct.data.label_map import IGNORE_INDEX


class DiceCELoss(nn.Module):
    """`lambda_dice` × soft Dice (MONAI, batch-wise, every class) + `lambda_ce` × cross-entropy.

    Pixels labelled IGNORE_INDEX contribute to neither term. The Dice term is computed over the
    whole batch (`batch=True`), so a rare class present in a single patch still counts with its
    full weight; cross-entropy keeps the per-pixel gradient that Dice alone lacks early on.
    MONAI's own DiceCELoss has no ignore index for its cross-entropy, hence this pairing.
    """

    def __init__(
        self,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
    ) -> None:
        super().__init__()
        if lambda_dice < 0 or lambda_ce < 0 or lambda_dice + lambda_ce == 0:
            raise ValueError(
                f"loss weights lambda_dice={lambda_dice}, lambda_ce={lambda_ce}: expected "
                "non-negative values, not both 0"
            )
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.n_weights = None if weight is None else int(weight.numel())
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            ignore_index=IGNORE_INDEX,
        )
        self.ce = nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of (batch, classes, H, W) logits against (batch, H, W) class ids."""
        loss = logits.new_zeros(())
        if self.lambda_ce:
            loss = loss + self.lambda_ce * self.ce(logits, target)
        if self.lambda_dice:
            loss = loss + self.lambda_dice * self.dice(logits, target[:, None])
        return loss


class CrossEntropy(nn.Module):
    """Cross-entropy on labelled pixels, optionally weighted per class (the paper's loss)."""

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.n_weights = None if weight is None else int(weight.numel())
        self.ce = nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target)
