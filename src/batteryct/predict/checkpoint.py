"""Load a batteryct checkpoint for inference: the network, its classes and how it was trained."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import batteryct.config  # noqa: F401  (registers ${len:})
from batteryct.errors import BatteryCTError
from batteryct.greyvalues import GreyScale, GreyValues, legacy_scale
from batteryct.io import Volume
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
    grey_values: GreyValues | None = None
    """How the training images' grey values were mapped to 0-1 (None: not recorded)."""

    def grey_scale(self, image: Volume, where: str) -> GreyScale:
        """The mapping of `image`'s grey values to the 0-1 this network was trained on."""
        if self.grey_values is None:
            return legacy_scale(image.dtype)
        return self.grey_values.scale_for(image, where)


def load_trained_model(path: str | Path) -> TrainedModel:
    """Rebuild the network of a batteryct checkpoint and load its weights (on the CPU)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.ckpt"))
        raise CheckpointError(
            f"checkpoint {path} is a folder; pass one checkpoint file in it as ckpt="
            + (f" (it holds {', '.join(found)})" if found else " (it holds no .ckpt file)")
        )
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
    class_names = list(info["class_names"])
    patch_size = (int(info["patch_size"][0]), int(info["patch_size"][1]))
    with torch.no_grad():
        outputs = net(torch.zeros(1, 1, *patch_size)).shape[1]
    if outputs != len(class_names):
        raise CheckpointError(
            f"{path}: its network outputs {outputs} classes but the checkpoint names "
            f"{len(class_names)} ({', '.join(class_names)}); use a checkpoint written by train.py"
        )
    if "grey_values" in info:
        grey_values = GreyValues.from_dict(info["grey_values"])
    else:
        grey_values = None
        warnings.warn(
            f"{path} does not record how its training images' grey values were mapped to 0-1 "
            "(written before batteryct kept it): integer scans are mapped by their type's range "
            "and float scans taken as 0-1, unchecked; retrain to have the mapping checked",
            stacklevel=2,
        )
    return TrainedModel(
        net=net,
        class_names=class_names,
        orientation=str(info["orientation"]),
        patch_size=patch_size,
        path=path,
        config=config,
        grey_values=grey_values,
    )
