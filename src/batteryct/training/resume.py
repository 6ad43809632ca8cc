"""Resuming a run: check its checkpoint before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from batteryct.errors import ConfigError
from batteryct.models.module import CHECKPOINT_KEY

LAST_CHECKPOINT = "<run>/checkpoints/last.ckpt"


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: its checkpoint, epoch and global step."""

    path: Path
    epoch: int
    global_step: int


def check_resume_checkpoint(path: str | Path, module: nn.Module) -> ResumePoint:
    """Read the checkpoint `path` and check that `module` can continue from it.

    Raises ConfigError naming the file and the fix when it is missing, unreadable, not a
    training checkpoint, or holds a network of another shape (e.g. another number of classes:
    `init_from=` starts from such weights instead).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path {path} does not exist; give the checkpoint of the run to continue "
            f"({LAST_CHECKPOINT})"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise ConfigError(
            f"ckpt_path {path} is not a readable checkpoint ({type(err).__name__}: {err}); "
            f"resume from another checkpoint of the run ({LAST_CHECKPOINT} or best.ckpt)"
        ) from err
    needed = ("state_dict", "epoch", "global_step", "loops")
    if not isinstance(checkpoint, dict) or not all(key in checkpoint for key in needed):
        raise ConfigError(
            f"ckpt_path {path} is not a training checkpoint written by train.py (it lacks "
            f"{', '.join(needed)}); to start from its weights use init_from={path}"
        )
    _check_fits(path, checkpoint, module)
    return ResumePoint(path, int(checkpoint["epoch"]), int(checkpoint["global_step"]))


def _check_fits(path: Path, checkpoint: dict[str, Any], module: nn.Module) -> None:
    """Raise ConfigError unless the checkpoint has the classes and tensors of `module`."""
    ours = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    saved = checkpoint["state_dict"]
    theirs = {name: tuple(getattr(tensor, "shape", ())) for name, tensor in saved.items()}
    trained = checkpoint.get(CHECKPOINT_KEY, {}).get("class_names")
    classes = getattr(module, "class_names", None)
    problems = []
    if trained and classes and trained != classes:
        problems.append(
            f"it was trained for {len(trained)} classes {trained}, this run has "
            f"{len(classes)} {classes}"
        )
    differ = sorted(name for name in ours.keys() & theirs.keys() if ours[name] != theirs[name])
    if differ:
        name = differ[0]
        problems.append(
            f"{len(differ)} tensors differ in shape, e.g. {name}: {list(theirs[name])} in the "
            f"checkpoint, {list(ours[name])} here"
        )
    elif ours.keys() != theirs.keys():
        problems.append(f"{len(ours.keys() ^ theirs.keys())} tensor names differ")
    if problems:
        raise ConfigError(
            f"ckpt_path {path} does not fit this run: {'; '.join(problems)}. Resuming needs the "
            "classes (data.label_map) and network (model.net) it was trained with; to start a "
            f"new run from its weights (a fresh output head if the classes differ) use "
            f"init_from={path} instead of ckpt_path"
        )
