"""Start a run from another run's weights, even when the number of classes differs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from batteryct.errors import BatteryCTError

log = logging.getLogger(__name__)
MIN_MATCHING_SHARE = 0.5
"""Below this share of matching tensors the checkpoint is for another network."""


class CheckpointMismatchError(BatteryCTError):
    """A checkpoint whose network does not fit the one being trained."""


@dataclass
class WeightTransfer:
    """Which tensors were copied from a checkpoint and which were left as initialised."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Tensors of the model with no counterpart of the same shape (e.g. a new output head)."""
    unused: list[str] = field(default_factory=list)
    """Tensors of the checkpoint the model has no place for."""


def load_matching_weights(
    model: nn.Module, checkpoint_path: str | Path, prefix: str = "net."
) -> WeightTransfer:
    """Copy every tensor of `checkpoint_path` whose name and shape match `model`'s `prefix` part.

    The rest stays as initialised (a fresh output head when the classes differ); the loaded and
    skipped tensors are logged. Raises CheckpointMismatchError when under half of the model's
    tensors match: that checkpoint holds another network.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise CheckpointMismatchError(f"init_from checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a bad file
        raise CheckpointMismatchError(
            f"{path} is not a readable PyTorch checkpoint: {err}"
        ) from err
    source = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(source, dict):
        raise CheckpointMismatchError(f"{path} holds no state_dict")
    source = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
    target = model.state_dict()
    transfer = WeightTransfer()
    update = {}
    for name, tensor in target.items():
        candidate = source.get(name)
        if candidate is not None and candidate.shape == tensor.shape:
            update[name] = candidate
            transfer.loaded.append(name)
        else:
            transfer.skipped.append(name)
    transfer.unused = [n for n in source if n not in update]
    if len(transfer.loaded) < MIN_MATCHING_SHARE * len(target):
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit the network: only {len(transfer.loaded)} of "
            f"{len(target)} tensors match by name and shape; was it trained with another "
            "model/net preset? Use the same preset, or train from scratch"
        )
    model.load_state_dict(update, strict=False)
    log.info(
        "init_from %s: loaded %d tensors, kept %d as initialised",
        path,
        len(transfer.loaded),
        len(transfer.skipped),
    )
    for name in transfer.skipped:
        log.info("  not loaded (new or different shape): %s", name)
    for name in transfer.unused:
        log.info("  in checkpoint but unused: %s", name)
    return transfer
