import pytest
import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from torch import nn

from batteryct.predict import InferenceSettings, SlidingWindowEngine
from batteryct.predict.inference_net import fold_batch_norms, inference_network


def _randomise_norms(net: nn.Module) -> None:
    """Batch norms with running statistics and affine parameters far from the identity."""
    generator = torch.Generator().manual_seed(3)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) * 2 + 0.2)
            if module.affine:
                module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)


def _unet() -> nn.Module:
    torch.manual_seed(0)
    net = UNet(2, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=2, norm="BATCH")
    _randomise_norms(net)
    return net.eval()


def test_folding_every_batch_norm_of_a_unet_keeps_its_output() -> None:
    net = _unet()
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
        assert fold_batch_norms(net) == norms
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_folding_into_plain_and_transposed_convolutions(transposed: bool, affine: bool) -> None:
    torch.manual_seed(1)
    block = Convolution(
        2, 4, 6, strides=2, is_transposed=transposed, norm=("batch", {"affine": affine}), bias=False
    )
    _randomise_norms(block)
    block.eval()
    x = torch.rand(3, 4, 9, 9)
    with torch.no_grad():
        expected = block(x)
        assert fold_batch_norms(block) == 1
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_a_batch_norm_after_the_activation_or_in_training_mode_is_not_folded() -> None:
    after_activation = Convolution(2, 2, 4, adn_ordering="AN", norm="batch").eval()
    assert fold_batch_norms(after_activation) == 0
    training = Convolution(2, 2, 4, norm="batch").train()
    assert fold_batch_norms(training) == 0
    assert isinstance(training.adn.N, nn.BatchNorm2d)


def test_the_engine_leaves_the_trained_network_untouched() -> None:
    net = _unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    SlidingWindowEngine(net, (32, 32), InferenceSettings(precision="bf16", mc_dropout_passes=2))
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_bf16_weights_are_cast_once() -> None:
    fast = inference_network(
        _unet(), torch.device("cpu"), torch.bfloat16, torch.channels_last, compile_net=False
    )
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())


def test_compiled_frozen_network_equals_the_eager_one() -> None:
    net = _unet()
    x = torch.rand(4, 1, 32, 32)
    eager, compiled = (
        inference_network(net, torch.device("cpu"), torch.float32, torch.channels_last, flag)
        for flag in (False, True)
    )
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-4)
