"""From the network's 5 classes to the 7-class analysis scheme, with physical plausibility.

1. The electrode interfaces are found per (row, col) column from the predicted electrode: the
   widest gap between electrode voxels is the electrolyte; its edges are the two interfaces, its
   middle the mid-plane. Columns without a clear gap take the nearest good column's values.
2. Each class is allowed only in its plausible depth band: everything between the outer faces of
   the two electrodes; pits only on the stripping side of the mid-plane, dendrites only on the
   plating side; voxels outside become background.
   This replaces hand-typed per-scan slice ranges.
3. Deposited Li on the stripping side of the mid-plane becomes redeposited Li; electrode voxels
   become plating or stripping electrode by side (the manifest's `cell.plating_side`).
4. Connected components (26-connected, per class) smaller than `min_component_voxels` are
   removed (to background). A voxel inside a cube of one class with at least that many
   voxels belongs to a large component, so only the others (surfaces of thin structures and
   specks: under 1 % of a segmented synthetic scan) are grouped, on their sparse neighbour
   graph; the result equals labelling every class whole (tested against scipy) at about 10×
   the speed. A speckled segmentation (an untrained or early model), where more than
   `GRAPH_MAX_CANDIDATES` of the voxels are such candidates, is labelled whole instead, all
   classes in one scikit-image pass: 22× faster there than the graph (BENCHMARKS.md).
   Tiles of `slab_rows` rows by one output chunk's columns by TILE_DEPTH layers are labelled
   with a halo of `min_component_voxels - 1` rows, columns and layers on each side, so memory
   stays bounded whatever the scan's size and the decision is still exact for the whole volume:
   a component that reaches the halo's edge spans more rows (columns, layers) than a small
   component can. The labels are read in bands of layers (whole chunks, at least BAND_CHUNKS
   of them, so memory stays bounded however deep the scan) and, within a band, in slabs of
   rows, each row once (row halos come from the neighbouring slabs read before and after;
   layer halos from the chunks of the bands beside, decompressed again).
   Tiles are post-processed in threads (numpy and scipy release the GIL), each writing its
   result as whole chunks of its own from its thread; a tile's labels depend only on the
   network labels, so they are those of a serial pass.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import measure

from batteryct.classes import ANALYSIS_CLASSES, class_id
from batteryct.errors import ConfigError
from batteryct.predict.volume import CHUNK_EDGES, open_or_create
from batteryct.series import Cell

log = logging.getLogger(__name__)
NETWORK_NAMES = ("background", "dendrite", "pit", "deposited_li", "electrode")
MAX_WORKERS = 8
T = TypeVar("T")
TileResult = tuple[int, int]
"""A post-processed (and written) tile: its voxels, and its small-component voxels removed."""
UNMAPPED = 255
"""Analysis label of a network class the analysis scheme lacks (post-processing off only)."""
GRAPH_MAX_CANDIDATES = 0.05
"""Fraction of a slab's voxels, outside uniform cubes, above which small components are found
by labelling the slab whole (faster there, but LABELLING_BYTES_PER_VOXEL) rather than on the
candidates' graph; the two cross at about 7 % on a segmented synthetic scan with noise added."""
LABELLING_BYTES_PER_VOXEL = 24
"""Memory of labelling a slab whole: scikit-image's int64 labels, as much again meanwhile, and
the masks around them (23 bytes a voxel measured)."""
SPLIT_PIECE_VOXELS = 1 << 20
"""Voxels per piece of the side split (a few depth layers): its widened lookup index, 8 MiB,
stays in the last-level cache, and a tile takes a few dozen array operations rather than one
per layer, few for the GIL to hand over between post-processing's threads (on one thread, a
270 × 78 × 1038 tile took 22.7 ms against 25.5 ms in pieces of 2^17 voxels, 45 ms whole)."""
CUBE_PIECE_VOXELS = 1 << 20
"""Voxels per piece of the uniform-cube search: its masks, 1 MiB each, stay in the cache."""
LABELS_CHUNK_DEPTH = 64
"""Chunk depth of the analysis labels: 4 MiB chunks of a paper-size scan (zarr's cost per chunk
is about a millisecond), read 64 slices at a time by TIFF export."""
MAP_DTYPE = np.float32
"""Interface maps (depth indices per column, NaN where none was found): float32 holds their whole
and half voxels exactly below 2^23 layers, in half the memory of float64 (four maps and their
smoothed copies: 0.2 GB instead of 0.4 GB for a paper-size scan's 1707 × 3896 columns)."""
BAND_CHUNKS = 8
"""Chunks of the network labels, along depth, that post-processing reads at least at once (see
`read_band_depth`)."""
TILE_DEPTH = 256
"""Depth layers of a post-processing tile (rounded to whole chunks of the analysis labels): a
tile's arrays, several bytes a voxel, then stay bounded whatever the scan's depth."""


@dataclass(frozen=True)
class PostProcessSettings:
    """Post-processing of network labels (recorded in the predictions manifest)."""

    enabled: bool = True
    band_margin_um: float = 5.0
    """Tolerance beyond an interface when testing whether a class lies in its band."""
    min_component_voxels: int = 8
    slab_rows: int = 64
    """Rows per slab; a slab is post-processed in tiles of one output chunk's columns and
    TILE_DEPTH layers, each read with `min_component_voxels - 1` more rows, columns and layers
    on each side."""
    smooth_columns: int = 5
    """Median filter (pixels) over the interface maps."""


Interfaces = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Per column: outer face of the first electrode, its inner face, inner face of the second, its
outer face, as depth indices (NaN where the column has no two separate electrode layers)."""


def find_interfaces(electrode: np.ndarray) -> Interfaces:
    """The `Interfaces` of a (depth, rows, cols) electrode mask."""
    return interfaces_of_layers(iter(electrode), electrode.shape[0], electrode.shape[1:])


def interfaces_of_layers(
    layers: Iterable[np.ndarray], depth: int, columns: tuple[int, ...]
) -> Interfaces:
    """The `Interfaces` of an electrode mask given as its `depth` layers in order, each of shape
    `columns` (a caller may read the volume a few layers at a time).

    One pass down the depth axis, in place on small integers: the widest run of non-electrode
    voxels closed by electrode on both sides is the gap (the first of equally wide runs)."""
    kind = np.int16 if depth < np.iinfo(np.int16).max else np.int32
    first = np.full(columns, -1, kind)
    last = np.full(columns, -1, kind)
    run = np.zeros(columns, kind)  # non-electrode voxels since the last electrode voxel
    best_len = np.zeros(columns, kind)
    best_end = np.full(columns, -1, kind)
    closes, scratch = np.empty(columns, bool), np.empty(columns, bool)
    for d, layer in enumerate(layers):
        np.greater(run, best_len, out=closes)
        closes &= layer
        np.greater_equal(last, 0, out=scratch)
        closes &= scratch
        np.copyto(best_len, run, where=closes)
        np.copyto(best_end, d - 1, where=closes)
        np.less(first, 0, out=scratch)
        scratch &= layer
        np.copyto(first, d, where=scratch)
        np.copyto(last, d, where=layer)
        run += 1
        np.copyto(run, 0, where=layer)
    ok = best_len >= 1
    inner_first = np.where(ok, best_end - best_len, np.nan)  # last electrode voxel of layer 1
    inner_second = np.where(ok, best_end + 1, np.nan)  # first electrode voxel of layer 2
    outer_first = np.where(ok, first, np.nan)
    outer_second = np.where(ok, last, np.nan)
    return outer_first, inner_first, inner_second, outer_second


def _filled_and_smoothed(maps: list[np.ndarray], size: int) -> list[np.ndarray]:
    """The interface maps, each column without interfaces (NaN in every map alike) given those
    of the nearest column with them, then median-filtered over `size` × `size` columns. The
    nearest columns are found once for all the maps, which are then filtered in threads."""
    bad = np.isnan(maps[0])
    nearest = None
    if bad.any():
        found = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        nearest = np.ravel_multi_index(tuple(found), bad.shape)
        del found

    def smoothed(values: np.ndarray) -> np.ndarray:
        filled = values if nearest is None else np.take(values, nearest)
        return ndimage.median_filter(filled, size=max(1, size), mode="nearest")

    return list(_in_order(smoothed, maps))


def postprocess_scan(
    network_labels: Path,
    output: Path,
    class_names: list[str],
    cell: Cell,
    settings: PostProcessSettings,
    advance: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Write the 7-class analysis labels of a network label volume; return what was found.

    `advance(stage, voxels)`, when given, hears of each stage's start (0 voxels) and of each
    row slab done: in stage "interfaces", then in stage "post-processing", each adding up to
    the volume's voxels."""
    source = zarr.open_array(str(network_labels), mode="r")
    shape = tuple(source.shape)

    def done(stage: str, voxels: int) -> None:
        if advance is not None:
            advance(stage, voxels)

    target = open_or_create(output, shape, _slab_chunks(shape, settings.slab_rows), "uint8")
    tile_depth = max(TILE_DEPTH // target.chunks[0], 1) * target.chunks[0]
    tile_cols = target.chunks[2]  # tiles own whole chunks of the target
    check_postprocess(class_names, cell, settings)
    if not settings.enabled:
        done("post-processing", 0)
        lookup = {name: i for i, name in enumerate(class_names)}
        for start in range(0, shape[1], settings.slab_rows):
            block = source[:, start : start + settings.slab_rows, :]
            target[:, start : start + settings.slab_rows, :] = _naive_analysis(block, lookup)
            done("post-processing", block.size)
        return {"enabled": False}
    lookup = _network_lookup(class_names)
    electrode_id = lookup["electrode"]
    maps = [np.full(shape[1:], np.nan, MAP_DTYPE) for _ in range(4)]

    def interfaces(rows: slice) -> tuple[slice, Interfaces]:
        """The interfaces of a slab of rows, every column at once: each step of the pass down
        the depth axis is then one large array operation, and the threads hand the GIL over
        less often. Read a chunk's layers at a time, so that only those are held."""
        step = source.chunks[0]
        layers = (
            layer
            for top in range(0, shape[0], step)
            for layer in np.asarray(source[top : top + step, rows]) == electrode_id
        )
        return rows, interfaces_of_layers(layers, shape[0], (rows.stop - rows.start, shape[2]))

    done("interfaces", 0)
    row_slabs = [
        slice(row, min(row + settings.slab_rows, shape[1]))
        for row in range(0, shape[1], settings.slab_rows)
    ]
    for rows, found_maps in _in_order(interfaces, row_slabs):
        for m, found in zip(maps, found_maps, strict=True):
            m[rows] = found
        done("interfaces", shape[0] * found_maps[0].size)
    found = not np.isnan(maps[1]).all()
    if found:
        smoothed = _filled_and_smoothed(maps, settings.smooth_columns)
    else:  # no electrolyte gap anywhere: cut the volume into two halves, as the paper did
        log.warning("no separate electrode layers in %s; splitting at half depth", network_labels)
        half = np.full(shape[1:], (shape[0] - 1) / 2, MAP_DTYPE)
        last = np.full(shape[1:], shape[0] - 1, MAP_DTYPE)
        smoothed = [np.zeros(shape[1:], MAP_DTYPE), half, half, last]
    del maps  # the smoothed maps take their place while the tiles are post-processed
    outer1, inner1, inner2, outer2 = smoothed
    middle = (inner1 + inner2) / 2
    plating_at_end = cell.plating_side == "end"
    margin = settings.band_margin_um / cell.voxel_size_um
    halo = max(settings.min_component_voxels - 1, 0)
    side_table = _side_table(lookup)
    tile_extent = (tile_depth, settings.slab_rows, tile_cols)
    extent = [min(edge + 2 * halo, size) for edge, size in zip(tile_extent, shape, strict=True)]
    slots = labelling_slots(int(np.prod(extent)))

    def post_process(tile: _Tile) -> TileResult:
        layers, columns = tile.around[0], tile.around[1:]
        out = _split_by_side(
            tile.block,
            side_table,
            outer1[columns],
            outer2[columns],
            middle[columns],
            plating_at_end,
            margin,
            first_layer=layers.start,
        )
        open_ends = tuple(
            (part.start > 0, part.stop < size)
            for part, size in zip(tile.around, shape, strict=True)
        )
        small = _small_components(out, settings.min_component_voxels, open_ends, slots)
        out[small] = 0
        core = tile.core_in_block
        target[tile.core] = out[core]  # whole chunks of its own: never shared
        return out[core].size, int(small[core].sum())

    removed = 0
    done("post-processing", 0)
    tiles = _tiles_with_halo(source, settings.slab_rows, tile_cols, tile_depth, halo)
    for voxels, count in _in_order(post_process, tiles):
        removed += count
        done("post-processing", voxels)
    return {
        "enabled": True,
        "plating_side": cell.plating_side,
        "interfaces": "found per column" if found else "not found: split at half depth",
        "mean_interfaces_depth_vox": [
            float(np.mean(m, dtype=np.float64)) for m in (outer1, inner1, inner2, outer2)
        ],
        "mean_gap_vox": float(np.mean(inner2 - inner1, dtype=np.float64)),
        "small_components_removed_voxels": int(removed),
    }


def _slab_chunks(shape: tuple[int, ...], slab_rows: int) -> tuple[int, int, int]:
    """Chunks of the analysis labels: `slab_rows` rows tall, so each slab is written as whole
    chunks (a chunk shared by two slabs would be read back and rewritten); LABELS_CHUNK_DEPTH
    deep and CHUNK_EDGES long, a few MiB."""
    return (
        min(LABELS_CHUNK_DEPTH, shape[0]),
        min(slab_rows, shape[1]),
        min(CHUNK_EDGES[2], shape[2]),
    )


@dataclass(frozen=True)
class _Tile:
    """Network labels of a tile's layers, rows and columns and of the halo around them."""

    core: tuple[slice, slice, slice]
    """The tile's layers, rows and columns in the volume."""
    around: tuple[slice, slice, slice]
    """The layers, rows and columns of `block` in the volume: the core and its halo."""
    parts: list[np.ndarray]
    """Views of consecutive rows of the slabs read, which together make up `block`."""

    @property
    def block(self) -> np.ndarray:
        """The labels of `around` (a copy, made by the thread that post-processes the tile,
        unless one slab holds all its rows)."""
        return self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts, axis=1)

    @property
    def core_in_block(self) -> tuple[slice, slice, slice]:
        layers, rows, cols = (
            slice(c.start - a.start, c.stop - a.start)
            for c, a in zip(self.core, self.around, strict=True)
        )
        return layers, rows, cols


def read_band_depth(chunk_depth: int, tile_depth: int, depth: int) -> int:
    """Layers of the network labels that post-processing reads at once: whole tiles and whole
    chunks, at least BAND_CHUNKS chunks (a band's halo layers come from its neighbours' chunks,
    decompressed again: at most 2 / BAND_CHUNKS more), all layers where that is as many."""
    step = math.lcm(chunk_depth, tile_depth)
    return min(-(-max(BAND_CHUNKS * chunk_depth, tile_depth) // step) * step, depth)


def _tiles_with_halo(
    source: Any, slab_rows: int, tile_cols: int, tile_depth: int, halo: int
) -> Iterator[_Tile]:
    """Each band of layers (`read_band_depth`), each slab of `slab_rows` rows of it (see
    `_slabs_with_halo`), cut into tiles of `tile_depth` layers by `tile_cols` columns, each with
    up to `halo` layers and columns of its neighbours on each side."""
    depth, cols = source.shape[0], source.shape[2]
    band_depth = read_band_depth(source.chunks[0], tile_depth, depth)
    for band_top in range(0, depth, band_depth):
        band_bottom = min(band_top + band_depth, depth)
        band = slice(max(band_top - halo, 0), min(band_bottom + halo, depth))
        for start, stop, low, parts in _slabs_with_halo(source, slab_rows, halo, band):
            rows = slice(low, low + sum(part.shape[1] for part in parts))
            for top in range(band_top, band_bottom, tile_depth):
                bottom = min(top + tile_depth, depth)
                layers = slice(max(top - halo, 0), min(bottom + halo, depth))
                in_band = slice(layers.start - band.start, layers.stop - band.start)
                for first in range(0, cols, tile_cols):
                    end = min(first + tile_cols, cols)
                    around = slice(max(first - halo, 0), min(end + halo, cols))
                    core = (slice(top, bottom), slice(start, stop), slice(first, end))
                    views = [part[in_band, :, around] for part in parts]
                    yield _Tile(core, (layers, rows, around), views)


def _slabs_with_halo(
    source: Any, slab_rows: int, halo: int, layers: slice = slice(None)
) -> Iterator[tuple[int, int, int, list[np.ndarray]]]:
    """(start, stop, low, views of rows low..high in order) of each slab of `slab_rows` rows of
    `source`'s `layers`, with up to `halo` rows of its neighbours on each side; every row is
    read once, in order."""
    size = source.shape[1]
    held: deque[tuple[int, np.ndarray]] = deque()  # consecutive slabs read, first row each
    read_to = 0
    for start in range(0, size, slab_rows):
        stop = min(start + slab_rows, size)
        low, high = max(start - halo, 0), min(stop + halo, size)
        while read_to < high:
            held.append((read_to, np.asarray(source[layers, read_to : read_to + slab_rows, :])))
            read_to = min(read_to + slab_rows, size)
        while held[0][0] + held[0][1].shape[1] <= low:
            held.popleft()
        yield (
            start,
            stop,
            low,
            [block[:, max(low - first, 0) : high - first] for first, block in held],
        )


def check_postprocess(class_names: list[str], cell: Cell, settings: PostProcessSettings) -> None:
    """A ConfigError when a model's classes or the manifest's cell cannot be post-processed.

    With post-processing switched off any classes are fine: those the analysis scheme lacks
    (iteration 1's `li`) become UNMAPPED in the analysis labels.
    """
    if not settings.enabled:
        return
    _network_lookup(class_names)
    if cell.plating_side not in ("start", "end"):
        raise ConfigError(
            "post-processing splits classes by side and needs cell.plating_side ('start' or "
            "'end') in the manifest; add it, or set postprocess.enabled=false"
        )
    if "electrode" not in class_names:
        raise ConfigError(
            f"post-processing needs an 'electrode' class; the model predicts {class_names}; "
            "set postprocess.enabled=false for this model"
        )


def _network_lookup(class_names: list[str]) -> dict[str, int]:
    unknown = [n for n in class_names if n not in NETWORK_NAMES]
    if unknown:
        raise ConfigError(
            f"the model's classes {class_names} include {unknown}, which the analysis scheme "
            f"does not know; post-processing maps {list(NETWORK_NAMES)}"
        )
    return {name: i for i, name in enumerate(class_names)}


def _naive_analysis(block: np.ndarray, lookup: dict[str, int]) -> np.ndarray:
    """Network labels in analysis ids without any split (post-processing switched off);
    classes the analysis scheme lacks become UNMAPPED."""
    out = np.zeros(block.shape, np.uint8)
    for name, cid in lookup.items():
        target = "plating_electrode" if name == "electrode" else name
        known = target in ANALYSIS_CLASSES.values()
        out[block == cid] = class_id(ANALYSIS_CLASSES, target) if known else UNMAPPED
    return out


def _side_table(lookup: dict[str, int]) -> np.ndarray:
    """(3, network classes) analysis id of each network class outside the cell, on the
    stripping side and on the plating side; background where the class is not allowed."""
    ids = {name: class_id(ANALYSIS_CLASSES, name) for name in ANALYSIS_CLASSES.values()}
    allowed = {  # network class: its analysis class on the stripping side, on the plating side
        "electrode": ("stripping_electrode", "plating_electrode"),
        "deposited_li": ("redeposited_li", "deposited_li"),
        "dendrite": (None, "dendrite"),
        "pit": ("pit", None),
    }
    table = np.zeros((3, max(lookup.values()) + 1), np.uint8)
    for name, targets in allowed.items():
        for side, target in enumerate(targets, start=1):
            if name in lookup and target is not None:
                table[side, lookup[name]] = ids[target]
    return table


def _split_by_side(
    block: np.ndarray,
    table: np.ndarray,
    outer1: np.ndarray,
    outer2: np.ndarray,
    middle: np.ndarray,
    plating_at_end: bool,
    margin: float,
    first_layer: int = 0,
) -> np.ndarray:
    """Analysis labels of a block of network labels whose first layer is `first_layer` of the
    volume: each voxel's side (0 outside the cell, 1 stripping side, 2 plating side) and
    network class looked up in `_side_table`.

    Done a few depth layers at a time (about SPLIT_PIECE_VOXELS): the lookup's index, which
    numpy widens to 8 bytes a voxel, then stays in the cache (2× faster than whole tiles)."""
    flat_table = table.ravel()
    classes = np.uint8(table.shape[1])
    low = np.subtract(outer1, margin, dtype=np.float64)
    high = np.add(outer2, margin, dtype=np.float64)
    pieces = list(_depth_pieces(block.shape, SPLIT_PIECE_VOXELS))
    piece = (pieces[0][1], *block.shape[1:])
    index, in_cell, plating_side = (
        np.empty(piece, np.uint8),
        np.empty(piece, bool),
        np.empty(piece, bool),
    )
    out = np.empty(block.shape, np.uint8)
    for start, stop in pieces:
        n = stop - start
        d = np.arange(first_layer + start, first_layer + stop, dtype=float)[:, None, None]
        cell, plating, idx = in_cell[:n], plating_side[:n], index[:n]
        np.greater_equal(d, low, out=cell)
        np.less_equal(d, high, out=plating)
        cell &= plating
        np.greater(d, middle, out=plating)
        if not plating_at_end:
            np.logical_not(plating, out=plating)
        plating &= cell
        np.add(cell, plating, out=idx, dtype=np.uint8)
        idx *= classes
        idx += block[start:stop]
        np.take(flat_table, idx, out=out[start:stop])
    return out


OpenEnds = tuple[tuple[bool, bool], ...]
"""Per axis of a block (depth, rows, columns): whether its first and its last plane are open,
i.e. cut from a larger volume, so that what touches them continues beyond."""


def _small_components(
    block: np.ndarray,
    min_voxels: int,
    open_ends: OpenEnds,
    slots: threading.Semaphore | None = None,
) -> np.ndarray:
    """Mask of the components (26-connected, per class) under `min_voxels`, except those that
    touch an end of the block marked open (they continue beyond it). A speckled block is
    labelled whole while holding one of `slots` (see `labelling_slots`).

    Only voxels that no uniform cube of `min_voxels` or more voxels covers can lie in a small
    component; the components among them are found on their sparse 26-neighbour graph, and
    one that touches a covered voxel of its class belongs to a large component.
    """
    if min_voxels <= 1:
        return np.zeros(block.shape, bool)
    block = np.ascontiguousarray(block)
    flat = block.ravel()
    covered = _in_uniform_cube(block, side=int(np.ceil(min_voxels ** (1 / 3) - 1e-9)))
    candidates = np.empty(block.shape, bool)
    for start, stop in _depth_pieces(block.shape, CUBE_PIECE_VOXELS):  # no whole-slab temporaries
        piece = candidates[start:stop]
        np.not_equal(block[start:stop], 0, out=piece)
        piece &= ~covered[start:stop]
    count = np.count_nonzero(candidates)
    if count == 0:
        return np.zeros(block.shape, bool)
    if count > GRAPH_MAX_CANDIDATES * block.size:
        del candidates, covered
        with slots or nullcontext():
            return _small_components_labelled(block, min_voxels, open_ends)
    nodes = np.flatnonzero(candidates)
    coords = np.unravel_index(nodes, block.shape)
    values = flat[nodes]
    flat_covered = covered.ravel()
    steps = np.array(block.strides) // block.itemsize  # elements between neighbours per axis
    rows_from, rows_to, keep = [], [], np.zeros(nodes.size, bool)
    for offset in _NEIGHBOURS:
        inside = np.ones(nodes.size, bool)
        for axis, step in enumerate(offset):
            moved = coords[axis] + step
            inside &= (moved >= 0) & (moved < block.shape[axis])
        source = np.flatnonzero(inside)
        target = nodes[source] + int(np.dot(offset, steps))
        same = flat[target] == values[source]
        source, target = source[same], target[same]
        keep[source[flat_covered[target]]] = True  # joined to a voxel of a large component
        if offset > (0, 0, 0):  # each edge of the candidate graph once
            position = np.searchsorted(nodes, target)
            found = position < nodes.size
            found[found] = nodes[position[found]] == target[found]
            rows_from.append(source[found])
            rows_to.append(position[found])
    for axis, edge in _open_planes(block.shape, open_ends):
        keep |= coords[axis] == edge
    pairs_from = np.concatenate(rows_from)
    graph = coo_matrix(
        (np.ones(pairs_from.size, bool), (pairs_from, np.concatenate(rows_to))),
        shape=(nodes.size, nodes.size),
    )
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    kept = np.bincount(component, weights=keep) > 0
    drop = (sizes < min_voxels) & ~kept
    small = np.zeros(block.shape, bool)
    small.ravel()[nodes[drop[component]]] = True
    return small


def _small_components_labelled(
    block: np.ndarray, min_voxels: int, open_ends: OpenEnds
) -> np.ndarray:
    """`_small_components` by labelling every class of the block at once (scikit-image,
    26-connected, int64 labels): the way for a speckled block."""
    components = measure.label(block, background=0, connectivity=3)
    small = np.bincount(components.ravel()) < min_voxels
    small[0] = False  # background
    for axis, edge in _open_planes(block.shape, open_ends):
        small[np.take(components, edge, axis=axis)] = False
    return np.take(small, components)


def _open_planes(shape: tuple[int, ...], open_ends: OpenEnds) -> Iterator[tuple[int, int]]:
    """(axis, index) of each open end plane of a block of `shape` (see `OpenEnds`)."""
    for axis, ends in enumerate(open_ends):
        for edge, is_open in zip((0, shape[axis] - 1), ends, strict=True):
            if is_open:
                yield axis, edge


def labelling_slots(slab_voxels: int) -> threading.Semaphore:
    """How many slabs of `slab_voxels` may be labelled whole at once: as many as half of this
    machine's memory holds (LABELLING_BYTES_PER_VOXEL each), at least one, at most `workers()`."""
    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fit = memory_bytes // 2 // (LABELLING_BYTES_PER_VOXEL * max(slab_voxels, 1))
    return threading.BoundedSemaphore(max(1, min(fit, workers())))


def _in_uniform_cube(block: np.ndarray, side: int) -> np.ndarray:
    """Mask of the voxels that lie in a cube of side × side × side voxels of one value (a cube's
    voxels are all 26-connected, so they belong to a component of at least side³ voxels).

    Found in pieces of a few depth layers (about CUBE_PIECE_VOXELS), each read with the
    `side - 1` layers around it that its voxels' cubes may reach: the piece's masks then stay
    in the cache (2-2.5× faster than whole slabs)."""
    depth, reach = block.shape[0], side - 1
    covered = np.empty(block.shape, bool)
    for start, stop in _depth_pieces(block.shape, CUBE_PIECE_VOXELS, min_layers=side):
        low, high = max(start - reach, 0), min(stop + reach, depth)
        piece = _in_uniform_cube_whole(block[low:high], side)
        covered[start:stop] = piece[start - low : stop - low]
    return covered


def _depth_pieces(
    shape: tuple[int, ...], piece_voxels: int, min_layers: int = 1
) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive pieces of depth layers of a block of `shape`, each of about
    `piece_voxels` voxels and at least `min_layers` layers (the last may be thinner)."""
    plane = int(np.prod(shape[1:]))
    layers = max(min_layers, piece_voxels // max(1, plane))
    for start in range(0, shape[0], layers):
        yield start, min(start + layers, shape[0])


def _in_uniform_cube_whole(block: np.ndarray, side: int) -> np.ndarray:
    """`_in_uniform_cube` of a whole block, one axis at a time: uniform runs of `side` voxels
    along columns, squares of uniform runs with equal first voxels along rows, then cubes of
    such squares along depth."""
    anchors = tuple(n - side + 1 for n in block.shape)
    if min(anchors) < 1:
        return np.zeros(block.shape, bool)
    uniform: np.ndarray | None = None  # uniform runs, then squares, then cubes, per anchor
    values = block
    for axis in (2, 1, 0):
        length = anchors[axis]
        first = _along(values, axis, 0, length)
        grown = np.ones(first.shape, bool)
        for step in range(1, side):
            grown &= _along(values, axis, step, length) == first
            if uniform is not None:
                grown &= _along(uniform, axis, step, length)
        if uniform is not None:
            grown &= _along(uniform, axis, 0, length)
        uniform = grown
        values = first
    assert uniform is not None
    spread = uniform
    for axis in range(3):  # every voxel of each uniform cube, one axis at a time
        shape = list(spread.shape)
        shape[axis] = block.shape[axis]
        grown = np.zeros(shape, bool)
        for step in range(side):
            index = [slice(None)] * 3
            index[axis] = slice(step, step + anchors[axis])
            grown[tuple(index)] |= spread
        spread = grown
    return spread


def _along(array: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """`length` entries of `array` along `axis` from `start` (a view)."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, start + length)
    return array[tuple(index)]


_NEIGHBOURS = [o for o in itertools.product((-1, 0, 1), repeat=3) if any(o)]
"""The 26 neighbour offsets of a voxel."""


def workers() -> int:
    """Threads for post-processing slabs: the CPUs this process may use, at most 8."""
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


def _in_order(
    work: Callable[[Any], T], items: Iterable[Any], threads: int | None = None
) -> Iterator[T]:
    """`work` of each item, run in `threads` threads (default `workers()`), yielded in order;
    at most twice as many slabs as threads are in flight, so memory stays bounded (items are
    drawn from `items` in this thread as slabs finish)."""
    threads = threads or workers()
    if threads == 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="batteryct-post") as pool:
        flight: deque[Future[T]] = deque()
        for item in items:
            flight.append(pool.submit(work, item))
            if len(flight) >= 2 * threads:
                yield flight.popleft().result()
        while flight:
            yield flight.popleft().result()
