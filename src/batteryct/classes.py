"""Class tables, defined once for the whole project.

The network segments five classes; post-processing splits two of them by depth into the seven
classes of the analysis scheme (see DOMAIN.md).
"""

from __future__ import annotations

ANALYSIS_CLASSES: dict[int, str] = {
    0: "background",
    1: "dendrite",
    2: "pit",
    3: "deposited_li",
    4: "redeposited_li",
    5: "plating_electrode",
    6: "stripping_electrode",
}
"""The 7-class analysis scheme: id -> name. Background includes electrolyte, pouch and voids."""

NETWORK_CLASSES: dict[int, str] = {
    0: "background",
    1: "dendrite",
    2: "pit",
    3: "deposited_li",
    4: "electrode",
}
"""The 5 classes the multi-class network predicts."""

ANALYSIS_TO_NETWORK: dict[str, str] = {
    "background": "background",
    "dendrite": "dendrite",
    "pit": "pit",
    "deposited_li": "deposited_li",
    "redeposited_li": "deposited_li",
    "plating_electrode": "electrode",
    "stripping_electrode": "electrode",
}
"""Which network class each analysis class comes from (the inverse of the depth split)."""

UNLABELLED = 0
"""Raw hand-label value meaning "not painted"; such pixels never reach the loss or the metrics."""


def class_id(classes: dict[int, str], name: str) -> int:
    """Id of the class called `name` in a class table, with an error listing the valid names."""
    for cid, cname in classes.items():
        if cname == name:
            return cid
    raise KeyError(
        f"class {name!r} is not in the class table; valid names: {sorted(classes.values())}"
    )


CLASS_COLORS: dict[str, str] = {
    "background": "#00000000",
    "dendrite": "#e6194b",
    "pit": "#ffe119",
    "deposited_li": "#3cb44b",
    "redeposited_li": "#42d4f4",
    "plating_electrode": "#4363d8",
    "stripping_electrode": "#f58231",
    "electrode": "#4363d8",
    "li": "#3cb44b",
}
"""Overlay colour of each class name in figures (background transparent)."""
