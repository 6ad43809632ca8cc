"""Losses on labelled pixels only: MONAI's Dice loss plus cross-entropy, unlabelled pixels out."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import torch
from monai.losses import DiceLoss
from torch import nn

from batteryct.classes import ANALYSIS_CLASSES, NETWORK_CLASSES
from batteryct.data.label_map import IGNORE_INDEX
from batteryct.errors import ConfigError

ClassWeights = Sequence[float] | Mapping[str, float] | None
"""Cross-entropy weights: one per class in class order, or by class name (others weigh 1)."""
PHASE_NAMES = {*ANALYSIS_CLASSES.values(), *NETWORK_CLASSES.values()}
"""Names a weight may give for a class that a particular model does not have (it is skipped)."""


def class_weight_tensor(weights: ClassWeights, class_names: Sequence[str]) -> torch.Tensor | None:
    """The cross-entropy weight of each of `class_names`, or None for plain cross-entropy.

    A mapping weighs classes by name; classes it does not name weigh 1, and a name that is a
    known phase but not one of this model's classes is skipped (the default weights name the
    5 network classes, and the binary models of the iterations lack some). Any other name, a
    list of the wrong length or a weight that is not positive is a ConfigError.
    """
    if not weights:
        return None
    names = list(class_names)
    if isinstance(weights, Mapping):
        unknown = [n for n in weights if n not in names and n not in PHASE_NAMES]
        if unknown:
            near = difflib.get_close_matches(unknown[0], [*names, *PHASE_NAMES], n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"model.module.loss.class_weights names {unknown}, which are not classes; "
                f"the model's classes are {names}.{hint}"
            )
        values = [float(weights.get(name, 1.0)) for name in names]
    else:
        values = [float(w) for w in weights]
        if len(values) != len(names):
            raise ConfigError(
                f"model.module.loss.class_weights has {len(values)} values for "
                f"{len(names)} classes {names}"
            )
    if min(values) <= 0:
        raise ConfigError(f"model.module.loss.class_weights {values}: expected positive values")
    return torch.tensor(values, dtype=torch.float32)


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
        class_weights: ClassWeights = None,
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
        self.class_weights = class_weights
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            ignore_index=IGNORE_INDEX,
        )
        self.ce = _cross_entropy(class_weights)

    def use_classes(self, class_names: Sequence[str]) -> None:
        """Weigh the cross-entropy for these classes (checks the weights against them)."""
        self.ce = _cross_entropy(self.class_weights, class_names)

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

    def __init__(self, class_weights: ClassWeights = None) -> None:
        super().__init__()
        self.class_weights = class_weights
        self.ce = _cross_entropy(class_weights)

    def use_classes(self, class_names: Sequence[str]) -> None:
        """Weigh the cross-entropy for these classes (checks the weights against them)."""
        self.ce = _cross_entropy(self.class_weights, class_names)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target)


def _cross_entropy(
    weights: ClassWeights, class_names: Sequence[str] | None = None
) -> nn.CrossEntropyLoss:
    """Cross-entropy that skips unlabelled pixels; a list of weights applies at once, weights
    by name once the class names are known."""
    if class_names is None:
        listed = weights if weights and not isinstance(weights, Mapping) else None
        tensor = None if listed is None else torch.tensor([float(w) for w in listed])
    else:
        tensor = class_weight_tensor(weights, class_names)
    return nn.CrossEntropyLoss(weight=tensor, ignore_index=IGNORE_INDEX)
