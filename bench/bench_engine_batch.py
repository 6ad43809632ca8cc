"""Where the sliding-window engine loses time against its own network, per window batch size.

For each batch size, in the same process and on the same slices (`--slices` slices of
`--height` × `--width`, by default one paper-size cross-section, 698 × 3896):

- the network alone: the engine's inference copy (batch norms folded, working precision,
  channels-last) on a ready batch of windows, eager and replayed as a CUDA graph (GPU only);
- `engine.segment` (windows cut, run, blended, labels and entropy, uint8 copied back);

each as windows per second and as a ratio to the eager network, the floor that any engine on
this network has to pay. With `--profile`, torch's profiler then lists the operators that take
the most device and host time in one `engine.segment` call at the largest batch size.

    python bench/bench_engine_batch.py --device cuda --batch-sizes 8 32 64 --profile
    python bench/bench_engine_batch.py --device cpu --window 64 --height 96 --width 320
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from batteryct.predict.engine import InferenceSettings, SlidingWindowEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import sync
from bench_predict import resunet7


def best_seconds(fn: Callable[[], object], device: torch.device, rounds: int) -> float:
    """Best wall time of `fn` (device work included) over `rounds` calls, after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def graphed(net: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], None]:
    """`net` captured once as a CUDA graph on `example`'s shape; calling it copies a batch in
    and replays the graph."""
    static_input = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            net(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        net(static_input)

    def replay(batch: torch.Tensor) -> None:
        static_input.copy_(batch)
        graph.replay()

    return replay


def rates_at(
    batch_size: int,
    slices: torch.Tensor,
    window: tuple[int, int],
    device: torch.device,
    rounds: int,
) -> tuple[SlidingWindowEngine, dict[str, float], float]:
    """The engine at `batch_size`, windows/s of its network (eager, CUDA graph) and of
    `engine.segment` on `slices`, and the best seconds of one `engine.segment` call."""
    engine = SlidingWindowEngine(
        resunet7(), window, InferenceSettings(batch_size=batch_size), device
    )
    windows_per_call = slices.shape[0] * len(engine._plan(*slices.shape[2:]).windows)
    batch = torch.rand(batch_size, 1, *window, device=device).to(
        engine.dtype, memory_format=engine.memory_format
    )
    with torch.inference_mode():
        rates = {"network": batch_size / best_seconds(lambda: engine.net(batch), device, 5)}
        if device.type == "cuda":
            try:
                replay = graphed(engine.net, batch)
            except RuntimeError as error:  # a capture that fails says why and is skipped
                print(f"  CUDA graph capture failed: {error}")
            else:
                rates["network, CUDA graph"] = batch_size / best_seconds(
                    lambda: replay(batch), device, 5
                )
    seconds = best_seconds(lambda: engine.segment(slices, entropy=True), device, rounds)
    rates["engine.segment"] = windows_per_call / seconds
    return engine, rates, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--height", type=int, default=698)
    parser.add_argument("--width", type=int, default=3896)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=(8, 32))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="torch profiler's top operators")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, window {args.window}")
    torch.manual_seed(0)
    slices = torch.rand(args.slices, 1, args.height, args.width, device=device)
    window = (args.window, args.window)
    engine = None
    for batch_size in args.batch_sizes:
        engine, rates, seconds = rates_at(batch_size, slices, window, device, args.rounds)
        print(f"batch {batch_size} ({engine.precision}):", flush=True)
        for what, rate in rates.items():
            ratio = rate / rates["network"]
            print(f"  {what:22s} {rate:8.1f} windows/s  {ratio:5.2f}x the eager network")
        print(f"  engine.segment: {slices.numel() / seconds / 1e6:.1f} Mvoxel/s")
    if args.profile and engine is not None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profiler:
            engine.segment(slices, entropy=True)
            sync(device)
        table = profiler.key_averages()
        for key in ("self_cuda_time_total", "self_cpu_time_total"):
            if key.startswith("self_cuda") and device.type != "cuda":
                continue
            print(f"top operators by {key}:")
            print(table.table(sort_by=key, row_limit=15, max_name_column_width=50))


if __name__ == "__main__":
    main()
