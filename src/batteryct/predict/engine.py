"""Sliding-window inference of 2D slices: MONAI's inferer, driven fast.

The windows of a batch of slices are batched through an inference copy of the network (batch
norm folded, see `inference_net`) under `torch.inference_mode`, in channels-last memory format
and in bf16 where the device supports it; overlapping logits are blended (constant or Gaussian
weights) by MONAI's `sliding_window_inference` before the softmax, as in the paper. fp32 is
selectable and then equals a direct MONAI call within float tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from batteryct.errors import ConfigError
from batteryct.predict.inference_net import inference_network

PRECISIONS = ("auto", "fp32", "bf16")
BLENDS = ("constant", "gaussian")


@dataclass(frozen=True)
class InferenceSettings:
    """How windows are cut, batched and blended."""

    window: tuple[int, int] | None = None
    """Window (height, width) in pixels; None: the patch size the model was trained on."""
    overlap: float = 0.25
    blend: str = "constant"
    batch_size: int = 8
    """Windows per forward pass."""
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
        if self.batch_size < 1 or self.mc_dropout_passes < 0:
            raise ConfigError(
                f"inference.batch_size is {self.batch_size} and inference.mc_dropout_passes "
                f"{self.mc_dropout_passes}; expected batch_size >= 1 and mc_dropout_passes >= 0"
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
        self.net = inference_network(
            net,
            self.device,
            self.dtype,
            self.memory_format,
            compile_net=settings.compile,
            mc_dropout=settings.mc_dropout_passes > 0,
        )

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def check_fits(self, height: int, width: int, where: str) -> None:
        """A clear error when slices are smaller than one window."""
        check_window_fits(self.window, height, width, where)

    def _network(self, windows: torch.Tensor) -> torch.Tensor:
        windows = windows.to(self.device, self.dtype, memory_format=self.memory_format)
        logits = self.net(windows).float()
        if self.settings.flip_tta:
            for dims in ((2,), (3,), (2, 3)):
                logits = logits + self.net(windows.flip(dims)).flip(dims).float()
            logits = logits / 4
        return logits

    def _blended(self, slices: torch.Tensor) -> torch.Tensor:
        """Blended logits, float32 on the engine's device: windows are cut, run and blended
        there, so a GPU keeps the whole batch of slices and only the result comes back."""
        with torch.inference_mode():
            out = sliding_window_inference(
                slices.to(self.device),
                roi_size=self.window,
                sw_batch_size=self.settings.batch_size,
                predictor=self._network,
                overlap=self.settings.overlap,
                mode=self.settings.blend,
                sw_device=self.device,
                device=self.device,
            )
        return torch.as_tensor(out).float()

    def logits(self, slices: torch.Tensor) -> torch.Tensor:
        """Blended logits (N, classes, H, W) of slices (N, 1, H, W), float32 on the CPU."""
        return self._blended(slices).cpu()

    def probabilities(self, slices: torch.Tensor) -> torch.Tensor:
        """Softmax of the blended logits (on the CPU); with MC dropout, the mean over the
        passes."""
        passes = max(1, self.settings.mc_dropout_passes)
        total = None
        with torch.inference_mode():
            for _ in range(passes):
                probs = torch.softmax(self._blended(slices), dim=1)
                total = probs if total is None else total + probs
            return (total / passes).cpu()
