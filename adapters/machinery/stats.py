"""Statistics for tables: mean ± std over seeds, paired differences with their p-value, Pearson r."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof = 1) of one cell's values over seeds."""

    mean: float
    std: float
    n: int

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "—"
        if self.n == 1:
            return f"{scale * self.mean:.{digits}f}"
        return f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f}"


def summarize(values: Sequence[float | None]) -> Summary:
    """Mean ± std (ddof = 1; 0 for one value) of the finite values; NaN mean when there are none."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return Summary(float("nan"), float("nan"), 0)
    return Summary(float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, int(a.size))


@dataclass(frozen=True)
class Paired:
    """The paired difference ``b − a`` over the seeds both have: mean, std, n and the two-sided
    p-value of the paired t-test (NaN with fewer than 2 pairs or no spread)."""

    mean: float
    std: float
    n: int
    p: float

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        if self.n == 0:
            return "—"
        p = "p n/a" if math.isnan(self.p) else f"p={self.p:.2g}"
        return f"{scale * self.mean:+.{digits}f} ({p})"


def paired_difference(a: dict[int, float | None], b: dict[int, float | None]) -> Paired:
    """``b − a`` paired by seed (the keys); scipy's ``ttest_rel`` gives the p-value."""
    seeds = sorted(s for s in a.keys() & b.keys()
                   if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s]))
    if not seeds:
        return Paired(float("nan"), float("nan"), 0, float("nan"))
    x = np.asarray([a[s] for s in seeds], dtype=float)
    y = np.asarray([b[s] for s in seeds], dtype=float)
    d = y - x
    p = float("nan")
    if len(seeds) >= 2 and np.ptp(d) > 0:
        from scipy.stats import ttest_rel

        p = float(ttest_rel(y, x).pvalue)
    elif len(seeds) >= 2 and d[0] != 0:
        p = 0.0  # every seed moved by the same non-zero amount: no spread, the difference is exact
    return Paired(float(d.mean()), float(d.std(ddof=1)) if len(seeds) > 1 else 0.0, len(seeds), p)


def pearson(x: Sequence[float | None], y: Sequence[float | None]) -> float | None:
    """Pearson r over the pairs where both are finite; None with fewer than 3 pairs or a constant side."""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return None
    u, v = map(np.asarray, zip(*pairs))
    if np.ptp(u) == 0 or np.ptp(v) == 0:
        return None
    from scipy.stats import pearsonr

    return float(pearsonr(u, v)[0])


def ratio_correlation(records: list[dict]) -> tuple[float | None, int]:
    """(Pearson r of Eq. 11's ratio and OGM-GE's decoupled ratio over a run's steps, pairs used)."""
    steps = [r for r in records if r.get("event") == "step"]
    x = [r.get("rho_df") for r in steps]
    y = [r.get("rho_decoupled") for r in steps]
    n = sum(1 for a, b in zip(x, y) if a is not None and b is not None)
    return pearson(x, y), n
