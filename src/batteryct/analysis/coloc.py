"""Colocalization of two 2D maps, as Fiji's Coloc 2 computes it.

Statistics over all pixels (or those inside a mask), zero-zero pixels included:
Pearson's r, Manders' M1/M2 (with and without thresholds), Li's intensity correlation quotient,
Spearman's rank correlation and Costes' automatic thresholds (orthogonal regression, lowered by
bisection until Pearson's r of the pixels below the thresholds drops to zero).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def _pair(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"colocalization needs two maps of one shape; got {x.shape}, {y.shape}")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        return x[mask], y[mask]
    return x.ravel(), y.ravel()


def pearson(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson's r; NaN when either map is constant."""
    x, y = _pair(x, y, mask)
    return _pearson(x, y)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    n = x.size
    if n == 0:
        return math.nan
    sx, sy = x.sum(), y.sum()
    num = float(np.dot(x, y) - sx * sy / n)
    den = float((np.dot(x, x) - sx * sx / n) * (np.dot(y, y) - sy * sy / n))
    return num / math.sqrt(den) if den > 0 else math.nan


def manders(
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray | None = None,
    threshold_x: float | None = None,
    threshold_y: float | None = None,
) -> tuple[float, float]:
    """Manders' M1 (share of x where y is present) and M2 (share of y where x is present).

    With thresholds (Coloc 2's tM1/tM2), "present" means above zero and at least the threshold;
    the denominators stay the sums over all pixels.
    """
    x, y = _pair(x, y, mask)
    present_y = y > 0 if threshold_y is None else (y > 0) & (y >= threshold_y)
    present_x = x > 0 if threshold_x is None else (x > 0) & (x >= threshold_x)
    sx, sy = x.sum(), y.sum()
    m1 = float(x[present_y].sum() / sx) if sx else math.nan
    m2 = float(y[present_x].sum() / sy) if sy else math.nan
    return m1, m2


def li_icq(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Li's intensity correlation quotient, in [-0.5, 0.5]."""
    x, y = _pair(x, y, mask)
    if x.size == 0:
        return math.nan
    product = (x - x.mean()) * (y - y.mean())
    return float(np.count_nonzero(product >= 0) / x.size - 0.5)


def spearman(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    x, y = _pair(x, y, mask)
    return _pearson(stats.rankdata(x), stats.rankdata(y))


def costes_thresholds(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None, max_iterations: int = 100
) -> tuple[float, float]:
    """Costes' automatic thresholds (T1 for x, T2 for y), with Coloc 2's bisection stepper.

    An orthogonal (total least squares) regression y = m·x + b gives the line; a working
    threshold walks along the channel the line leans towards, from the middle of its range,
    halving its step, until Pearson's r of the pixels below either threshold reaches zero.
    """
    x, y = _pair(x, y, mask)
    n = x.size
    if n < 2:
        return math.nan, math.nan
    mx, my = x.mean(), y.mean()
    var_x = float(((x - mx) ** 2).sum() / (n - 1))
    var_y = float(((y - my) ** 2).sum() / (n - 1))
    cov = float(((x - mx) * (y - my)).sum() / (n - 1))
    if cov == 0:
        return math.nan, math.nan
    m = (var_y - var_x + math.sqrt((var_y - var_x) ** 2 + 4 * cov * cov)) / (2 * cov)
    b = my - m * mx
    if -1 < m < 1:
        lo, hi = float(x.min()), float(x.max())

        def thresholds(t: float) -> tuple[float, float]:
            return t, t * m + b
    else:
        lo, hi = float(y.min()), float(y.max())

        def thresholds(t: float) -> tuple[float, float]:
            return (t - b) / m, t

    current = abs(hi + lo) * 0.5
    previous = hi
    step = abs(current - previous)
    t1 = t2 = math.nan
    for _ in range(max_iterations):
        a, c = thresholds(current)
        t1, t2 = _round_half_up(a), _round_half_up(c)
        below = (x < t1) | (y < t2)
        r = _pearson(x[below], y[below])
        previous = current
        if math.isnan(r) or r < 0:
            current = current + step * 0.5
        elif r > 0:
            current = current - step * 0.5
        step = abs(current - previous)
        if step < 1.0:
            break
    return t1, t2


def _round_half_up(value: float) -> float:
    return float(math.floor(value + 0.5))


@dataclass(frozen=True)
class Colocalization:
    """Coloc 2's statistics of one pair of maps (all dimensionless; thresholds in map units)."""

    pearson_r: float
    manders_m1: float
    manders_m2: float
    costes_threshold_1: float
    costes_threshold_2: float
    manders_tm1: float
    manders_tm2: float
    li_icq: float
    spearman_rho: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def colocalize(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> Colocalization:
    """All statistics of one pair of maps."""
    t1, t2 = costes_thresholds(x, y, mask)
    m1, m2 = manders(x, y, mask)
    if math.isnan(t1) or math.isnan(t2):
        tm1 = tm2 = math.nan
    else:
        tm1, tm2 = manders(x, y, mask, threshold_x=t1, threshold_y=t2)
    return Colocalization(
        pearson_r=pearson(x, y, mask),
        manders_m1=m1,
        manders_m2=m2,
        costes_threshold_1=t1,
        costes_threshold_2=t2,
        manders_tm1=tm1,
        manders_tm2=tm2,
        li_icq=li_icq(x, y, mask),
        spearman_rho=spearman(x, y, mask),
    )
