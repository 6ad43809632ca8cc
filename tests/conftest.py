"""Fixtures shared by the whole suite: one small synthetic series generated once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console

from batteryct.synth import CycleProtocol, generate_series

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

SMALL_SHAPE = (82, 48, 48)
SMALL_VOXEL_UM = 5.32
"""The default (paper-calibrated) cell at four times the paper's voxel, over a smaller area."""


def small_series_kwargs(**overrides: object) -> dict[str, object]:
    """Settings of a small but complete synthetic series (25 scans, 82 × 48 × 48 voxels)."""
    kwargs: dict[str, object] = {
        "shape": SMALL_SHAPE,
        "voxel_size_um": SMALL_VOXEL_UM,
        "seed": 7,
        "protocol": CycleProtocol(),
        "export_tiffs": False,
        "console": Console(quiet=True),
    }
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(scope="session")
def small_series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a small synthetic series, generated once for the session (read-only for tests)."""
    out = tmp_path_factory.mktemp("synthetic") / "series"
    generate_series(out, **small_series_kwargs())
    return out
