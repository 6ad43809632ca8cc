"""Colocalization statistics against Fiji Coloc 2's own test expectations (oracle images)."""

from __future__ import annotations

import numpy as np
import pytest

from batteryct.analysis.coloc import (
    colocalize,
    costes_thresholds,
    li_icq,
    manders,
    pearson,
    spearman,
)
from tests.entry_point import ROOT

ORACLE = ROOT.parent / "shared" / "oracles" / "coloc2"
needs_oracle = pytest.mark.skipif(not ORACLE.is_dir(), reason="Coloc 2 oracle folder absent")


def image(name: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(ORACLE / name)


@needs_oracle
def test_colocsample_pearson_icq_spearman():
    g, r = image("colocsample1b-green.tif"), image("colocsample1b-red.tif")
    assert pearson(g, r) == pytest.approx(0.75, abs=0.01)
    assert 0.34 <= li_icq(g, r) <= 0.35
    assert 0.546 <= spearman(g, r) <= 0.547


@needs_oracle
def test_colocsample_costes_bisection_and_thresholded_manders_in_mask():
    g, r = image("colocsample1b-green.tif"), image("colocsample1b-red.tif")
    mask = image("colocsample1b-mask.tif") > 0
    assert costes_thresholds(g, r, mask) == (70, 53)
    tm1, tm2 = manders(g, r, mask, threshold_x=70, threshold_y=53)
    assert tm1 == pytest.approx(0.705665, abs=1e-6)
    assert tm2 == pytest.approx(0.724752, abs=1e-6)
    stats = colocalize(g, r, mask)
    assert (stats.costes_threshold_1, stats.costes_threshold_2) == (70, 53)
    assert stats.manders_tm1 == pytest.approx(0.705665, abs=1e-6)


@needs_oracle
def test_uncorrelated_stacks_and_negative_spearman():
    g, r = image("greenZstack.tif"), image("redZstack.tif")
    assert abs(pearson(g, r)) <= 0.05
    assert abs(li_icq(g, r)) < 0.01
    rho = spearman(image("syntheticNegCh1.tif"), image("syntheticNegCh2.tif"))
    assert -0.178 <= rho <= -0.173


MANDERS = {
    "A": (1.00, 1, 1),
    "B": (0.72, 0.75, 0.75),
    "C": (0.44, 0.5, 0.5),
    "D": (0.16, 0.25, 0.25),
    "E": (-0.12, 0, 0),
    "F": (0.22, 0.25, 1 / 3),
    "G": (0.30, 0.25, 0.5),
    "H": (0.48, 0.25, 1),
    "I": (0.23, 0.083, 0.75),
}


@needs_oracle
@pytest.mark.parametrize("name", sorted(MANDERS))
def test_manders_series(name):
    r_expected, m1_expected, m2_expected = MANDERS[name]
    a, b = image("mandersA.tiff"), image(f"manders{name}.tiff")
    assert pearson(a, b) == pytest.approx(r_expected, abs=0.01)
    m1, m2 = manders(a, b)
    assert m1 == pytest.approx(m1_expected, abs=1e-3)
    assert m2 == pytest.approx(m2_expected, abs=1e-3)


def test_constant_map_gives_nan_not_an_error():
    x = np.zeros((4, 4))
    y = np.arange(16.0).reshape(4, 4)
    stats = colocalize(x, y)
    assert np.isnan(stats.pearson_r) and np.isnan(stats.manders_m1)
