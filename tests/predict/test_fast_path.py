"""The fast paths of prediction give today's labels: the engine's own blending and its labels
on the device, and post-processing in threads."""

from __future__ import annotations

import itertools
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from monai.inferers import sliding_window_inference
from scipy import ndimage

from batteryct.greyvalues import GreyScale
from batteryct.io import write_zarr
from batteryct.predict import InferenceSettings, PostProcessSettings, SlidingWindowEngine
from batteryct.predict import engine as engine_module
from batteryct.predict import postprocess as post
from batteryct.predict.engine import argmax_uint8, entropy_uint8, from_logits, quantised
from batteryct.predict.postprocess import find_interfaces
from batteryct.predict.volume import Outputs, segment_block
from batteryct.series import Cell
from tests.conftest import SMALL_VOXEL_UM
from tests.predict.test_engine import _net
from tests.predict.test_postprocess_and_combine import NETWORK, _postprocess


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_labels_on_the_device_equal_monais_blend_then_argmax(blend: str, precision: str) -> None:
    """Today's path: MONAI's sliding_window_inference over the engine's network (its logits
    widened to float32 first), softmax and argmax on the CPU. The fast path, which adds bf16
    logits as they are, must give the same logits and labels, byte for byte."""
    slices = torch.rand(3, 1, 40, 70)
    settings = InferenceSettings(precision=precision, batch_size=5, blend=blend)
    engine = SlidingWindowEngine(_net(), (32, 32), settings)
    with torch.inference_mode():
        logits = sliding_window_inference(
            slices, (32, 32), 5, lambda w: engine._network(w).float(), overlap=0.25, mode=blend
        )
    probs = torch.softmax(logits, dim=1)
    result = engine.segment(slices, entropy=True, probabilities=True)
    torch.testing.assert_close(engine.logits(slices), logits, rtol=0, atol=0)
    assert torch.equal(result.labels, probs.argmax(1).to(torch.uint8))
    assert torch.equal(result.probabilities, (probs * 255).round().to(torch.uint8))
    clipped = probs.clamp(1e-7, 1)
    entropy = -(clipped * clipped.log()).sum(1) / np.log(3) * 255
    assert (result.entropy.int() - entropy.round().int()).abs().max() <= 1


def test_argmax_takes_the_first_class_on_ties() -> None:
    probs = torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]).T[None, :, :, None]
    assert argmax_uint8(probs).flatten().tolist() == [1, 0, 2]
    assert entropy_uint8(torch.full((4, 1), 0.25)).item() == 255


@pytest.mark.parametrize("piece_rows", [1, 7, 30])
def test_labels_and_entropy_from_the_logits_equal_those_of_the_softmax(
    monkeypatch: pytest.MonkeyPatch, piece_rows: int
) -> None:
    """Without forming the softmax, in pieces of rows or whole: the first of equally likely
    classes, the probabilities byte for byte, the entropy within one step (0 when certain, 255
    when uniform)."""
    monkeypatch.setattr(engine_module, "CPU_PIECE_BYTES", piece_rows * 2 * 5 * 40 * 4)
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 30, 40) * 4
    logits[0, 2] = logits[0, 4] = logits[0].amax(0) + 1  # classes 2 and 4 tie everywhere
    logits[1, :, :5] = 0.0
    logits[1, 3, 5:10] = 200.0
    probs = torch.softmax(logits, dim=1)
    result = from_logits(logits.clone(), entropy=True, probabilities=True)
    assert result.labels.dtype == result.entropy.dtype == torch.uint8
    assert torch.equal(result.labels, argmax_uint8(probs))
    assert (result.labels[0] == 2).all()
    assert torch.equal(result.probabilities, quantised(probs))
    assert (result.entropy.int() - entropy_uint8(probs, dim=1).int()).abs().max() <= 1
    assert (result.entropy[1, :5] == 255).all()
    assert (result.entropy[1, 5:10] == 0).all()


_labelled = post._small_components_labelled


def _reference_small_components(block: np.ndarray, min_voxels: int) -> np.ndarray:
    """Components (26-connected, per class) under `min_voxels`, labelled over the whole volume."""
    small = np.zeros(block.shape, bool)
    for cid in np.unique(block[block > 0]):
        components, _ = ndimage.label(block == cid, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(components.ravel())
        small |= (sizes[components] < min_voxels) & (components > 0)
    return small


def _network(seed: int, rows: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    network = np.zeros((30, rows, 24), np.uint8)
    network[2:8] = 4
    network[22:28] = 4
    specks = rng.random((12, rows, 24)) < 0.12  # components of every size, across slab edges
    network[9:21][specks] = rng.choice([1, 2, 3], size=int(specks.sum()))
    return network


def _tiles(monkeypatch: pytest.MonkeyPatch, cols: int | None, depth: int | None) -> None:
    """Post-processing tiles `cols` columns wide (one output chunk) and `depth` layers deep
    (two output chunks); None: as wide or deep as the test's volumes."""
    if cols is not None:
        monkeypatch.setattr(post, "CHUNK_EDGES", (256, 64, cols))
    if depth is not None:
        monkeypatch.setattr(post, "LABELS_CHUNK_DEPTH", depth // 2)
        monkeypatch.setattr(post, "TILE_DEPTH", depth)


@pytest.mark.parametrize(
    ("case", "slab_rows", "tile_cols", "tile_depth"),
    [
        ("specks", 3, None, None),
        ("specks", 7, None, None),
        ("specks", 3, 5, None),
        ("specks", 7, 9, None),
        ("specks", 5, None, 6),
        ("specks", 3, 5, 10),
        ("one slab", 64, None, None),
        ("one slab", 64, 4, 8),
        ("no component", 5, None, 4),
        ("no electrode", 4, 6, None),
    ],
)
@pytest.mark.parametrize("threads", [2, 3])
def test_post_processing_in_threads_equals_the_serial_pass(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    slab_rows: int,
    tile_cols: int | None,
    tile_depth: int | None,
    threads: int,
) -> None:
    """In tiles of rows (and of columns and of layers, where `tile_cols` and `tile_depth` cut
    the 24 columns and 30 layers), serially or in threads: the small components of the whole
    volume, found by scipy, are removed."""
    _tiles(monkeypatch, tile_cols, tile_depth)
    network = _network(7, 40)
    if case == "no component":
        network[9:21] = 0
    if case == "no electrode":
        network[network == 4] = 0
    settings = {"min_component_voxels": 5, "slab_rows": slab_rows}
    calls: list[int] = []

    def counted(n: int):
        def workers() -> int:
            calls.append(n)
            return n

        return workers

    monkeypatch.setattr(post, "workers", counted(1))
    serial = _postprocess(network, tmp_path / "serial", **settings)
    monkeypatch.setattr(post, "workers", counted(threads))
    threaded = _postprocess(network, tmp_path / "threaded", **settings)
    assert threads in calls  # the threaded pass did run in threads
    np.testing.assert_array_equal(threaded, serial)
    chunks = zarr.open_array(str(tmp_path / "serial" / "out.zarr")).chunks
    assert tile_cols is None or chunks[2] == tile_cols
    assert tile_depth is None or chunks[0] == tile_depth // 2
    split = _postprocess(network, tmp_path / "split", min_component_voxels=0)
    expected = split.copy()
    expected[_reference_small_components(split, 5)] = 0
    np.testing.assert_array_equal(serial, expected)
    if case == "specks":
        assert (split != serial).sum() > 50  # there were small components to remove
    if case == "no component":
        assert not (serial[9:21] > 0).any()


def _moving_interfaces(seed: int) -> np.ndarray:
    """Network labels (40 layers, 12 rows, 30 columns) whose electrode faces move from column to
    column, with Li specks between them and deposited Li across the mid-plane."""
    rng = np.random.default_rng(seed)
    network = np.zeros((40, 12, 30), np.uint8)
    network[:5] = network[35:] = 3  # deposited Li outside the cell where the electrodes end
    for col in range(30):  # electrode faces that move from column to column
        network[col // 6 : 3 + col // 4, :, col] = 4
        network[29 + (col % 7) // 2 : 35 + col % 5, :, col] = 4
    inside = network[10:28]
    specks = rng.random(inside.shape) < 0.2
    inside[specks] = rng.choice([1, 2, 3], size=int(specks.sum()))
    inside[4:12, 2:8, 5:20] = 3  # deposited Li across the mid-plane, on both sides of it
    return network


@pytest.mark.parametrize(("tile_cols", "tile_depth"), [(4, None), (None, 8), (4, 12)])
def test_tiles_give_the_labels_of_one_whole_tile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tile_cols: int | None, tile_depth: int | None
) -> None:
    """Each tile takes its own columns of the interface maps and knows its layers' depth: with
    interfaces that move from column to column, tiles of 4 columns or of 8 or 12 layers split
    by side and remove small components exactly as one tile of all 30 columns and 40 layers
    does."""
    network = _moving_interfaces(11)
    settings = {"min_component_voxels": 4, "band_margin_um": 0.0}
    whole = _postprocess(network, tmp_path / "whole", **settings)
    _tiles(monkeypatch, tile_cols, tile_depth)
    tiled = _postprocess(network, tmp_path / "tiled", **settings)
    chunks = zarr.open_array(str(tmp_path / "tiled" / "out.zarr")).chunks
    assert tile_cols is None or chunks[2] == tile_cols
    assert tile_depth is None or chunks[0] == tile_depth // 2
    np.testing.assert_array_equal(tiled, whole)
    assert len(np.unique(whole)) >= 6  # both electrodes, both Li sides, specks: a real split


@pytest.mark.parametrize(("chunk_depth", "slab_rows"), [(7, 5), (40, 12), (16, 3)])
def test_interfaces_read_a_chunks_layers_at_a_time_equal_those_of_the_whole_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_depth: int, slab_rows: int
) -> None:
    """The interface pass reads each slab of rows a chunk's layers at a time (7 and 16 do not
    divide the 40 layers); its maps are those of `find_interfaces` on the whole volume."""
    network = _moving_interfaces(3)
    source = tmp_path / "net.zarr"
    write_zarr(source, network, chunks=(chunk_depth, 4, 30))
    raw_maps: list[np.ndarray] = []
    filled_and_smoothed = post._filled_and_smoothed

    def noted(maps: list[np.ndarray], size: int) -> list[np.ndarray]:
        raw_maps.extend(m.copy() for m in maps)
        return filled_and_smoothed(maps, size)

    monkeypatch.setattr(post, "_filled_and_smoothed", noted)
    cell = Cell(voxel_size_um=1.0, plating_side="end")
    settings = PostProcessSettings(slab_rows=slab_rows)
    post.postprocess_scan(source, tmp_path / "out.zarr", NETWORK, cell, settings)
    expected = find_interfaces(network == NETWORK.index("electrode"))
    assert len(raw_maps) == 4
    for found, whole in zip(raw_maps, expected, strict=True):
        np.testing.assert_array_equal(found, whole.astype(post.MAP_DTYPE))
    assert np.isfinite(expected[1]).all()  # every column has a gap: maps worth comparing


@pytest.mark.parametrize("missing", [0.0, 0.3, 0.95])
def test_maps_are_filled_from_the_nearest_column_and_smoothed_as_scipy_does_each(
    missing: float,
) -> None:
    """Columns without interfaces (NaN in all four maps) take the nearest column's values, found
    once for the four maps: the same as filling and filtering each map on its own with scipy."""
    rng = np.random.default_rng(4)
    bad = rng.random((23, 31)) < missing
    maps = [rng.integers(0, 60, bad.shape).astype(post.MAP_DTYPE) for _ in range(4)]
    for m in maps:
        m[bad] = np.nan
    for m, found in zip(maps, post._filled_and_smoothed(maps, 5), strict=True):
        filled = m
        if bad.any():
            nearest = ndimage.distance_transform_edt(bad, return_indices=True)[1]
            filled = m[tuple(nearest)]
        np.testing.assert_array_equal(found, ndimage.median_filter(filled, 5, mode="nearest"))
        assert not np.isnan(found).any()


@pytest.mark.parametrize(("chunk_depth", "band_chunks"), [(2, 2), (3, 4), (40, 2)])
def test_bands_of_layers_give_the_labels_of_one_band(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_depth: int, band_chunks: int
) -> None:
    """Post-processing reads the network labels in bands of whole chunks and whole tiles of 8
    layers (here 8, 24 or all 40 layers), each with the 3 halo layers of the bands beside it:
    no read spans more, and the labels are those of one band and one tile of all layers."""
    network = _moving_interfaces(5)
    settings = PostProcessSettings(min_component_voxels=4, band_margin_um=0.0, slab_rows=5)
    whole = _postprocess(network, tmp_path / "whole", **asdict(settings))
    _tiles(monkeypatch, None, 8)
    monkeypatch.setattr(post, "BAND_CHUNKS", band_chunks)
    reads: list[slice] = []
    slabs_with_halo = post._slabs_with_halo

    def noted(source: object, slab_rows: int, halo: int, layers: slice) -> object:
        reads.append(layers)
        return slabs_with_halo(source, slab_rows, halo, layers)

    monkeypatch.setattr(post, "_slabs_with_halo", noted)
    write_zarr(tmp_path / "net.zarr", network, chunks=(chunk_depth, 4, 30))
    cell = Cell(voxel_size_um=SMALL_VOXEL_UM, plating_side="end")
    post.postprocess_scan(tmp_path / "net.zarr", tmp_path / "out.zarr", NETWORK, cell, settings)
    band = post.read_band_depth(chunk_depth, 8, 40)
    assert band == {2: 8, 3: 24, 40: 40}[chunk_depth]
    assert len(reads) == -(-40 // band)
    assert all(layers.stop - layers.start <= band + 2 * 3 for layers in reads)
    banded = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]
    np.testing.assert_array_equal(banded, whole)
    assert len(np.unique(whole)) >= 6  # both electrodes, both Li sides, specks: a real split


@pytest.mark.parametrize("side", ["start", "end"])
def test_float32_interface_maps_give_the_labels_of_float64_maps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    """The interface maps are kept in float32: the whole and half voxels they hold, filled
    where a column has no gap and smoothed, then widened by the margin (a fraction of a voxel
    here) and halved into the mid-plane, give the labels and the report of float64 maps."""
    network = _moving_interfaces(3)
    gapless = network[:, 4:6, 10:12]
    gapless[gapless == 4] = 0  # columns without electrodes take their neighbours' interfaces
    write_zarr(tmp_path / "net.zarr", network)
    cell = Cell(voxel_size_um=1.33, plating_side=side)
    results = {}
    for dtype in (np.float64, np.float32):
        monkeypatch.setattr(post, "MAP_DTYPE", dtype)
        out = tmp_path / f"{np.dtype(dtype).name}.zarr"
        report = post.postprocess_scan(
            tmp_path / "net.zarr", out, NETWORK, cell, PostProcessSettings(min_component_voxels=4)
        )
        results[dtype] = (zarr.open_array(str(out), mode="r")[:], report)
    (labels64, report64), (labels32, report32) = results[np.float64], results[np.float32]
    np.testing.assert_array_equal(labels32, labels64)
    assert report32 == report64
    assert len(np.unique(labels32)) >= 6  # both electrodes, both Li sides, specks: a real split


class _CountingRows:
    """A volume that counts how often each row is read."""

    def __init__(self, volume: np.ndarray) -> None:
        self.volume, self.shape = volume, volume.shape
        self.reads = np.zeros(volume.shape[1], int)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        self.reads[key[1]] += 1
        return self.volume[key]


@pytest.mark.parametrize(("slab_rows", "halo"), [(4, 2), (3, 7), (40, 4), (5, 0)])
def test_slabs_with_halo_read_every_row_once(slab_rows: int, halo: int) -> None:
    volume = np.random.default_rng(0).integers(0, 5, (3, 17, 4)).astype(np.uint8)
    source = _CountingRows(volume)
    starts = []
    for start, stop, low, parts in post._slabs_with_halo(source, slab_rows, halo):
        starts.append(start)
        assert (stop, low) == (min(start + slab_rows, 17), max(start - halo, 0))
        block = np.concatenate(parts, axis=1)
        np.testing.assert_array_equal(block, volume[:, low : min(stop + halo, 17)])
    assert starts == list(range(0, 17, slab_rows))
    assert (source.reads == 1).all()


def test_results_come_back_in_order_with_bounded_work_in_flight() -> None:
    started: list[int] = []

    def work(start: int) -> int:
        started.append(start)
        return start * 10

    results = post._in_order(work, range(20), threads=2)
    assert [next(results) for _ in range(3)] == [0, 10, 20]
    assert len(started) <= 3 + 2 * 2  # not all 20 slabs at once
    assert list(results) == [s * 10 for s in range(3, 20)]


def _reference_interfaces(electrode: np.ndarray) -> np.ndarray:
    """Per column, by plain Python: outer, inner, inner, outer faces of the widest gap closed by
    electrode on both sides (the first of equal ones), NaN without one."""
    faces = np.full((4, *electrode.shape[1:]), np.nan)
    for row in range(electrode.shape[1]):
        for col in range(electrode.shape[2]):
            where = np.flatnonzero(electrode[:, row, col])
            gaps = [(b - a - 1, a, b) for a, b in itertools.pairwise(where)]
            widest = max((g for g in gaps if g[0] > 0), key=lambda g: g[0], default=None)
            if widest is not None:
                faces[:, row, col] = (where[0], widest[1], widest[2], where[-1])
    return faces


@pytest.mark.parametrize("seed", range(6))
def test_interfaces_in_one_pass_match_a_column_by_column_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    electrode = rng.random((25, 6, 7)) < rng.uniform(0.05, 0.6)
    electrode[:4, :3] = True  # some columns with two clear layers
    electrode[-3:, :3] = True
    np.testing.assert_array_equal(
        np.stack(find_interfaces(electrode)), _reference_interfaces(electrode)
    )


@pytest.mark.parametrize("min_voxels", [2, 5, 8, 9, 27])
@pytest.mark.parametrize(
    "open_ends",
    [
        ((False, False), (False, False), (False, False)),
        ((False, False), (True, False), (False, False)),
        ((False, False), (True, True), (False, False)),
        ((False, False), (False, False), (False, True)),
        ((False, False), (False, True), (True, True)),
        ((True, False), (False, False), (False, False)),
        ((False, True), (True, False), (False, True)),
    ],
)
@pytest.mark.parametrize("way", ["candidate graph", "whole labelling"])
def test_small_components_match_scipy_labelling(
    monkeypatch: pytest.MonkeyPatch,
    min_voxels: int,
    open_ends: tuple[tuple[bool, bool], ...],
    way: str,
) -> None:
    """Both ways, the cube-and-graph search and the labelling of a speckled tile whole, find
    exactly the components that scipy's labelling of each class finds under `min_voxels`,
    sparing those that touch an open end (layers, rows or columns)."""
    graph = way == "candidate graph"
    monkeypatch.setattr(post, "GRAPH_MAX_CANDIDATES", 1.0 if graph else 0.0)
    labelled = []
    monkeypatch.setattr(
        post,
        "_small_components_labelled",
        lambda *args: labelled.append(args) or _labelled(*args),
    )
    rng = np.random.default_rng(min_voxels)
    block = np.zeros((14, 12, 16), np.uint8)
    block[:4] = 4  # a large component
    block[4:] = rng.choice([0, 1, 2, 3], size=(10, 12, 16), p=[0.55, 0.2, 0.15, 0.1])
    block[8:12, 3:9, 4:10] = 2  # one more large one, joined to small ones around it
    expected = _reference_small_components(block, min_voxels)
    for axis, ends in enumerate(open_ends):
        for edge, is_open in zip((0, -1), ends, strict=True):
            if not is_open:
                continue
            for cid in range(1, 5):  # components seen at an open end continue beyond the block
                components, _ = ndimage.label(block == cid, structure=np.ones((3, 3, 3), bool))
                touching = np.unique(np.take(components, edge, axis=axis))
                expected &= ~np.isin(components, touching[touching > 0])
    found = post._small_components(block, min_voxels, open_ends)
    assert expected.any()  # there are small components to find
    np.testing.assert_array_equal(found, expected)
    assert bool(labelled) == (not graph and min_voxels > 1)


@pytest.mark.parametrize(("memory_slabs", "threads", "slots"), [(4, 8, 2), (100, 3, 3), (1, 4, 1)])
def test_slabs_labelled_whole_at_once_fit_in_half_the_memory(
    monkeypatch: pytest.MonkeyPatch, memory_slabs: int, threads: int, slots: int
) -> None:
    """As many speckled slabs are labelled at once as half the memory holds, at least one and
    at most one per post-processing thread."""
    slab_voxels = 1000
    pages = memory_slabs * slab_voxels * post.LABELLING_BYTES_PER_VOXEL
    monkeypatch.setattr(post.os, "sysconf", lambda name: 1 if name == "SC_PAGE_SIZE" else pages)
    monkeypatch.setattr(post, "workers", lambda: threads)
    semaphore = post.labelling_slots(slab_voxels)
    taken = [semaphore.acquire(blocking=False) for _ in range(slots + 1)]
    assert taken == [True] * slots + [False]


@pytest.mark.parametrize("side", [2, 3])
@pytest.mark.parametrize("piece_layers", [1, 2, 5, 40])
def test_uniform_cubes_found_in_pieces_match_a_search_of_every_cube(
    monkeypatch: pytest.MonkeyPatch, side: int, piece_layers: int
) -> None:
    """Every voxel of every uniform side³ cube, and no other, whatever the depth pieces."""
    rng = np.random.default_rng(side * 100 + piece_layers)
    block = rng.choice([0, 1, 2], size=(23, 9, 11), p=[0.1, 0.1, 0.8]).astype(np.uint8)
    block[3:9, 2:7, 1:8] = 1  # uniform regions across piece boundaries
    block[15:, :4, 5:] = 0
    monkeypatch.setattr(post, "CUBE_PIECE_VOXELS", piece_layers * 9 * 11)
    windows = np.lib.stride_tricks.sliding_window_view(block, (side,) * 3)
    uniform = (windows == windows[..., :1, :1, :1]).all(axis=(-3, -2, -1))
    expected = np.zeros(block.shape, bool)
    for offset in itertools.product(range(side), repeat=3):
        expected[tuple(slice(o, o + n) for o, n in zip(offset, uniform.shape, strict=True))] |= (
            uniform
        )
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(post._in_uniform_cube(block, side), expected)


@pytest.mark.parametrize("plating_at_end", [True, False])
@pytest.mark.parametrize("piece_layers", [1, 3, 64])
def test_side_split_in_pieces_matches_the_whole_block_rule(
    monkeypatch: pytest.MonkeyPatch, plating_at_end: bool, piece_layers: int
) -> None:
    """Each voxel's analysis class from its network class and its side: outside the cell
    (beyond the outer faces and the margin), stripping or plating side of the mid-plane;
    interfaces on whole and half voxels test the boundaries."""
    rng = np.random.default_rng(piece_layers)
    depth, rows, cols = 30, 5, 6
    block = rng.integers(0, 5, (depth, rows, cols), dtype=np.uint8)
    outer1 = rng.integers(2, 8, (rows, cols)) + rng.choice([0.0, 0.5, 0.25], (rows, cols))
    outer2 = rng.integers(22, 28, (rows, cols)) + rng.choice([0.0, 0.5], (rows, cols))
    middle = rng.integers(12, 18, (rows, cols)) + rng.choice([0.0, 0.5], (rows, cols))
    margin = 1.5
    monkeypatch.setattr(post, "SPLIT_PIECE_VOXELS", piece_layers * rows * cols)
    table = post._side_table(post._network_lookup(list(post.NETWORK_NAMES)))
    expected = np.zeros(block.shape, np.uint8)
    for d, r, c in itertools.product(range(depth), range(rows), range(cols)):
        in_cell = outer1[r, c] - margin <= d <= outer2[r, c] + margin
        plating = (d > middle[r, c]) == plating_at_end
        side = 0 if not in_cell else (2 if plating else 1)
        expected[d, r, c] = table[side, block[d, r, c]]
    found = post._split_by_side(block, table, outer1, outer2, middle, plating_at_end, margin)
    np.testing.assert_array_equal(found, expected)
    assert len(np.unique(found)) == len(np.unique(table))  # every class on some side


@pytest.mark.parametrize("pixels", [40 * 70, 2 * 40 * 70, 100])
def test_a_cpu_engine_takes_fewer_slices_at_once_where_they_exceed_its_pixels(
    monkeypatch: pytest.MonkeyPatch, pixels: int
) -> None:
    """On a CPU the engine's calls hold at most CPU_CALL_PIXELS of slices (always one slice at
    least), the earlier axes' probabilities cut alike: the labels, entropy and probabilities of
    calls of `slices_per_batch` slices, byte for byte."""
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 256, (7, 40, 70), dtype=np.uint8)
    earlier = [rng.random((3, 7, 40, 70), dtype=np.float32).astype(np.float16)]
    engine = SlidingWindowEngine(_net(), (32, 32), InferenceSettings(precision="fp32"))
    outputs = Outputs(entropy=True, probabilities=True)
    whole = segment_block(engine, stack, "depth", 4, 0, GreyScale(0, 255), outputs, "s", earlier)
    calls: list[int] = []
    segment = engine.segment

    def counted(slices: torch.Tensor, *args: object) -> object:
        calls.append(len(slices))
        return segment(slices, *args)

    monkeypatch.setattr(engine, "segment", counted)
    monkeypatch.setattr(engine_module, "CPU_CALL_PIXELS", pixels)
    capped = segment_block(engine, stack, "depth", 4, 0, GreyScale(0, 255), outputs, "s", earlier)
    per_call = max(1, pixels // (40 * 70))
    assert calls == [per_call] * (7 // per_call) + ([7 % per_call] if 7 % per_call else [])
    for name, block in whole.items():
        np.testing.assert_array_equal(capped[name], block, err_msg=name)


def test_multi_axis_mean_equals_numpys() -> None:
    """A multi-axis run keeps its earlier axes' probabilities as float16 and averages them with
    the last axis's in the engine: numpy's values bit for bit. Rounding to the nearest float16
    (ties to even, subnormals, overflow to infinity), float32 sums in order with the engine's
    own axis first, divided; labels are numpy's argmax of the mean (the first of equal
    classes), probabilities its rounding × 255, entropy that of the mean."""
    edges = np.array([0, 5.96e-8, 2.98e-8, 6.1e-5, 1 + 2**-11, 1 + 3 * 2**-11, 7e4], np.float32)
    with np.errstate(over="ignore"):
        expected16 = edges.astype(np.float16)
    converted = torch.from_numpy(edges).to(torch.float16).numpy()
    np.testing.assert_array_equal(converted.view(np.uint16), expected16.view(np.uint16))

    rng = np.random.default_rng(4)
    slices = torch.rand(3, 1, 40, 70)
    engine = SlidingWindowEngine(_net(), (32, 32), InferenceSettings(precision="fp32"))
    own = engine.probabilities(slices).numpy()
    own16 = engine.probabilities(slices, torch.float16).numpy()
    np.testing.assert_array_equal(own16.view(np.uint16), own.astype(np.float16).view(np.uint16))
    # the earlier axes' blocks arrive classes first, moved to slices first: strided views
    earlier = [
        np.moveaxis(rng.random((3, 3, 40, 70), dtype=np.float32).astype(np.float16), 1, 0)
        for _ in range(2)
    ]
    for count in (1, 2):
        parts = earlier[:count]
        mean = np.mean([own16.astype(np.float32), *parts], axis=0, dtype=np.float32)
        result = engine.segment(slices, True, True, [torch.from_numpy(part) for part in parts])
        np.testing.assert_array_equal(result.labels.numpy(), mean.argmax(1))
        rounded = np.clip(np.rint(mean * 255), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(result.probabilities.numpy(), rounded)
        entropy = entropy_uint8(torch.from_numpy(mean), dim=1).numpy()
        np.testing.assert_array_equal(result.entropy.numpy(), entropy)
    tied = torch.from_numpy(mean.copy())
    tied[:, 2] = tied[:, 1] = 1.5  # classes 1 and 2 tie for the largest everywhere
    labels = engine_module.from_probabilities(tied, False, False).labels.numpy()
    np.testing.assert_array_equal(labels, tied.numpy().argmax(1))  # the first of equals
    assert (labels == 1).all()
