"""End-to-end prediction benchmark: where the time of `predict.py` goes, and how fast it is.

1. The time split, stage by stage and one stage at a time, over a whole volume: read (and grey
   values to the device), network, blend, softmax/entropy/argmax (with the copy back of uint8),
   write, post-processing; then post-processing alone in one thread and in all, for its
   scaling with cores.
2. The whole pipeline as `predict.py` runs it (`predict_series`: resumable units, reading and
   writing overlapped with compute, post-processing, entropy map, publication), in Mvoxel/s, and
   the time this projects for one of the paper's 3896 × 1707 × 698 scans; the fastest of
   `--repeats` runs, since a shared machine slows single runs unevenly.

The image is a synthetic cell (two electrode layers, an electrolyte gap with grains, noise); the
network is a 1 × 1 convolution (`--net trivial`: everything around the network), the paper's
`resunet7` with random weights (speckled labels: post-processing's worst case), or
`resunet7-segmenting`: resunet7's work with the 1 × 1 convolution's labels, a segmentation's.

    python bench/bench_pipeline.py                       # CPU proxy: 128 × 256 × 512, trivial
    python bench/bench_pipeline.py --net resunet7 --shape 698 192 3896 --axis rows --window 512
    python bench/bench_pipeline.py --shape 256 256 512 --axis rows --trained-axes --skip-split
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import CLASSES, PAPER_SCAN, RESUNET7

TRIVIAL = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 5, "kernel_size": 1}


def write_synthetic_cell(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A uint8 zarr volume: electrode layers at both ends of the depth axis, single-voxel grains
    between them (small components for post-processing to remove) and noise.

    Written in blocks of whole chunks (one chunk deep and tall, every column), each generated
    from its own seed and written by one of the CPUs' threads (numpy's generator and zstd release
    the GIL): a chunk written in parts would be decompressed and compressed again for each part,
    and a paper-size scan is generated in seconds rather than minutes, within the GPU check's
    time limit. A block is a few chunks, so the benchmark's peak memory is the pipeline's."""
    from batteryct.io import create_zarr

    depth = shape[0]
    array = create_zarr(path, shape, np.uint8)
    step_depth, step_rows = array.chunks[:2]

    def write_block(corner: tuple[int, int]) -> None:
        start, row = corner
        rng = np.random.default_rng((seed, start, row))
        slices = np.arange(start, min(start + step_depth, depth))
        rows = min(step_rows, shape[1] - row)
        electrode = (slices < depth // 4) | (slices >= depth - depth // 4)
        block = np.where(electrode, 215, 60).astype(np.uint8)[:, None, None]
        block = block + rng.integers(0, 40, (len(slices), rows, shape[2]), dtype=np.uint8)
        grains = rng.binomial(block.size, 0.002)  # at random voxels, 0.2 % of them
        block.reshape(-1)[rng.integers(0, block.size, grains)] = 140
        array[start : start + len(slices), row : row + rows] = block

    corners = [(d, r) for d in range(0, depth, step_depth) for r in range(0, shape[1], step_rows)]
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(write_block, corners))
    return path


def write_apart(path: Path, shape: tuple[int, int, int]) -> Path:
    """`write_synthetic_cell` in a child process: the memory its threads keep after writing
    (50-100 MiB for larger volumes) stays out of this process's peak RSS, which is then the
    pipeline's."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(write_synthetic_cell, path, shape).result()


def threshold_network() -> torch.nn.Conv2d:
    """The trivial network: grey values to classes (< 0.45 background, grains, electrode)."""
    net = torch.nn.Conv2d(1, 5, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 10.0]).view(5, 1, 1, 1))
        net.bias.copy_(torch.tensor([0.0, -100.0, -100.0, -2.25, -6.25]))
    return net


class SegmentingUNet(torch.nn.Module):
    """`resunet7` with random weights for the network's work, but the threshold network's logits
    for its labels: a segmentation's layers and grains, as a trained model gives, rather than
    the speckle of random weights, which post-processing finds far costlier (BENCHMARKS.md)."""

    def __init__(self) -> None:
        from hydra.utils import instantiate

        super().__init__()
        self.unet = instantiate(RESUNET7)
        self.threshold = threshold_network()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.threshold(images) + 0.0 * self.unet(images)


NETWORKS = {
    "trivial": TRIVIAL,
    "resunet7": RESUNET7,
    "resunet7-segmenting": {"_target_": "bench_pipeline.SegmentingUNet"},
}
"""The benchmark's networks by `--net` name (Hydra configs, as a checkpoint records them)."""


def write_checkpoint(path: Path, net_name: str, window: int, orientation: str) -> Path:
    from hydra.utils import instantiate

    from batteryct.models.module import CHECKPOINT_KEY

    config = NETWORKS[net_name]
    torch.manual_seed(0)
    net = threshold_network() if net_name == "trivial" else instantiate(config)
    info = {
        "config": {"model": {"net": config}},
        "class_names": CLASSES,
        "orientation": orientation,
        "patch_size": [window, window],
    }
    state = {f"net.{k}": v for k, v in net.eval().state_dict().items()}
    torch.save({"state_dict": state, CHECKPOINT_KEY: info}, path)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    totals: dict[str, list[float]], name: str, fn: Callable[..., Any], device: torch.device
) -> Callable[..., Any]:
    """`fn`, adding its wall time (device work included) and its CPU time (all of the process's
    threads) to `totals[name]`, a [wall, CPU] pair of seconds."""

    def run(*args: Any, **kwargs: Any) -> Any:
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        sync(device)
        totals[name][0] += time.perf_counter() - start
        totals[name][1] += time.process_time() - cpu_start
        return result

    return run


def time_split(
    args: argparse.Namespace, folder: Path, series: Path, ckpt: Path
) -> dict[str, tuple[float, float]]:
    """Each stage timed on its own over the whole volume, one after the other (no overlap):
    stage -> (wall, CPU) seconds."""
    from batteryct.predict import Outputs, PostProcessSettings, postprocess_scan
    from batteryct.predict.checkpoint import load_trained_model
    from batteryct.predict.engine import SlidingWindowEngine
    from batteryct.predict.overlap import ReadAhead
    from batteryct.predict.volume import (
        AXIS_INDEX,
        block_key,
        chunks_for,
        open_or_create,
        read_block,
        segment_block,
        slabs,
    )
    from batteryct.series import load_series

    device = torch.device(args.device)
    source = load_series(series)
    scan = source.scans[0]
    image = source.open_image(scan)
    model = load_trained_model(ckpt)
    scale = model.grey_scale(image, "benchmark image")
    engine = SlidingWindowEngine(model.net, model.patch_size, inference_settings(args), device)
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    engine._network = timed(totals, "network", engine._network, device)
    engine._blended = timed(totals, "network+blend", engine._blended, device)
    engine.segment = timed(totals, "engine", engine.segment, device)
    shape = image.shape
    chunks = chunks_for(shape, args.axis, args.slab)
    labels = open_or_create(folder / "split_labels.zarr", shape, chunks, "uint8")
    entropy = open_or_create(folder / "split_entropy.zarr", shape, chunks, "uint8")
    outputs = Outputs(entropy=True)
    units = [
        SimpleNamespace(name=str(index), start=start, stop=stop)
        for index, (start, stop) in enumerate(slabs(shape[AXIS_INDEX[args.axis]], args.slab))
    ]
    with ReadAhead(image, args.axis, scale, units, prefetch=False) as reader:  # bands
        for index, unit in enumerate(units):
            stack = timed(totals, "read", reader.get, device)(unit)
            blocks = segment_block(
                engine, stack, args.axis, args.slices_per_batch, index, scale, outputs, "benchmark"
            )
            key = block_key(args.axis, unit.start, unit.stop)
            timed(totals, "write", _write_outputs, device)(
                [(labels, key, blocks["labels_net"]), (entropy, key, blocks["entropy"])]
            )
    timed(totals, "postprocess", postprocess_scan, device)(
        folder / "split_labels.zarr",
        folder / "split_post.zarr",
        CLASSES,
        source.cell,
        PostProcessSettings(),
    )
    start_slabs = time.perf_counter()  # the peer: each slab read on its own
    for unit in units:
        read_block(image, args.axis, unit.start, unit.stop, scale)
    read_by_slab = time.perf_counter() - start_slabs
    print(
        f"read in bands of whole chunks {totals['read'][0]:.2f} s, slab by slab "
        f"{read_by_slab:.2f} s ({read_by_slab / totals['read'][0]:.1f}x)"
    )
    stages = {
        "read": totals["read"],
        "network": totals["network"],
        "blend": np.subtract(totals["network+blend"], totals["network"]),
        "softmax_entropy_argmax": np.subtract(totals["engine"], totals["network+blend"]),
        "write": totals["write"],
        "postprocess": totals["postprocess"],
    }
    return {stage: (float(wall), float(cpu)) for stage, (wall, cpu) in stages.items()}


FLOOR_STAGES = ("network", "write", "postprocess")
"""Stages whose work no change around the network removes: the network itself, zstd compression
of the outputs and post-processing (its own target: 50 Mvoxel/s in 2 threads)."""


def cpu_floor(split: dict[str, tuple[float, float]], cores: int) -> float:
    """The least wall time of an end-to-end run on `cores` cores: the CPU time of FLOOR_STAGES
    shared perfectly between the cores."""
    return sum(split[stage][1] for stage in FLOOR_STAGES) / cores


def _write_outputs(writes: list[tuple[Any, tuple[slice, ...], np.ndarray]]) -> None:
    """Each (array, selection, values) written in turn."""
    for array, key, values in writes:
        array[key] = values


def postprocess_scaling(
    folder: Path, series: Path, voxels: int, attempts: int = 2
) -> dict[str, float]:
    """Mvoxel/s of post-processing alone (the split's network labels), in one thread, in
    `workers()` threads (the default) and in one thread per CPU where there are more CPUs (is
    the default's cap right for this machine?), best of `attempts` runs each."""
    from batteryct.predict import PostProcessSettings, postprocess_scan
    from batteryct.predict import postprocess as post
    from batteryct.series import load_series

    cell = load_series(series).cell
    default, cpus = post.workers(), len(os.sched_getaffinity(0))
    threads = {"1 thread": 1, f"{default} threads (default)": default}
    if cpus > default:
        threads[f"{cpus} threads"] = cpus
    rates = {}
    for name, count in threads.items():
        best = np.inf
        for attempt in range(attempts):
            target = folder / f"scaling_{count}_{attempt}.zarr"
            start = time.perf_counter()
            with _workers(post, count):
                postprocess_scan(
                    folder / "split_labels.zarr", target, CLASSES, cell, PostProcessSettings()
                )
            best = min(best, time.perf_counter() - start)
        rates[name] = voxels / best / 1e6
    return rates


@contextmanager
def _workers(module: Any, count: int) -> Iterator[None]:
    """Post-processing in `count` threads for the duration."""
    original = module.workers
    module.workers = lambda: count
    try:
        yield
    finally:
        module.workers = original


def inference_settings(args: argparse.Namespace) -> Any:
    from batteryct.predict import InferenceSettings

    return InferenceSettings(
        window=(args.window, args.window),
        batch_size=args.batch_size,
        precision=args.precision,
        compile=args.compile,
    )


def end_to_end(
    args: argparse.Namespace, folder: Path, series: Path, ckpt: Path
) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds (all threads) of one `predict_series` run as predict.py makes it
    (fresh output folder), and the wall seconds of each stage that its summary records."""
    from rich.console import Console

    from batteryct.predict import (
        Outputs,
        PostProcessSettings,
        PredictSettings,
        predict_series,
        single_process_trainer,
    )

    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    trainer = single_process_trainer(accelerator)
    settings = PredictSettings(
        axes=None if args.trained_axes else (args.axis,),
        slab=args.slab,
        slices_per_batch=args.slices_per_batch,
        outputs=Outputs(entropy=True),
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    predict_series(
        ckpt,
        series,
        folder / "predictions",
        inference_settings(args),
        settings,
        PostProcessSettings(),
        trainer,
        console=Console(quiet=True),
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    summary = json.loads((folder / "predictions" / "summary" / "scan.json").read_text())
    return wall, cpu, summary["stage_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 512), metavar="N")
    parser.add_argument("--axis", default="depth", choices=("depth", "rows", "cols"))
    parser.add_argument("--net", default="trivial", choices=tuple(NETWORKS))
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="windows per forward pass (default: by device)"
    )
    parser.add_argument("--slices-per-batch", type=int, default=4)
    parser.add_argument("--slab", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-split", action="store_true", help="only the end-to-end run")
    parser.add_argument(
        "--trained-axes",
        action="store_true",
        help="end to end along every axis of the model's orientation, as predict.py does by "
        "default (--axis rows or cols: a cross-section model, rows + cols averaged)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="end-to-end runs; the fastest is reported"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from batteryct.series import Cell, Scan, Series, save_series

    name = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    shape = tuple(args.shape)
    voxels = int(np.prod(shape))
    print(
        f"device: {args.device} ({name}), torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}; {args.net} network, window {args.window}, "
        f"{' × '.join(map(str, shape))} voxels along "
        + ("every axis of the model's orientation" if args.trained_axes else args.axis),
        flush=True,
    )
    results: dict[str, Any] = {"device": name, "shape": list(shape), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        orientation = "in_plane" if args.axis == "depth" else "cross_section"
        ckpt = write_checkpoint(folder / "bench.ckpt", args.net, args.window, orientation)
        volume = write_apart(folder / "image.zarr", shape)
        cell = Cell(voxel_size_um=1.33, plating_side="end")
        scans = [Scan("scan", volume, 0.0, "pristine")]
        series = save_series(Series(cell, {0: "background"}, scans), folder / "series.yaml")
        if not args.skip_split:
            split = time_split(args, folder, series, ckpt)
            total = sum(wall for wall, _ in split.values())
            print("time split (each stage on its own, no overlap; CPU time of all threads):")
            for stage, (seconds, cpu) in split.items():
                if seconds:
                    print(
                        f"  {stage:24s} {seconds:8.2f} s  {seconds / total * 100:5.1f} %"
                        f"   CPU {cpu:6.2f} s"
                    )
            print(f"  {'sum':24s} {total:8.2f} s  ({voxels / total / 1e6:.2f} Mvoxel/s)")
            results["split_s"] = {stage: wall for stage, (wall, _) in split.items()}
            results["split_cpu_s"] = {stage: cpu for stage, (_, cpu) in split.items()}
            if args.device == "cpu":
                cores = len(os.sched_getaffinity(0))
                floor = cpu_floor(split, cores)
                print(
                    f"floor on {cores} cores: the network, the writes and post-processing alone "
                    f"take {floor * cores:.2f} CPU-s, so end to end takes at least {floor:.2f} s, "
                    f"at most {voxels / floor / 1e6:.1f} Mvoxel/s even were read, blend, "
                    "softmax/entropy/argmax, ranking and the per-scan costs free"
                )
                results["floor_s"] = floor
            scaling = postprocess_scaling(folder, series, voxels, min(2, args.repeats))
            print(
                "post-processing alone: "
                + ", ".join(f"{name} {rate:.1f} Mvoxel/s" for name, rate in scaling.items())
            )
            results["postprocess_mvoxel_per_s"] = scaling
        runs = sorted(
            (
                end_to_end(args, folder / f"run_{attempt}", series, ckpt)
                for attempt in range(args.repeats)
            ),
            key=lambda run: run[0],
        )
    seconds, cpu_seconds, stages = runs[0]
    median = float(np.median([wall for wall, _, _ in runs]))
    rate = voxels / seconds
    paper = int(np.prod(PAPER_SCAN)) / rate
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"end to end (predict_series, entropy and post-processing on; best of {args.repeats}): "
        f"{seconds:.2f} s, "
        f"{rate / 1e6:.2f} Mvoxel/s; a {' × '.join(map(str, PAPER_SCAN))} scan: "
        f"{paper:.0f} s ({paper / 60:.1f} min); CPU {cpu_seconds:.2f} s "
        f"({cpu_seconds / seconds:.1f} cores busy); peak RSS {peak:.0f} MiB"
        + (
            f"; median of the runs {median:.2f} s, {voxels / median / 1e6:.2f} Mvoxel/s"
            if len(runs) > 1
            else ""
        ),
        flush=True,
    )
    print(
        "  its stages (wall): " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()),
        flush=True,
    )
    results.update(
        end_to_end_s=seconds,
        end_to_end_runs_s=[wall for wall, _, _ in runs],
        end_to_end_stage_s=stages,
        cpu_s=cpu_seconds,
        mvoxel_per_s=rate / 1e6,
        paper_scan_s=paper,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
