import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from batteryct.errors import ConfigError
from batteryct.predict import InferenceSettings, SlidingWindowEngine
from batteryct.predict.engine import CPU_BATCH_SIZE


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = UNet(
        2, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=2, dropout=0.2, norm="BATCH"
    )
    return net.eval()


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_fp32_engine_equals_a_direct_monai_call(blend: str) -> None:
    net = _net()
    slices = torch.rand(3, 1, 40, 70)
    settings = InferenceSettings(precision="fp32", batch_size=5, blend=blend, channels_last=True)
    ours = SlidingWindowEngine(net, (32, 32), settings).logits(slices)
    with torch.no_grad():
        theirs = sliding_window_inference(slices, (32, 32), 1, _net(), overlap=0.25, mode=blend)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    probs = SlidingWindowEngine(net, (32, 32), settings).probabilities(slices)
    torch.testing.assert_close(probs, torch.softmax(theirs, dim=1), rtol=1e-4, atol=1e-4)


def test_bf16_is_close_to_fp32() -> None:
    slices = torch.rand(2, 1, 48, 48)
    fp32 = SlidingWindowEngine(_net(), (32, 32), InferenceSettings(precision="fp32")).probabilities(
        slices
    )
    bf16 = SlidingWindowEngine(_net(), (32, 32), InferenceSettings(precision="bf16")).probabilities(
        slices
    )
    assert (fp32.argmax(1) == bf16.argmax(1)).float().mean() > 0.95
    assert (fp32 - bf16).abs().max() < 0.1


def test_flip_tta_averages_the_flipped_predictions() -> None:
    net = _net()
    slices = torch.rand(1, 1, 32, 32)
    settings = InferenceSettings(precision="fp32", flip_tta=True, overlap=0.0)
    ours = SlidingWindowEngine(net, (32, 32), settings).logits(slices)
    with torch.no_grad():
        expected = sum(net(slices.flip(d)).flip(d) for d in ((2,), (3,), (2, 3))) + net(slices)
    torch.testing.assert_close(ours, expected / 4, rtol=1e-4, atol=1e-4)


def test_mc_dropout_samples_dropout_but_keeps_batch_norm_frozen() -> None:
    net = _net()
    engine = SlidingWindowEngine(
        net, (32, 32), InferenceSettings(precision="fp32", mc_dropout_passes=2)
    )
    modules = list(engine.net.modules())
    dropouts = [m for m in modules if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert dropouts and all(m.training for m in dropouts)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)  # folded: frozen
    slices = torch.rand(1, 1, 32, 32)
    torch.manual_seed(1)
    first = engine.probabilities(slices)
    torch.manual_seed(2)
    assert not torch.allclose(first, engine.probabilities(slices))
    torch.manual_seed(1)
    torch.testing.assert_close(first, engine.probabilities(slices))


def test_slices_smaller_than_a_window_are_a_clear_error() -> None:
    engine = SlidingWindowEngine(_net(), (64, 64), InferenceSettings())
    with pytest.raises(ConfigError, match=r"48 × 64 pixels are smaller than the 64 × 64 window"):
        engine.check_fits(48, 64, "scan x")


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="precision"):
        InferenceSettings(precision="fp8")
    with pytest.raises(ConfigError, match="overlap"):
        InferenceSettings(overlap=1.5)
    with pytest.raises(ConfigError, match="batch_size is 0"):
        InferenceSettings(batch_size=0)


@pytest.mark.parametrize(("asked", "expected"), [(None, CPU_BATCH_SIZE), (3, 3)])
def test_windows_go_through_the_network_in_batches_of_the_batch_size(
    asked: int | None, expected: int
) -> None:
    """Unset, the batch size is the CPU's default here; each forward pass takes that many
    windows (the last one the rest)."""
    engine = SlidingWindowEngine(_net(), (32, 32), InferenceSettings(batch_size=asked))
    sizes: list[int] = []
    network = engine.net
    engine.net = lambda windows: sizes.append(len(windows)) or network(windows)
    slices = torch.rand(4, 1, 40, 70)  # 2 × 3 windows a slice
    engine.segment(slices)
    assert engine.batch_size == expected
    assert sizes == [expected] * (24 // expected) + ([24 % expected] if 24 % expected else [])


def test_segmenting_batch_after_batch_gives_each_batch_its_own_labels() -> None:
    """`segment` blends into a buffer kept from its previous batch of the same shape: every
    batch, in any order of shapes, gets the labels and entropy of its own logits, and results
    already returned are left as they were."""
    settings = InferenceSettings(precision="fp32", batch_size=4)
    engine = SlidingWindowEngine(_net(), (32, 32), settings)
    fresh = SlidingWindowEngine(_net(), (32, 32), settings)
    batches = [torch.rand(2, 1, 40, 70), torch.rand(2, 1, 40, 70), torch.rand(3, 1, 48, 40)]
    batches.append(batches[0].flip(3))
    results = [engine.segment(b, entropy=True) for b in batches]
    for batch, result in zip(batches, results, strict=True):
        probs = fresh.probabilities(batch)
        assert torch.equal(result.labels, probs.argmax(1).to(torch.uint8))
        expected = fresh.segment(batch, entropy=True).entropy
        fresh._sums = None  # the reference starts from fresh zeros every time
        assert torch.equal(result.entropy, expected)
    assert engine._sums is not None and engine._sums.shape == (2, 3, 40, 70)
