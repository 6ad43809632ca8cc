"""Hand-built label series for exact answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from batteryct.classes import ANALYSIS_CLASSES
from batteryct.io import write_zarr

C = {name: cid for cid, name in ANALYSIS_CLASSES.items()}


def write_series(
    folder: Path,
    volumes: list[np.ndarray],
    minutes: list[float],
    phases: list[str],
    voxel_um: float = 2.0,
    chunks: tuple[int, int, int] | None = None,
    **cell: object,
) -> Path:
    """Write label volumes as zarr and a manifest naming them as labels_gt; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    scans = []
    for i, (vol, minute, phase) in enumerate(zip(volumes, minutes, phases, strict=True)):
        write_zarr(folder / f"scan_{i:02d}.zarr", vol, chunks=chunks)
        scans.append(
            {
                "id": f"scan_{i:02d}",
                "image": f"scan_{i:02d}.zarr",
                "minutes": minute,
                "phase": phase,
                "current_mA": 0.75 if phase != "pristine" else 0,
                "labels_gt": f"scan_{i:02d}.zarr",
            }
        )
    manifest = {
        "name": "hand-built",
        "cell": {"voxel_size_um": voxel_um, **cell},
        "classes": dict(ANALYSIS_CLASSES),
        "scans": scans,
    }
    path = folder / "series.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


SHAPE = (20, 8, 10)
PIT = (slice(1, 3), slice(2, 6), slice(2, 6))


def hand_built_cell() -> list[np.ndarray]:
    """Three scans of a tiny cell (20 × 8 × 10 voxels, plating side at the end of depth).

    0 pristine: stripping electrode depth 0–3, plating electrode 16–19.
    1 half cycle: stripping 0–2 (one layer stripped), a 4 × 4 × 2 pit in it (depth 1–2),
      deposited Li 14–15 everywhere, an attached dendrite (2 × 2 columns, depth 10–13).
    2 full cycle: deposited Li gone, plating electrode 17–19, the pit half filled with
      redeposited Li (depth 2), the attached dendrite at depth 13–16 (touching the electrode,
      which now starts at 17) and a detached dendrite (2 × 2 columns, depth 9–10).
    """
    v0 = np.zeros(SHAPE, np.uint8)
    v0[0:4] = C["stripping_electrode"]
    v0[16:20] = C["plating_electrode"]
    v1 = np.zeros(SHAPE, np.uint8)
    v1[0:3] = C["stripping_electrode"]
    v1[PIT] = C["pit"]
    v1[14:16] = C["deposited_li"]
    v1[16:20] = C["plating_electrode"]
    v1[10:14, 0:2, 0:2] = C["dendrite"]
    v2 = np.zeros(SHAPE, np.uint8)
    v2[0:3] = C["stripping_electrode"]
    v2[PIT] = C["pit"]
    v2[2:3, 2:6, 2:6] = C["redeposited_li"]
    v2[17:20] = C["plating_electrode"]
    v2[13:17, 0:2, 0:2] = C["dendrite"]
    v2[9:11, 5:7, 7:9] = C["dendrite"]
    return [v0, v1, v2]
