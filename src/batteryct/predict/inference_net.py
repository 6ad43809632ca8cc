"""The network as the sliding-window engine runs it.

A trained MONAI network is copied and rewritten for inference only: every batch norm that directly
follows a convolution is folded into that convolution's weights and bias (exact in real
arithmetic; it removes one pass over every feature map and, under bf16, the casts around the
fp32 batch norm), the weights are cast once to the working precision instead of on every call,
and the copy can be compiled by Inductor with frozen weights (constant folding and oneDNN weight
prepacking). The trained network itself is left untouched.
"""

from __future__ import annotations

import copy

import torch
from monai.networks.blocks import Convolution
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batch_norms(net: nn.Module) -> int:
    """Fold, in place, each eval-mode batch norm that comes first after a MONAI `Convolution`'s
    convolution into that convolution; returns how many were folded."""
    folded = 0
    for block in net.modules():
        if not isinstance(block, Convolution) or not hasattr(block, "adn"):
            continue
        first_name, first = next(iter(block.adn.named_children()), (None, None))
        if not _foldable(block.conv, first):
            continue
        _fold(block.conv, first)
        setattr(block.adn, first_name, nn.Identity())
        folded += 1
    return folded


def _foldable(conv: nn.Module, norm: nn.Module | None) -> bool:
    if not isinstance(norm, NORMS) or norm.training or norm.running_var is None:
        return False
    if isinstance(conv, TRANSPOSED_CONVS):
        return conv.groups == 1
    return isinstance(conv, CONVS)


@torch.no_grad()
def _fold(conv: nn.Module, norm: nn.Module) -> None:
    """conv then norm == one convolution with weights scaled per output channel."""
    scale = norm.running_var.add(norm.eps).rsqrt()
    shift = -norm.running_mean * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    out_axis = 1 if isinstance(conv, TRANSPOSED_CONVS) else 0
    shape = [1] * conv.weight.ndim
    shape[out_axis] = -1
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    conv.weight = nn.Parameter(conv.weight * scale.view(shape), requires_grad=False)
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


def inference_network(
    net: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
    compile_net: bool,
    mc_dropout: bool = False,
) -> nn.Module:
    """A copy of `net` in eval mode for inference: batch norms folded, weights in `dtype` on
    `device` in `memory_format`, optionally compiled (Inductor, frozen weights, static shapes).

    With `mc_dropout`, dropout layers sample (Monte-Carlo dropout) while batch norm keeps its
    running statistics."""
    fast = copy.deepcopy(net).eval()
    if mc_dropout:
        for module in fast.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.train()
    fold_batch_norms(fast)
    fast = fast.to(device=device, dtype=dtype, memory_format=memory_format)
    if compile_net:
        fast = torch.compile(fast, dynamic=False, options={"freezing": True})
    return fast
