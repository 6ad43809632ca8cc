"""Quick-look PNGs: one cross-section of a scan before and after registration, and differences."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def write_quicklook(
    path: Path,
    scan_id: str,
    before: np.ndarray,
    after: np.ndarray,
    reference: np.ndarray,
    top: float,
) -> None:
    """Cross-sections (depth × cols) before/after registration and their differences to the
    reference, written atomically."""
    panels = [
        (before, "before (levelled only)", "gray", (0, top)),
        (after, "after registration", "gray", (0, top)),
        (before - reference, "before − reference", "RdBu_r", (-top / 2, top / 2)),
        (after - reference, "after − reference", "RdBu_r", (-top / 2, top / 2)),
    ]
    aspect = max(before.shape[1] / max(before.shape[0], 1), 1)
    fig, axes = plt.subplots(4, 1, figsize=(8, min(2 + 8 / aspect * 4, 14)), squeeze=False)
    for ax, (image, title, cmap, limits) in zip(axes[:, 0], panels, strict=True):
        ax.imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
        ax.set_title(f"{scan_id}: {title}", fontsize=9)
        ax.set_xlabel("cols")
        ax.set_ylabel("depth")
    diff_before = float(np.abs(before - reference).mean())
    diff_after = float(np.abs(after - reference).mean())
    fig.suptitle(
        f"mean |difference| to the reference: {diff_before:.2f} before, {diff_after:.2f} after",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
