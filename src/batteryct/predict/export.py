"""Export a trained network to ONNX (for inference outside PyTorch)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from batteryct.predict.checkpoint import load_trained_model


def export_onnx(ckpt: str | Path, path: str | Path) -> Path:
    """Write the checkpoint's network as ONNX (input "image" N×1×H×W, output "logits"), with
    dynamic batch and spatial sizes, and a JSON sidecar with its classes and patch size."""
    model = load_trained_model(ckpt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 1, *model.patch_size)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.onnx.export(
        model.net,
        example,
        str(tmp),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={
            "image": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
        },
        opset_version=17,
    )
    tmp.replace(path)
    sidecar = {
        "classes": model.class_names,
        "patch_size": list(model.patch_size),
        "orientation": model.orientation,
        "checkpoint": str(model.path),
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return path
