"""Shared figure helpers: class colours for label overlays."""

from __future__ import annotations

from matplotlib.colors import ListedColormap, to_rgba

from batteryct.classes import CLASS_COLORS


def class_colormap(classes: dict[int, str]) -> ListedColormap:
    """A colormap indexed by class id (transparent background)."""
    n = max(classes) + 1
    colors = [(0.0, 0.0, 0.0, 0.0)] * n
    for cid, name in classes.items():
        colors[cid] = to_rgba(CLASS_COLORS.get(name, "#aaaaaa"))
    return ListedColormap(colors)
