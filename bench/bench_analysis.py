"""Benchmark of the analysis pass: throughput against the I/O + bincount floor, and peak memory.

    python bench/bench_analysis.py [--scale paper|default|small] [--scans 25] [--workers 2]

Writes a synthetic label series (slabs with rough interfaces, pits, dendrites) as zarr, then, in
the same run, measures (1) the floor: a plain numpy pass that reads every chunk and bincounts it,
(2) the analysis pass (`scan_stats`: class counts, depth profiles, sum projections of six classes,
electrode edges), and prints voxels/s and their ratio. Peak RSS of the analysis pass is measured in
a fresh subprocess for the chosen size and for one 4× smaller, to show it stays bounded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SCALES = {
    "small": (64, 256, 256),
    "default": (128, 512, 512),
    "paper": (256, 1024, 1024),
}


def write_labels(folder: Path, n_scans: int, shape: tuple[int, int, int]) -> list[Path]:
    """Procedural 7-class label volumes, written slab by slab (never a whole volume in memory)."""
    from batteryct.io import create_zarr

    rng = np.random.default_rng(0)
    depth, rows, cols = shape
    rough = rng.integers(-2, 3, size=(rows, cols))
    paths = []
    for i in range(n_scans):
        path = folder / f"scan_{i:02d}.zarr"
        array = create_zarr(path, shape, np.uint8)
        grow = min(i, 12) * depth // 200
        s_edge = depth // 4 - min(i, 12) * depth // 400 + rough
        p_edge = 3 * depth // 4 - grow + rough
        pits = rng.random((rows, cols)) < 0.05
        dendrites = rng.random((rows, cols)) < 0.02
        for d0 in range(0, depth, array.chunks[0]):
            d = np.arange(d0, min(d0 + array.chunks[0], depth))[:, None, None]
            slab = np.zeros((d.shape[0], rows, cols), np.uint8)
            slab[d < s_edge] = 6
            slab[(d >= s_edge - 3) & (d < s_edge) & pits] = 2
            slab[(d >= s_edge) & (d < s_edge + 2) & (i > 12)] = 4
            slab[(d >= p_edge - 2) & (d < p_edge) & (i > 0)] = 3
            slab[(d >= p_edge - 12) & (d < p_edge - 2) & dendrites & (i > 0)] = 1
            slab[d >= p_edge] = 5
            array[d0 : d0 + slab.shape[0]] = slab
        paths.append(path)
    return paths


def floor_pass(paths: list[Path], workers: int) -> float:
    """Read every chunk and bincount it: the least any analysis must do."""
    from batteryct.io import open_volume

    total = np.zeros(256, np.int64)
    for path in paths:
        vol = open_volume(path)
        cd, cr, cc = vol.chunks
        keys = [
            (slice(d, d + cd), slice(r, r + cr), slice(c, c + cc))
            for r in range(0, vol.shape[1], cr)
            for c in range(0, vol.shape[2], cc)
            for d in range(0, vol.shape[0], cd)
        ]

        def count(key, vol=vol):
            return np.bincount(vol[key].ravel(), minlength=256)

        with ThreadPoolExecutor(workers) as pool:
            for counts in pool.map(count, keys):
                total += counts
    return float(total.sum())


def analysis_pass(paths: list[Path], workers: int) -> float:
    from batteryct.analysis.scanpass import scan_stats
    from batteryct.io import open_volume

    n = 0
    for path in paths:
        stats = scan_stats(
            open_volume(path), 7, [1, 2, 3, 4, 5, 6], [5, 6], range(7), workers=workers
        )
        n += int(stats.counts.sum())
    return float(n)


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - start


def rss_child(folder: Path, n_scans: int, workers: int) -> float:
    """Peak RSS (MiB) of a fresh process running the analysis pass over the series in folder."""
    code = (
        "import resource,sys;from pathlib import Path;sys.path.insert(0,'bench');"
        "import bench_analysis as b;"
        f"b.analysis_pass(sorted(Path('{folder}').glob('scan_*.zarr'))[:{n_scans}], {workers});"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--scans", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="timed passes, best kept")
    args = parser.parse_args()
    shape = SCALES[args.scale]
    small_shape = (shape[0], shape[1] // 2, shape[2] // 2)
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        big.mkdir()
        small.mkdir()
        t0 = time.perf_counter()
        paths = write_labels(big, args.scans, shape)
        write_labels(small, args.scans, small_shape)
        print(f"wrote {args.scans} × {shape} labels in {time.perf_counter() - t0:.0f} s")
        floor_pass(paths[:1], args.workers)  # warm the page cache and imports
        analysis_pass(paths[:1], args.workers)
        best_floor = best_analysis = float("inf")
        for _ in range(args.repeat):
            n, t = timed(floor_pass, paths, args.workers)
            best_floor = min(best_floor, t)
            n2, t2 = timed(analysis_pass, paths, args.workers)
            best_analysis = min(best_analysis, t2)
            assert n == n2
        vox = n
        print(f"floor (read + bincount): {vox / best_floor / 1e6:8.1f} Mvox/s ({best_floor:.1f} s)")
        print(
            f"analysis pass:           {vox / best_analysis / 1e6:8.1f} Mvox/s "
            f"({best_analysis:.1f} s)"
        )
        print(f"ratio analysis/floor time: {best_analysis / best_floor:.2f}×")
        rss_small = rss_child(small, args.scans, args.workers)
        rss_big = rss_child(big, args.scans, args.workers)
        print(
            f"peak RSS: {rss_small:.0f} MiB for {args.scans} × {small_shape}, "
            f"{rss_big:.0f} MiB for {args.scans} × {shape} (4× the voxels)"
        )


if __name__ == "__main__":
    main()
