"""3D connected components of one class, streamed in row tiles (dead Li: detached dendrites).

The volume is read in tiles of rows over the depth range where the class occurs; consecutive tiles
overlap by one row, so every pair of neighbouring voxels lies together in some tile. Components
that share voxels in an overlap row are merged with a union-find; a component is *attached* when
one of its voxels touches an anchor class (e.g. the plating electrode or deposited Li).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Components:
    """Connected components of one class in one scan."""

    count: int
    attached: int
    detached: int
    voxels: np.ndarray
    """Voxel count of each component."""
    attached_mask: np.ndarray
    """Whether each component touches an anchor."""

    @property
    def detached_voxels(self) -> int:
        return int(self.voxels[~self.attached_mask].sum())


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = [0]

    def add(self, n: int) -> int:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return start

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def connected_components(
    volume,
    cid: int,
    anchors: tuple[int, ...],
    depth_range: tuple[int, int] | None = None,
    connectivity: int = 3,
    tile_rows: int = 256,
) -> Components:
    """Components of class `cid` in a (depth, rows, cols) label volume; `connectivity` 1 (faces),
    2 (edges) or 3 (corners, 26 neighbours). Anchors are searched one voxel beyond `depth_range`.
    """
    depth, rows, _ = volume.shape
    d0, d1 = depth_range if depth_range is not None else (0, depth)
    d0, d1 = max(d0 - 1, 0), min(d1 + 1, depth)
    structure = ndimage.generate_binary_structure(3, connectivity)
    uf = _UnionFind()
    sizes: dict[int, int] = {}
    attached: set[int] = set()
    previous_last_row: np.ndarray | None = None
    step = max(tile_rows, 2)
    for r0 in range(0, rows, step - 1):
        r1 = min(r0 + step, rows)
        labels = np.asarray(volume[d0:d1, r0:r1, :])
        target = labels == cid
        local, n = ndimage.label(target, structure=structure)
        base = uf.add(n) - 1
        glob = np.where(local > 0, local + base, 0)
        if n:
            anchor = np.isin(labels, anchors)
            touching = ndimage.binary_dilation(anchor, structure=structure) & target
            attached.update(int(v) for v in np.unique(glob[touching]))
            # Count voxels of rows not shared with the next tile (the last row belongs to it).
            core = glob if r1 == rows else glob[:, :-1]
            counts = np.bincount(core.ravel(), minlength=base + n + 1)
            for label in range(base + 1, base + n + 1):
                sizes[label] = int(counts[label])
        if previous_last_row is not None:
            both = (previous_last_row > 0) & (glob[:, 0] > 0)
            pairs = zip(previous_last_row[both].tolist(), glob[:, 0][both].tolist(), strict=True)
            for a, b in set(pairs):
                uf.union(a, b)
        previous_last_row = glob[:, -1].copy()
        if r1 == rows:
            break
    roots: dict[int, int] = {}
    root_attached: dict[int, bool] = {}
    for label, size in sizes.items():
        root = uf.find(label)
        roots[root] = roots.get(root, 0) + size
        root_attached[root] = root_attached.get(root, False) or label in attached
    order = sorted(roots)
    voxels = np.array([roots[r] for r in order], dtype=np.int64)
    mask = np.array([root_attached[r] for r in order], dtype=bool)
    keep = voxels > 0
    voxels, mask = voxels[keep], mask[keep]
    return Components(
        count=int(voxels.size),
        attached=int(mask.sum()),
        detached=int((~mask).sum()),
        voxels=voxels,
        attached_mask=mask,
    )
