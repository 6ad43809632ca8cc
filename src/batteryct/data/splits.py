"""Train/validation/test splits by slice, never by patch, so no patch leaks across splits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from batteryct.data.slices import SliceRef
from batteryct.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


def split_slices(
    refs: Sequence[SliceRef],
    fractions: Sequence[float],
    seed: int,
    contents: Sequence[set[int]] | None = None,
    tries: int = 200,
) -> dict[str, list[SliceRef]]:
    """Shuffle slices with `seed` and cut them by `fractions` (train, val[, test]).

    Every split with a non-zero fraction gets at least one slice; the rest go by largest
    remainder, so 42 slices at 72/13/15 % give 30/6/6 as in the paper's refined model. With
    `contents` (the classes each slice holds), the shuffles of seeds `seed`, `seed + 1`, …
    are tried in turn and the first where every part holds every class is taken (or, after
    `tries`, the one that covers the most, training first), so that every class is both learnt
    and scored.
    """
    if len(fractions) not in (2, 3) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ConfigError(
            f"data.split is {list(fractions)}; expected 2 or 3 non-negative fractions "
            "(train, val[, test]), e.g. [0.85, 0.15] or [0.72, 0.13, 0.15]"
        )
    shares = np.asarray(fractions, float) / float(sum(fractions))
    wanted = int((shares > 0).sum())
    if len(refs) < wanted:
        raise ConfigError(
            f"the series has {len(refs)} labelled slice(s) for the chosen orientation; a split "
            f"into {wanted} parts needs at least {wanted}: label more slices or change data.split"
        )
    counts = _part_sizes(shares, len(refs))
    if contents is None:
        return _cut(refs, np.random.default_rng(seed).permutation(len(refs)), counts)
    every = set().union(*contents)
    classes_of = dict(zip(refs, contents, strict=True))
    best: tuple[int, dict[str, list[SliceRef]]] | None = None
    for attempt in range(tries):
        order = np.random.default_rng(seed + attempt).permutation(len(refs))
        split = _cut(refs, order, counts)
        parts = [part for part in split.values() if part]
        held = [len(set().union(*(classes_of[r] for r in part))) for part in parts]
        covered = 2 * held[0] + sum(held[1:])  # training's coverage first
        if best is None or covered > best[0]:
            best = (covered, split)
        if all(n == len(every) for n in held):
            break
    assert best is not None
    return best[1]


def _part_sizes(shares: np.ndarray, n: int) -> np.ndarray:
    counts = np.floor(shares * n).astype(int)
    counts[(shares > 0) & (counts == 0)] = 1
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    remainders = shares * n - counts
    while counts.sum() < n:
        best = int(np.argmax(np.where(shares > 0, remainders, -np.inf)))
        counts[best] += 1
        remainders[best] -= 1
    return counts


def _cut(
    refs: Sequence[SliceRef], order: np.ndarray, counts: np.ndarray
) -> dict[str, list[SliceRef]]:
    out: dict[str, list[SliceRef]] = {}
    start = 0
    for name, count in zip(SPLIT_NAMES, counts, strict=False):
        out[name] = sorted(refs[i] for i in order[start : start + count])
        start += count
    return out


def save_split(split: dict[str, list[SliceRef]], path: Path) -> None:
    """Write the split as JSON: for each part, the list of (scan, axis, index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        name: [{"scan": r.scan_id, "axis": r.axis, "index": r.index} for r in refs]
        for name, refs in split.items()
    }
    path.write_text(json.dumps(data, indent=1))


def load_split(path: Path) -> dict[str, list[SliceRef]]:
    data = json.loads(Path(path).read_text())
    return {
        name: [SliceRef(r["scan"], r["axis"], int(r["index"])) for r in refs]
        for name, refs in data.items()
    }
