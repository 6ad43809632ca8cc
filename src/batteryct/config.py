"""OmegaConf resolvers used by batteryct's configs (registered on import)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def run_folder(ckpt_path: str | None, default: str) -> str:
    """The run folder of a checkpoint `<run>/checkpoints/<name>.ckpt`, else `default`.

    A resumed run (`ckpt_path=`) thereby continues in its own folder: the same checkpoints,
    metrics and overlays.
    """
    if ckpt_path and Path(ckpt_path).parent.name == "checkpoints":
        return str(Path(ckpt_path).parent.parent)
    return default


OmegaConf.register_new_resolver("len", lambda items: len(items), replace=True)
OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)
