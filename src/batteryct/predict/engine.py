"""Sliding-window inference of 2D slices: MONAI's sliding-window scheme, driven fast.

The windows of a batch of slices (MONAI's window positions and importance maps) are batched
through an inference copy of the network (batch norm folded, see `inference_net`) under
`torch.inference_mode`, in channels-last memory format and in bf16 where the device supports
it; overlapping logits are blended in float32 (constant or Gaussian weights) before the
softmax, as in the paper, in the same order as MONAI's `sliding_window_inference`, so fp32
equals a direct MONAI call. Blending, labels and entropy stay on the engine's device, computed
from the logits without forming the softmax (`from_logits`): `segment` copies back only uint8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from torch import nn

from batteryct.errors import ConfigError
from batteryct.predict.inference_net import inference_network

PRECISIONS = ("auto", "fp32", "bf16")
BLENDS = ("constant", "gaussian")
GAUSSIAN_SIGMA_SCALE = 0.125
"""MONAI's default width of the Gaussian importance map, as a fraction of the window."""
ENTROPY_FLOOR = 1e-7
"""Probabilities are clipped to at least this before the entropy's logarithm."""
GPU_BATCH_SIZE = 32
"""Windows per forward pass on a GPU: 1.47× the windows/s of 8 on an H100 at window 512, and
more than 64 (BENCHMARKS.md)."""
CPU_BATCH_SIZE = 8
CPU_CALL_PIXELS = 1 << 22
"""Slice pixels per call of the engine on a CPU (see `slices_per_call`): float32 logits of 5
classes, 80 MiB, where 4 whole slices of a paper-size scan's 1707 × 3896 would take 0.5 GiB."""
CPU_PIECE_BYTES = 4 << 20
"""Logits per piece of the label and entropy stage on a CPU: its passes stay in the cache."""
SHIFTED_LOGIT_FLOOR = -80.0
"""Logits more than this below a pixel's largest are raised to it before the entropy's
exponential, whose result then stays a normal float32 (below about -87 it is subnormal, tens of
times slower on a CPU); such a class's share of the entropy is under 1e-33."""


@dataclass(frozen=True)
class InferenceSettings:
    """How windows are cut, batched and blended."""

    window: tuple[int, int] | None = None
    """Window (height, width) in pixels; None: the patch size the model was trained on."""
    overlap: float = 0.25
    blend: str = "constant"
    batch_size: int | None = None
    """Windows per forward pass; None: `GPU_BATCH_SIZE` on a GPU, `CPU_BATCH_SIZE` elsewhere."""
    precision: str = "auto"
    """bf16 autocast where the device supports it ("auto"), or always "fp32" / "bf16"."""
    channels_last: bool = True
    flip_tta: bool = False
    """Average the logits of the slice and of its flips along both axes."""
    mc_dropout_passes: int = 0
    """Monte-Carlo dropout: this many stochastic passes (dropout on, batch norm frozen)."""
    compile: bool = False
    """Compile the network with `torch.compile` (Inductor, frozen weights): faster windows after
    a one-off compilation of tens of seconds per window batch size; worth it for whole scans."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"inference.precision is {self.precision!r}; expected one of {list(PRECISIONS)}"
            )
        if self.blend not in BLENDS:
            raise ConfigError(f"inference.blend is {self.blend!r}; expected one of {list(BLENDS)}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"inference.overlap is {self.overlap}; expected a fraction in [0, 1)")
        if (self.batch_size is not None and self.batch_size < 1) or self.mc_dropout_passes < 0:
            raise ConfigError(
                f"inference.batch_size is {self.batch_size} and inference.mc_dropout_passes "
                f"{self.mc_dropout_passes}; expected batch_size >= 1 (or null: by device) and "
                "mc_dropout_passes >= 0"
            )


def check_window_fits(window: tuple[int, int], height: int, width: int, where: str) -> None:
    """A clear error when slices of height × width are smaller than one window."""
    if height < window[0] or width < window[1]:
        raise ConfigError(
            f"{where}: slices of {height} × {width} pixels are smaller than the "
            f"{window[0]} × {window[1]} window; pass a smaller inference.window=[height,width] "
            "or predict along other axes (settings.axes=[...])"
        )


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 matrix work is native on this device (CUDA with bf16, or a CPU with AVX-512
    BF16 or AMX, through oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


class SlidingWindowEngine:
    """Class probabilities of batches of 2D slices with a trained network."""

    def __init__(
        self,
        net: nn.Module,
        window: tuple[int, int],
        settings: InferenceSettings,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.settings = settings
        self.window = tuple(settings.window or window)
        self.memory_format = (
            torch.channels_last if settings.channels_last else torch.contiguous_format
        )
        if settings.precision == "auto":
            self.bf16 = bf16_supported(self.device)
        else:
            self.bf16 = settings.precision == "bf16"
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32
        gpu = self.device.type == "cuda"
        self.batch_size = settings.batch_size or (GPU_BATCH_SIZE if gpu else CPU_BATCH_SIZE)
        self.net = inference_network(
            net,
            self.device,
            self.dtype,
            self.memory_format,
            compile_net=settings.compile,
            mc_dropout=settings.mc_dropout_passes > 0,
        )
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._sums: torch.Tensor | None = None
        """The blended sums of `segment`, kept for its next batch of the same shape."""

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def check_fits(self, height: int, width: int, where: str) -> None:
        """A clear error when slices are smaller than one window."""
        check_window_fits(self.window, height, width, where)

    def slices_per_call(self, requested: int, height: int, width: int) -> int:
        """How many slices of height × width to pass to one call: `requested`, but on a CPU, where
        the blended logits are host memory, no more than CPU_CALL_PIXELS hold (at least one).
        On a GPU they stay on the device and only uint8 comes back."""
        if self.device.type == "cuda":
            return requested
        return max(1, min(requested, CPU_CALL_PIXELS // (height * width)))

    def _network(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of windows in the network's precision (bf16 or float32); with
        flip TTA, the float32 mean of the flips'."""
        windows = windows.to(self.device, self.dtype, memory_format=self.memory_format)
        logits = self.net(windows)
        if self.settings.flip_tta:
            logits = logits.float()
            for dims in ((2,), (3,), (2, 3)):
                logits = logits + self.net(windows.flip(dims)).flip(dims).float()
            logits = logits / 4
        return logits

    def _plan(self, height: int, width: int) -> _Plan:
        """Window positions and blending weights for slices of height × width (cached)."""
        key = (height, width)
        if key not in self._plans:
            self.check_fits(height, width, "the engine's input")
            intervals = [
                size if size == edge else max(int(edge * (1 - self.settings.overlap)), 1)
                for size, edge in zip(key, self.window, strict=True)
            ]
            windows = [
                (rows, cols) for rows, cols in dense_patch_slices(key, self.window, intervals)
            ]
            weights = compute_importance_map(
                self.window,
                mode=self.settings.blend,
                sigma_scale=GAUSSIAN_SIGMA_SCALE,
                device=self.device,
                dtype=torch.float32,
            )
            total = torch.zeros(key, dtype=torch.float32, device=self.device)
            for rows, cols in windows:
                total[rows, cols] += weights
            constant = self.settings.blend == "constant"
            self._plans[key] = _Plan(windows, None if constant else weights, total)
        return self._plans[key]

    def _blended(self, slices: torch.Tensor, reuse: bool = False) -> torch.Tensor:
        """Blended logits, float32 on the engine's device: windows are cut, run and blended
        there, so a GPU keeps the whole batch of slices and only the result comes back.

        Windows are taken slice by slice in MONAI's order, `batch_size` per forward pass, and
        their (weighted) logits summed in that order in float32, then divided by the summed
        weights. bf16 logits are added as they are (the sum widens them exactly, without a
        float32 copy: 1.4× faster on a CPU).
        With `reuse` the sums go into the engine's buffer of the previous call of that shape,
        valid until the next such call (a fresh one costs page faults: 3-4× the time of
        zeroing a reused one on a CPU)."""
        count, _, height, width = slices.shape
        plan = self._plan(height, width)
        slices = slices.to(self.device, torch.float32, non_blocking=True)
        jobs = [(n, rows, cols) for n in range(count) for rows, cols in plan.windows]
        out: torch.Tensor | None = None
        with torch.inference_mode():
            for first in range(0, len(jobs), self.batch_size):
                batch = jobs[first : first + self.batch_size]
                logits = self._network(torch.stack([slices[n, :, r, c] for n, r, c in batch]))
                if plan.weights is not None:
                    logits = logits.float().mul_(plan.weights)
                if out is None:
                    out = self._sums_buffer((count, logits.shape[1], height, width), reuse)
                for (n, rows, cols), part in zip(batch, logits, strict=True):
                    out[n, :, rows, cols] += part
            assert out is not None  # a slice holds at least one window
            out /= plan.total
        return out

    def _sums_buffer(self, shape: tuple[int, ...], reuse: bool) -> torch.Tensor:
        """Zeros of `shape` for the blended sums: the kept buffer when `reuse` and it fits."""
        if not reuse:
            return torch.zeros(shape, dtype=torch.float32, device=self.device)
        if self._sums is None or tuple(self._sums.shape) != shape:
            self._sums = torch.zeros(shape, dtype=torch.float32, device=self.device)
            return self._sums
        return self._sums.zero_()

    def logits(self, slices: torch.Tensor) -> torch.Tensor:
        """Blended logits (N, classes, H, W) of slices (N, 1, H, W), float32 on the CPU."""
        return to_host(self._blended(slices))

    def _probabilities(self, slices: torch.Tensor) -> torch.Tensor:
        """Softmax of the blended logits on the device; with MC dropout, the mean over the
        passes."""
        passes = max(1, self.settings.mc_dropout_passes)
        total = None
        with torch.inference_mode():
            for _ in range(passes):
                probs = torch.softmax(self._blended(slices), dim=1)
                total = probs if total is None else total + probs
            return total / passes if passes > 1 else total

    def probabilities(
        self, slices: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Softmax of the blended logits (on the CPU), converted to `dtype` on the engine's
        device; with MC dropout, the mean over the passes."""
        with torch.inference_mode():
            return to_host(self._probabilities(slices).to(dtype))

    def segment(
        self,
        slices: torch.Tensor,
        entropy: bool = False,
        probabilities: bool = False,
        earlier: Sequence[torch.Tensor] = (),
    ) -> Segmented:
        """Labels (the most probable class, the first of equals) of slices (N, 1, H, W) and,
        when asked, their normalised entropy and quantised probabilities: computed on the
        engine's device in float32, copied back to the CPU as uint8.

        With `earlier`, the float16 probabilities (N, classes, H, W) of the same pixels
        predicted along other axes, they come from the mean of these slices' probabilities
        (rounded to float16 likewise, and first in the sum) and those, summed in order in
        float32. With Monte-Carlo dropout they come from the mean probabilities of the passes;
        otherwise from the blended logits directly (see `from_logits`)."""
        with torch.inference_mode():
            if earlier:
                total = self._probabilities(slices).to(torch.float16).float()
                for part in earlier:
                    total += part.to(self.device, non_blocking=True)
                return from_probabilities(total.div_(len(earlier) + 1), entropy, probabilities)
            if self.settings.mc_dropout_passes > 0:
                return from_probabilities(self._probabilities(slices), entropy, probabilities)
            return from_logits(self._blended(slices, reuse=True), entropy, probabilities)


@dataclass(frozen=True)
class _Plan:
    """Where the windows of one slice size lie and how they are blended."""

    windows: list[tuple[slice, slice]]
    weights: torch.Tensor | None
    """Importance map of a window; None: constant weights (logits are summed as they are)."""
    total: torch.Tensor
    """Summed weights per pixel."""


@dataclass
class Segmented:
    """What `SlidingWindowEngine.segment` returns (uint8 tensors on the CPU)."""

    labels: torch.Tensor
    """(N, H, W) class indices."""
    entropy: torch.Tensor | None = None
    """(N, H, W) normalised entropy: 0 certain, 255 uniform."""
    probabilities: torch.Tensor | None = None
    """(N, classes, H, W) probabilities × 255."""


def from_probabilities(probs: torch.Tensor, entropy: bool, probabilities: bool) -> Segmented:
    """Labels, and when asked entropy and quantised probabilities, of class probabilities
    (N, C, H, W), as uint8 on the CPU."""
    result = Segmented(to_host(argmax_uint8(probs, dim=1)))
    if entropy:
        result.entropy = to_host(entropy_uint8(probs, dim=1))
    if probabilities:
        result.probabilities = to_host(quantised(probs))
    return result


def from_logits(logits: torch.Tensor, entropy: bool, probabilities: bool) -> Segmented:
    """Labels, and when asked entropy and quantised probabilities, of logits (N, C, H, W),
    which are overwritten (see `_from_logits_whole`). On a CPU they are computed a few rows at
    a time (about CPU_PIECE_BYTES of logits): a dozen passes over each piece then stay in the
    cache, 2-3× faster on wide slices (BENCHMARKS.md); on a GPU, in one go."""
    count, classes, height, width = logits.shape
    rows = max(1, CPU_PIECE_BYTES // (count * classes * width * logits.element_size()))
    if logits.device.type != "cpu" or rows >= height:
        return _from_logits_whole(logits, entropy, probabilities)
    labels = torch.empty((count, height, width), dtype=torch.uint8)
    result = Segmented(labels, torch.empty_like(labels) if entropy else None)
    if probabilities:
        result.probabilities = torch.empty(logits.shape, dtype=torch.uint8)
    for start in range(0, height, rows):
        piece = _from_logits_whole(logits[:, :, start : start + rows], entropy, probabilities)
        labels[:, start : start + rows] = piece.labels
        if result.entropy is not None:
            result.entropy[:, start : start + rows] = piece.entropy
        if result.probabilities is not None:
            result.probabilities[:, :, start : start + rows] = piece.probabilities
    return result


def _from_logits_whole(logits: torch.Tensor, entropy: bool, probabilities: bool) -> Segmented:
    """`from_logits` in one go: less than half the work of forming the softmax first.

    With the logits shifted so that each pixel's largest is exactly 0, the label is the first
    class at 0 (the argmax of the softmax, whose order the exponential keeps), and the entropy
    of p = e / S, with e = exp(shifted) and S its sum over classes, is
    log S - sum(e * shifted) / S: one exponential per class and one logarithm per pixel
    (shifted logits below SHIFTED_LOGIT_FLOOR are raised to it first).
    """
    shifted = logits.sub_(logits.amax(1, keepdim=True))
    result = Segmented(to_host(first_class_at_zero(shifted)))
    if probabilities:
        result.probabilities = to_host(quantised(torch.softmax(shifted, dim=1)))
    if entropy:
        weights = torch.exp(shifted.clamp_(min=SHIFTED_LOGIT_FLOOR))
        total = weights.sum(1)
        mean_shifted = weights.mul_(shifted).sum(1).div_(total)
        nats = total.log_().sub_(mean_shifted)
        result.entropy = to_host(normalised_uint8(nats, logits.shape[1]))
    return result


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` on the CPU; from a GPU through page-locked memory (torch's caching host
    allocator), several times faster than a copy into pageable memory (1.4 GB/s on an H100)."""
    if tensor.device.type != "cuda":
        return tensor.cpu()
    return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor)


def first_class_at_zero(shifted: torch.Tensor) -> torch.Tensor:
    """(N, H, W) uint8: the first class (dim 1) whose value is exactly 0."""
    classes = shifted.shape[1]
    rank = torch.arange(classes - 1, -1, -1, dtype=torch.uint8, device=shifted.device)
    latest = (shifted == 0).to(torch.uint8).mul_(rank.view(1, classes, 1, 1)).amax(1)
    return torch.sub(classes - 1, latest)


def entropy_uint8(probs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Normalised entropy of class probabilities along `dim`: 0 certain, 255 uniform (uint8).

    Summed class by class (a reduction across a non-innermost axis is slow on the CPU)."""
    total = torch.zeros_like(probs.select(dim, 0))
    for c in range(probs.shape[dim]):
        clipped = probs.select(dim, c).clamp(ENTROPY_FLOOR, 1.0)
        total.add_(clipped.log().mul_(clipped))
    return normalised_uint8(total.neg_(), probs.shape[dim])


def normalised_uint8(nats: torch.Tensor, classes: int) -> torch.Tensor:
    """Entropy in nats over `classes` classes as uint8: 0 certain, 255 uniform (overwritten)."""
    scaled = nats.mul_(255 / math.log(classes))
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


def argmax_uint8(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """`probs.argmax(dim)` as uint8 (the first class on ties), class by class: several times
    faster than `argmax` across a non-innermost axis on the CPU."""
    best = probs.select(dim, 0).clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=probs.device)
    for c in range(1, probs.shape[dim]):
        candidate = probs.select(dim, c)
        labels.masked_fill_(candidate > best, c)
        torch.maximum(best, candidate, out=best)
    return labels


def quantised(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities × 255, rounded, as uint8."""
    return (probs * 255).round_().clamp_(0, 255).to(torch.uint8)
