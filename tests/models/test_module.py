import pytest
import torch
from monai.networks.nets import UNet

from batteryct.data import IGNORE_INDEX
from batteryct.models import SegmentationModule
from batteryct.models.losses import DiceCELoss


def _module(n_classes: int = 3) -> SegmentationModule:
    net = UNet(2, 1, n_classes, channels=(4, 8), strides=(2,), num_res_units=1)
    names = [f"c{i}" for i in range(n_classes)]
    return SegmentationModule(net, names, optimizer=lambda p: torch.optim.Adam(p))


def test_unlabelled_pixels_get_zero_gradient_and_do_not_change_the_loss() -> None:
    module = _module()
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    target = torch.randint(0, 3, (2, 8, 8), generator=generator)
    unlabelled = torch.rand(2, 8, 8, generator=generator) < 0.5
    target[unlabelled] = IGNORE_INDEX

    first = logits.clone().requires_grad_(True)
    loss_first = module.loss(first, target)
    loss_first.backward()

    changed = torch.where(unlabelled[:, None], torch.randn_like(logits) * 10, logits)
    second = changed.requires_grad_(True)
    loss_second = module.loss(second, target)
    loss_second.backward()

    assert torch.allclose(loss_first, loss_second)
    mask = unlabelled[:, None].expand_as(logits)
    assert torch.all(first.grad[mask] == 0)
    assert torch.allclose(first.grad[~mask], second.grad[~mask])
    assert torch.any(first.grad[~mask] != 0)


def test_a_batch_without_labels_gives_zero_loss_with_gradients() -> None:
    module = _module()
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = module.loss(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_class_weights_must_match_the_classes() -> None:
    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        SegmentationModule(
            net,
            ["a", "b", "c"],
            optimizer=torch.optim.Adam,
            loss=DiceCELoss(class_weights=[1.0, 2.0]),
        )


def test_the_default_loss_is_dice_plus_cross_entropy_and_selection_is_on_foreground_iou() -> None:
    module = _module()
    assert isinstance(module.loss_fn, DiceCELoss)
    assert module.monitor == "val/iou_fg_mean"
