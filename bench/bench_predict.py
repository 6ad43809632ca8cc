"""Prediction benchmark: batteryct's engine against MONAI's default sliding-window usage.

1. Throughput: the paper's `resunet7` (random weights, eval mode), the same slices (already on
   the device), window and 25 % overlap, measured in the same process, each giving what
   prediction keeps, uint8 labels on the CPU: MONAI's `sliding_window_inference` as usually
   called (fp32, one window per forward pass, then argmax) against batteryct's engine
   (`segment`) in fp32 (batched, channels-last) and in its default precision (bf16 where the
   device supports it).
2. Memory: peak RSS of a whole out-of-core `predict_series` run on a volume and on one 4× larger
   (each in a fresh process), which must stay flat.

    python bench/bench_predict.py [--window 256] [--slices 24] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch.utils.flop_counter import FlopCounterMode

RESUNET7 = {
    "_target_": "monai.networks.nets.UNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 5,
    "channels": [32, 64, 128, 256, 512, 512, 512],
    "strides": [2, 2, 2, 2, 2, 2],
    "kernel_size": 3,
    "up_kernel_size": 3,
    "num_res_units": 2,
    "act": "PRELU",
    "norm": "BATCH",
    "dropout": 0.2,
}
PAPER_SCAN = (3896, 1707, 698)
"""Voxels of one of the paper's scans."""
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
WINDOWS_PER_SLICE = 3
"""Windows of the benchmark's window × 2·window slices at 25 % overlap (offsets 0, 0.75, 1)."""
CLASSES = ["background", "dendrite", "pit", "deposited_li", "electrode"]


def resunet7() -> torch.nn.Module:
    torch.manual_seed(0)
    args = {k: v for k, v in RESUNET7.items() if k != "_target_"}
    return UNet(**args).eval()


def timed_interleaved(runs: list[tuple[str, Callable[[], object]]], rounds: int) -> dict:
    """Best wall time of each run over `rounds` rounds, after one warm-up call each. Every round
    times each run once, in turn, so a slow spell of a shared machine hits all runs alike."""
    for _, fn in runs:
        fn()
    best = {name: float("inf") for name, _ in runs}
    for _ in range(rounds):
        for name, fn in runs:
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def gemm_gflops(dtype: torch.dtype, device: str, size: int = 4096, rounds: int = 3) -> float:
    """Best GFLOP/s of a size × size matrix product: the device's practical peak for `dtype`."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def product() -> None:
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    seconds = timed_interleaved([("gemm", product)], rounds)["gemm"]
    return 2 * size**3 / seconds / 1e9


def network_gflop(window: int) -> float:
    """GFLOP of one forward pass of `resunet7` on one window (torch's FLOP counter)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        resunet7()(torch.zeros(1, 1, window, window))
    return counter.get_total_flops() / 1e9


def ceiling(window: int, device: str, monai_voxels_per_s: float, gemm_size: int) -> None:
    """How fast any engine could be here: the network's FLOPs at the device's bf16 GEMM peak
    (gemm_size × gemm_size products), as a ratio to MONAI's default usage (measured in the same
    run)."""
    flop = network_gflop(window)
    peaks = {name: gemm_gflops(dtype, device, gemm_size) for name, dtype in PEAK_DTYPES.items()}
    windows_per_s = monai_voxels_per_s / (2 * window * window) * WINDOWS_PER_SLICE
    monai_rate = windows_per_s * flop
    print(f"resunet7: {flop:.2f} GFLOP per {window} × {window} window")
    print("GEMM peak here: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    print(
        f"MONAI default runs the network at {monai_rate:.0f} GFLOP/s "
        f"({monai_rate / peaks['fp32'] * 100:.0f} % of the fp32 GEMM peak)"
    )
    print(
        "ceiling of a bf16 engine at 100 % of the bf16 GEMM peak: "
        f"{peaks['bf16'] / monai_rate:.2f}x MONAI default"
    )


def throughput(
    window: int, n_slices: int, device: str, repeats: int, compile_too: bool, gemm_size: int
) -> dict[str, float]:
    from batteryct.predict.engine import InferenceSettings, SlidingWindowEngine, bf16_supported

    slices = torch.rand(n_slices, 1, window, 2 * window, device=device)
    voxels = slices.numel()
    net = resunet7().to(device)

    def monai_default() -> None:
        with torch.no_grad():
            logits = sliding_window_inference(slices, (window, window), 1, net, overlap=0.25)
            logits.argmax(1).to(torch.uint8).cpu()

    fp32 = SlidingWindowEngine(
        resunet7(), (window, window), InferenceSettings(precision="fp32"), device
    )
    auto = SlidingWindowEngine(resunet7(), (window, window), InferenceSettings(), device)
    compiled = SlidingWindowEngine(
        resunet7(), (window, window), InferenceSettings(compile=True), device
    )
    results = {"voxels": voxels, "bf16_native": bf16_supported(torch.device(device))}
    runs = [
        ("monai_default_fp32", monai_default),
        ("batteryct_fp32", lambda: fp32.segment(slices)),
        (f"batteryct_{auto.precision}", lambda: auto.segment(slices)),
    ]
    if compile_too:
        runs.append((f"batteryct_{auto.precision}_compiled", lambda: compiled.segment(slices)))
    for name, seconds in timed_interleaved(runs, repeats).items():
        results[name] = voxels / seconds
        print(f"{name:24s} {voxels / seconds / 1e6:8.3f} Mvoxel/s  ({seconds:.2f} s)", flush=True)
    base = results["monai_default_fp32"]
    ceiling(window, device, base, gemm_size)
    for name in list(results):
        if name.startswith("batteryct_"):
            print(f"ratio {name} / monai_default_fp32: {results[name] / base:.2f}x")
    fastest = max(v for k, v in results.items() if k.startswith("batteryct_"))
    minutes = np.prod(PAPER_SCAN) / fastest / 60
    print(
        f"at {fastest / 1e6:.2f} Mvoxel/s the engine alone needs {minutes:.1f} min for a "
        f"{' × '.join(map(str, PAPER_SCAN))} scan (window {window}; target on a GPU: < 2 min)"
    )
    return results


PEAK_CHILD = """
import json, resource, sys
import lightning.pytorch as pl
from rich.console import Console
from batteryct.predict import (
    InferenceSettings, Outputs, PostProcessSettings, PredictSettings, predict_series,
)
ckpt, series, out = sys.argv[1:4]
trainer = pl.Trainer(
    accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
)
settings = PredictSettings(outputs=Outputs(entropy=True))
predict_series(ckpt, series, out, InferenceSettings(), settings, PostProcessSettings(), trainer,
               console=Console(quiet=True))
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_memory(window: int, depth: int, rows: int, cols: int, folder: Path) -> dict[str, float]:
    from batteryct.io import write_zarr
    from batteryct.models.module import CHECKPOINT_KEY
    from batteryct.series import Cell, Scan, Series, save_series

    net = resunet7()
    ckpt = folder / "resunet7.ckpt"
    info = {
        "config": {"model": {"net": RESUNET7}},
        "class_names": CLASSES,
        "orientation": "cross_section",
        "patch_size": [window, window],
    }
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, CHECKPOINT_KEY: info}, ckpt)
    results = {}
    rng = np.random.default_rng(0)
    for factor in (1, 4):
        shape = (depth, rows * factor, cols)
        image = rng.integers(0, 255, shape, dtype=np.uint8)
        image[: depth // 4] = 200  # an "electrode" layer pair so post-processing has work
        image[-depth // 4 :] = 200
        volume = write_zarr(folder / f"image_{factor}.zarr", image)
        del image
        series = Series(
            Cell(voxel_size_um=1.33, plating_side="end"),
            {0: "background"},
            [Scan("scan", volume, 0.0, "pristine")],
        )
        manifest = save_series(series, folder / f"series_{factor}.yaml")
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                PEAK_CHILD,
                str(ckpt),
                str(manifest),
                str(folder / f"out_{factor}"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.perf_counter() - started
        peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]
        voxels = int(np.prod(shape))
        results[f"{factor}x"] = {"shape": list(shape), "peak_rss_mib": peak, "seconds": seconds}
        rate = voxels / seconds / 1e6
        print(f"{factor}x {shape}: peak RSS {peak:.0f} MiB, {seconds:.1f} s, {rate:.2f} Mvoxel/s")
    growth = results["4x"]["peak_rss_mib"] / results["1x"]["peak_rss_mib"] - 1
    print(f"peak RSS growth from 1x to 4x volume: {growth * 100:+.1f} %")
    results["growth"] = growth
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=4, help="timing rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--memory-shape", type=int, nargs=3, default=(128, 64, 256), metavar=("D", "R", "C")
    )
    parser.add_argument("--memory-window", type=int, default=128)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    parser.add_argument(
        "--gemm-size",
        type=int,
        default=4096,
        help="matrix edge of the peak GEMM (small on a CPU without bf16: emulated, it is slow)",
    )
    args = parser.parse_args()
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    threads = torch.get_num_threads()
    print(f"device: {args.device} ({device}), torch {torch.__version__}, threads {threads}")
    throughput(
        args.window, args.slices, args.device, args.repeats, not args.no_compile, args.gemm_size
    )
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            peak_memory(args.memory_window, *args.memory_shape, Path(tmp))


if __name__ == "__main__":
    main()
