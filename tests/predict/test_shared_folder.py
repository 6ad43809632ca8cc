"""One output folder, many runs: claims without work, jobs side by side, stopped publications."""

from __future__ import annotations

import contextlib
import errno
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from batteryct.errors import ConfigError
from batteryct.locks import FileLock
from batteryct.predict import (
    InferenceSettings,
    Outputs,
    PostProcessSettings,
    PredictSettings,
    predict_series,
)
from batteryct.predict import overlap as overlap_module
from batteryct.predict import run as run_module
from batteryct.series import load_series
from tests.predict.conftest import predict_trainer
from tests.predict.helpers import common_overrides, predict, predict_py, read_outputs


def test_a_run_that_failed_before_any_work_does_not_block_a_rerun_with_other_settings(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    series, out = small_series_dir / "series.yaml", tmp_path / "out"

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(overlap_module, "_write", full)  # the writes of a single-axis run
        with pytest.raises(ConfigError, match="is full"):
            predict(small_checkpoint, series, out, scans=("scan_00",), axes=("rows",), slab=16)
    assert (out / "prediction.json").exists() and not list(out.glob(".work/*/done/*.done"))

    with FileLock(out / ".locks" / "running.lock") as running:  # a job still running there
        running.acquire(shared=True)
        with pytest.raises(ConfigError, match=r"another predict\.py job is segmenting into"):
            predict(small_checkpoint, series, out, scans=("scan_00",), axes=("rows",), slab=48)

    console = Console(record=True, width=200)
    predict_series(
        small_checkpoint,
        series,
        out,
        InferenceSettings(precision="fp32"),
        PredictSettings(scans=("scan_00",), axes=("rows",), slab=48, outputs=Outputs()),
        PostProcessSettings(),
        predict_trainer(),
        console=console,
    )
    assert "by a run that segmented nothing: claiming it afresh" in console.export_text()
    assert load_series(out / "series.yaml").metadata["prediction"]["settings"]["slab"] == 48


def test_a_publication_stopped_midway_is_finished_by_the_next_run(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    series, out = small_series_dir / "series.yaml", tmp_path / "out"
    settings = {"scans": ("scan_00",), "axes": ("rows",), "slab": 16, "export_tiffs": True}

    def stopped(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stopped")

    with monkeypatch.context() as patch:  # killed after moving the outputs, before the summary
        patch.setattr(run_module, "export_tiff", stopped)
        with pytest.raises(RuntimeError, match="stopped"):
            predict(small_checkpoint, series, out, **settings)
    published = read_outputs(out, "scan_00")
    assert not (out / "summary" / "scan_00.json").exists()
    predict(small_checkpoint, series, out, **settings)
    again = read_outputs(out, "scan_00")
    for name in published:
        assert np.array_equal(again[name], published[name]), name
    assert (out / "tiff" / "scan_00_labels.tif").exists()
    assert not (out / ".work" / "scan_00").exists()


def test_two_predict_py_jobs_share_the_slabs_of_one_scan(
    small_checkpoint: Path, small_series_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shared"
    done = out / ".work" / "scan_06" / "done"

    def slabs_done_by(job: subprocess.Popen[str]) -> int:
        """Slabs whose completion record names the job (its id ends with its process id)."""
        count = 0
        for path in done.glob("*.done"):
            with contextlib.suppress(FileNotFoundError):
                count += path.read_text().endswith(f"-{job.pid}")
        return count

    def wait_until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 240
        while not condition() and time.monotonic() < deadline:
            assert all(job.poll() is None for job in jobs), "a job ended early"
            time.sleep(0.02)  # polling the folder, not waiting for a job to finish

    jobs = []
    for name in ("first", "second"):
        overrides = common_overrides(small_checkpoint, small_series_dir, out)
        overrides[-1] = f"hydra.run.dir={tmp_path / ('hydra-' + name)}"
        jobs.append(predict_py(*overrides, cwd=tmp_path))
    wait_until(lambda: any(slabs_done_by(job) for job in jobs))
    leader = next(job for job in jobs if slabs_done_by(job))
    other = jobs[1 - jobs.index(leader)]
    leader.send_signal(signal.SIGSTOP)  # paused, most likely in the middle of a slab
    wait_until(lambda: slabs_done_by(other) >= 3)
    leader.send_signal(signal.SIGCONT)
    for job in jobs:
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr

    predict(
        small_checkpoint,
        small_series_dir / "series.yaml",
        tmp_path / "alone",
        scans=("scan_06",),
        axes=("rows",),
        slab=2,
    )
    ours, alone = read_outputs(out, "scan_06"), read_outputs(tmp_path / "alone", "scan_06")
    for name in ours:
        assert ours[name].tobytes() == alone[name].tobytes(), name
    manifest = load_series(out / "series.yaml").metadata["prediction"]
    job_ids = [record["job"] for record in manifest["jobs"]]
    assert sorted(int(i.rsplit("-", 1)[1]) for i in job_ids) == sorted(j.pid for j in jobs)
    assert all(record["scans"] == ["scan_06"] for record in manifest["jobs"])
    by_job = manifest["scans"]["scan_06"]["slabs_by_job"]  # both did slabs, none twice
    assert sorted(by_job) == sorted(job_ids) and sum(by_job.values()) == 24
    assert json.loads((out / "summary" / "scan_06.json").read_text())["slabs_by_job"] == by_job
    assert not list((out / ".work").iterdir())  # no stale chunks or records
