"""Shared figure helpers: class colours for label overlays."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgba

from batteryct.classes import CLASS_COLORS


def class_colormap(classes: dict[int, str]) -> ListedColormap:
    """A colormap indexed by class id (transparent background)."""
    n = max(classes) + 1
    colors = [(0.0, 0.0, 0.0, 0.0)] * n
    for cid, name in classes.items():
        colors[cid] = to_rgba(CLASS_COLORS.get(name, "#aaaaaa"))
    return ListedColormap(colors)


def show_labels(
    ax: Axes,
    image: np.ndarray,
    labels: np.ndarray | None,
    cmap: ListedColormap,
    alpha: float = 0.6,
    extent: tuple[float, float, float, float] | None = None,
) -> None:
    """A grey-value image with class labels (if any) laid over it in their colours."""
    ax.imshow(image, cmap="gray", extent=extent, interpolation="nearest")
    if labels is not None:
        ax.imshow(
            labels,
            cmap=cmap,
            vmin=0,
            vmax=cmap.N - 1,
            alpha=alpha,
            extent=extent,
            interpolation="nearest",
        )
