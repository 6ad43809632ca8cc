"""Where every thread is during `bench_pipeline.py`'s end-to-end runs: a sampling profiler.

Every `--interval` seconds it notes, for each thread, the innermost Python frame and the
innermost batteryct frame around it, and the stage the main thread is in (segmentation or
post-processing). It prints, per run and stage, how many threads of each kind were busy on
average and where; threads waiting in a pool, a queue or a lock count as idle. A thread that
waits for the GIL shows where it waits, so many busy threads at a low Mvoxel/s point to
contention rather than work (BENCHMARKS.md, "Second GPU session"). `--workers` sets
post-processing's thread cap run by run, to compare them on one synthetic scan.

    python bench/profile_threads.py -- --skip-split --repeats 1
    python bench/profile_threads.py --workers 8 16 -- --device cuda --shape 698 1707 3896 \\
        --axis rows --window 512 --net resunet7-segmenting --skip-split --repeats 2
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline

from batteryct.predict import postprocess

IDLE = ("_worker@thread", "select@selectors", "wait@threading", "get@queue")
"""Innermost frames of a thread with nothing to do (a pool's or an event loop's wait)."""
STAGES = (("postprocess_scan", "post-processing"), ("_segment", "segmentation"))
"""(function on the main thread's stack, stage it marks), the innermost first."""
SOURCE = f"{Path(postprocess.__file__).parents[1]}"


def stage_of(frame: FrameType | None) -> str:
    """The stage whose function is on the stack of `frame`, else "other"."""
    names = set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return next((stage for function, stage in STAGES if function in names), "other")


def place_of(frame: FrameType) -> str:
    """'function@module:line' of the innermost frame, with the innermost batteryct frame."""
    code = frame.f_code
    place = f"{code.co_name}@{Path(code.co_filename).stem}:{frame.f_lineno}"
    outer: FrameType | None = frame
    while outer is not None and not outer.f_code.co_filename.startswith(SOURCE):
        outer = outer.f_back
    return place if outer is None else f"{place} <- {outer.f_code.co_name}:{outer.f_lineno}"


class Sampler:
    """Samples every thread's stack in a thread of its own until stopped."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.run = "setup"
        self.ticks: Counter[tuple[str, str]] = Counter()  # (run, stage): samples
        self.places: Counter[tuple[str, str, str, str]] = Counter()  # (+ kind, place)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, name="sampler", daemon=True)

    def _sample(self) -> None:
        main, me = threading.main_thread().ident, threading.get_ident()
        while not self.stop.is_set():
            frames = sys._current_frames()
            names = {t.ident: t.name for t in threading.enumerate()}
            key = (self.run, stage_of(frames.get(main or 0)))
            self.ticks[key] += 1
            for ident, frame in frames.items():
                if ident != me:
                    kind = re.sub(r"[_-]\d+$", "", names.get(ident, "?"))
                    self.places[(*key, kind, place_of(frame))] += 1
            time.sleep(self.interval_s)

    def report(self, walls: dict[str, float]) -> None:
        """Per run and stage: its share of the run's wall time, then per kind of thread the
        threads busy on average and the places that took 2 % of a thread or more."""
        for (run, stage), ticks in sorted(self.ticks.items()):
            if run not in walls or stage == "other":
                continue
            run_ticks = sum(n for (r, _), n in self.ticks.items() if r == run)
            print(f"\n{run}, {stage}: about {walls[run] * ticks / run_ticks:.1f} s")
            kinds: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for (r, s, kind, place), n in self.places.items():
                if (r, s) == (run, stage):
                    kinds[kind].append((n, place))
            for kind, seen in sorted(kinds.items()):
                busy = sorted(((n, p) for n, p in seen if not p.startswith(IDLE)), reverse=True)
                idle = sum(n for n, p in seen if p.startswith(IDLE))
                print(
                    f"  {kind}: {sum(n for n, _ in busy) / ticks:.2f} threads busy, "
                    f"{idle / ticks:.2f} idle"
                )
                for n, place in busy[:10]:
                    if n / ticks >= 0.02:
                        print(f"    {n / ticks:5.2f}  {place}")


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between samples")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[], help="post-processing's threads, per run"
    )
    args = parser.parse_args(argv[:split])
    sampler = Sampler(args.interval)
    timed = bench_pipeline.end_to_end
    walls: dict[str, float] = {}

    def end_to_end(*run_args: Any) -> Any:
        if len(walls) < len(args.workers):
            postprocess.MAX_WORKERS = args.workers[len(walls)]
        sampler.run = f"run {len(walls)} ({postprocess.workers()} post-processing threads)"
        start = time.perf_counter()
        result = timed(*run_args)
        walls[sampler.run] = time.perf_counter() - start
        sampler.run = "between"
        return result

    bench_pipeline.end_to_end = end_to_end
    sys.argv = [bench_pipeline.__file__, *argv[split + 1 :]]
    sampler.thread.start()
    try:
        bench_pipeline.main()
    finally:
        sampler.stop.set()
        sampler.thread.join()
    sampler.report(walls)


if __name__ == "__main__":
    main()
