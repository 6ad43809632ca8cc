"""The root entry points, run as a user runs them: a subprocess with Hydra overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from batteryct.series import load_series
from tests.entry_point import ROOT


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_synth_writes_a_complete_series_fiji_and_numpy_can_open(tmp_path: Path) -> None:
    out = tmp_path / "x"
    overrides = [
        "shape=[82,48,48]",
        "voxel_size_um=5.32",
        "seed=3",
        f"out={out}",
        "protocol.n_charge=2",
        "protocol.n_discharge=1",
        "hand_labels.scans=[0,2]",
    ]
    first = _run("synth.py", *overrides, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "True class volumes per scan" in first.stdout
    series = load_series(out / "series.yaml")
    assert [s.id for s in series.scans] == ["scan_00", "scan_01", "scan_02", "scan_03"]
    assert (out / "preview.png").stat().st_size > 10_000
    for scan in series.scans:
        image = series.open_image(scan).read()
        with tifffile.TiffFile(out / "tiff" / f"{scan.id}_image.tif") as tif:
            assert tif.is_imagej
            assert tif.imagej_metadata["spacing"] == 5.32
            np.testing.assert_array_equal(tif.asarray(), image)
    # Hydra's records go to logs/ under the working directory, not into the series folder.
    assert (tmp_path / "logs" / "synth").is_dir()

    again = _run("synth.py", *overrides, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout

    reseeded = [o for o in overrides if not o.startswith("seed=")]
    other = _run("synth.py", *reseeded, "seed=4", cwd=tmp_path)
    assert other.returncode == 2
    assert "overwrite=true" in other.stderr and "Traceback" not in other.stderr


def test_synth_out_pointing_at_a_file_exits_2_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "series.txt"
    blocker.write_text("")
    proc = _run("synth.py", f"out={blocker}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batteryct: error: out=")
    assert "is a file, not a folder" in lines[0]
