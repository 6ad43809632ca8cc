"""Load a batteryct checkpoint for inference: the network, its classes and how it was trained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import batteryct.config  # noqa: F401  (registers ${len:})
from batteryct.errors import BatteryCTError
from batteryct.models.module import CHECKPOINT_KEY


class CheckpointError(BatteryCTError):
    """A checkpoint that is missing, unreadable or not a batteryct segmentation model."""


@dataclass
class TrainedModel:
    """A network in eval mode with what prediction needs to know about its training."""

    net: nn.Module
    class_names: list[str]
    orientation: str
    patch_size: tuple[int, int]
    path: Path
    config: dict[str, Any]


def load_trained_model(path: str | Path) -> TrainedModel:
    """Rebuild the network of a batteryct checkpoint and load its weights (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass ckpt=<run>/checkpoints/<file>.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a file that is no checkpoint
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    info = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not info or "config" not in info:
        raise CheckpointError(
            f"{path} is not a batteryct model: it has no '{CHECKPOINT_KEY}' record of its "
            "training; use a checkpoint written by train.py"
        )
    config = info["config"]
    net = instantiate(OmegaConf.create(config["model"]["net"]), _convert_="all")
    state = {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit its own network config: {err}") from err
    net.eval()
    return TrainedModel(
        net=net,
        class_names=list(info["class_names"]),
        orientation=str(info["orientation"]),
        patch_size=(int(info["patch_size"][0]), int(info["patch_size"][1])),
        path=path,
        config=config,
    )
