"""The default loss: Dice + cross-entropy over labelled pixels only."""

from __future__ import annotations

import pytest
import torch

from batteryct.data import IGNORE_INDEX
from batteryct.errors import ConfigError
from batteryct.models.losses import CrossEntropy, DiceCELoss, class_weight_tensor


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 6, 5, generator=generator)
    target = torch.randint(0, 4, (3, 6, 5), generator=generator)
    unlabelled = torch.rand(3, 6, 5, generator=generator) < 0.4
    target[unlabelled] = IGNORE_INDEX
    return logits, target, unlabelled


def _by_hand(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy mean over labelled pixels + 1 - mean over classes of the batch-wise soft
    Dice of the labelled pixels (no smoothing terms), computed from scratch."""
    keep = target != IGNORE_INDEX
    pixels = logits.permute(0, 2, 3, 1)[keep]  # (n, classes)
    labels = target[keep]
    ce = torch.nn.functional.cross_entropy(pixels, labels)
    probs = pixels.softmax(dim=1)
    onehot = torch.nn.functional.one_hot(labels, logits.shape[1]).float()
    dice = 2 * (probs * onehot).sum(0) / (probs.sum(0) + onehot.sum(0))
    return ce + (1 - dice).mean()


def test_dice_ce_equals_an_independent_computation_on_labelled_pixels() -> None:
    logits, target, _ = _case()
    loss = DiceCELoss()(logits, target)
    assert float(loss) == pytest.approx(float(_by_hand(logits, target)), rel=1e-4)


def test_unlabelled_pixels_neither_change_the_loss_nor_get_gradients() -> None:
    logits, target, unlabelled = _case(1)
    first = logits.clone().requires_grad_(True)
    DiceCELoss()(first, target).backward()
    noisy = torch.where(unlabelled[:, None], torch.randn_like(logits) * 10, logits)
    second = noisy.requires_grad_(True)
    loss_second = DiceCELoss()(second, target)
    loss_second.backward()
    reference = DiceCELoss()(logits, target)
    assert float(reference) == pytest.approx(float(loss_second.detach()), rel=1e-6)
    mask = unlabelled[:, None].expand_as(logits)
    assert torch.all(first.grad[mask] == 0)
    assert torch.allclose(first.grad[~mask], second.grad[~mask], atol=1e-7)


def test_a_rare_class_weighs_as_much_in_dice_as_a_common_one() -> None:
    """Missing a class that covers 1 % of the pixels costs Dice a whole class share, while
    cross-entropy barely notices: the point of adding Dice for dendrites."""
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 0, 0] = 1
    perfect = torch.where(
        torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).bool(), 20.0, -20.0
    )
    blind = torch.stack([torch.full((1, 10, 10), 20.0), torch.full((1, 10, 10), -20.0)], 1)
    ce_only = DiceCELoss(lambda_dice=0.0)
    dice_only = DiceCELoss(lambda_ce=0.0)
    assert float(ce_only(blind, target)) < 0.5  # 1 wrong pixel of 100
    assert float(dice_only(blind, target)) > 0.45  # half of the class-mean Dice lost
    assert float(dice_only(perfect, target)) < 1e-3


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="lambda_dice"):
        DiceCELoss(lambda_dice=0.0, lambda_ce=0.0)


def test_cross_entropy_option_is_torchs_with_the_ignore_index() -> None:
    logits, target, _ = _case(2)
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    assert float(CrossEntropy()(logits, target)) == pytest.approx(float(expected))


NAMES = ["background", "dendrite", "pit", "deposited_li"]


def test_class_weights_by_name_weigh_the_cross_entropy_like_torchs_weights() -> None:
    logits, target, _ = _case(3)
    loss = DiceCELoss(lambda_dice=0.0, class_weights={"dendrite": 8, "pit": 2})
    loss.use_classes(NAMES)
    weights = torch.tensor([1.0, 8.0, 2.0, 1.0])
    expected = torch.nn.functional.cross_entropy(
        logits, target, weight=weights, ignore_index=IGNORE_INDEX
    )
    assert float(loss(logits, target)) == pytest.approx(float(expected))
    plain = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    assert float(expected) != pytest.approx(float(plain))  # the weights do change it


def test_class_weights_skip_phases_a_model_lacks_and_refuse_other_names() -> None:
    lacking = class_weight_tensor({"dendrite": 8.0, "pit": 2.0}, ["background", "li", "pit"])
    assert torch.equal(lacking, torch.tensor([1.0, 1.0, 2.0]))
    assert torch.equal(class_weight_tensor([1, 3], ["a", "b"]), torch.tensor([1.0, 3.0]))
    with pytest.raises(ConfigError, match=r"names \['dendrit'\].*Did you mean 'dendrite'"):
        class_weight_tensor({"dendrit": 8.0}, NAMES)
    with pytest.raises(ConfigError, match="3 values for 4 classes"):
        class_weight_tensor([1, 2, 3], NAMES)
    with pytest.raises(ConfigError, match="expected positive values"):
        class_weight_tensor({"pit": 0}, NAMES)
