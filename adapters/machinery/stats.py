"""Statistics for tables and the study (SPEC §9): mean ± std over seeds; paired differences with
their 95 % t interval, paired t-test, Holm adjustment within a family, TOST equivalence and verdict;
Pearson r."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
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


#: the equivalence margin of SPEC §9's TOST, in accuracy units (±1.0 point)
EQUIVALENCE_MARGIN = 0.01
#: the level of every test and interval of SPEC §9
LEVEL = 0.05
VERDICTS = ("gain", "loss", "equivalent", "inconclusive")
CONSTANT = "constant difference over seeds: no t statistic, no p-value"


@dataclass(frozen=True)
class Paired:
    """The paired difference ``b − a`` over the seeds both have (SPEC §9's comparison).

    ``mean``, ``std`` (ddof 1) and ``n``; ``ci95`` the 95 % t interval of the mean; ``p`` the
    two-sided paired t-test; ``p_equiv`` the TOST equivalence p at ±``margin``; ``p_holm`` the
    Holm-adjusted ``p`` once :func:`holm` has seen the comparison's family (else None); ``verdict``
    SPEC §9's label. A difference that is the same for every seed has no t statistic: then ``p``,
    ``p_equiv`` and ``ci95``'s width are undefined (NaN, never 0 or a tiny number) and ``note`` says so.
    """

    mean: float
    std: float
    n: int
    p: float
    ci95: tuple[float, float] = (float("nan"), float("nan"))
    p_equiv: float = float("nan")
    p_holm: float | None = None
    verdict: str = "inconclusive"
    note: str | None = None
    margin: float = EQUIVALENCE_MARGIN

    def format(self, scale: float = 1.0, digits: int = 1, verdict: bool = False) -> str:
        if self.n == 0:
            return "—"
        if self.note == CONSTANT:
            p = "constant"
        else:
            p = "p n/a" if math.isnan(self.p) else f"p={self.p:.2g}"
        shown = round(scale * self.mean, digits) + 0.0  # no "-0.0" for a difference that rounds to zero
        return f"{shown:+.{digits}f} ({p})" + (f" {self.verdict}" if verdict else "")

    def with_holm(self, p_holm: float | None) -> "Paired":
        return replace(self, p_holm=p_holm, verdict=verdict_of(self.mean, p_holm, self.p_equiv))

    def plain(self) -> dict:
        """The JSON fields of results.json: mean, std, n, ci95 [lo, hi], p, p_holm, p_equiv, verdict."""
        f = _finite_or_none
        out = {"mean": f(self.mean), "std": f(self.std), "n": self.n, "ci95": [f(self.ci95[0]), f(self.ci95[1])],
               "p": f(self.p), "p_holm": f(self.p_holm), "p_equiv": f(self.p_equiv), "margin": self.margin,
               "verdict": self.verdict}
        if self.note:
            out["note"] = self.note
        return out


def _finite_or_none(v):
    return None if v is None or not math.isfinite(v) else float(v)


def verdict_of(mean: float, p_holm: float | None, p_equiv: float, level: float = LEVEL) -> str:
    """SPEC §9: ``gain`` / ``loss`` (Holm p < level, by the sign of the mean), ``equivalent`` (TOST
    p < level), otherwise ``inconclusive``."""
    if p_holm is not None and math.isfinite(p_holm) and p_holm < level and math.isfinite(mean) and mean != 0:
        return "gain" if mean > 0 else "loss"
    if math.isfinite(p_equiv) and p_equiv < level:
        return "equivalent"
    return "inconclusive"


def _is_constant(d: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
    """No spread in the differences beyond rounding: b − a of accuracies like 0.3 − 0.2 differ in the
    last bits, and a t statistic on that noise would claim certainty (p ~ 1e-32)."""
    scale = max(float(np.abs(x).max()), float(np.abs(y).max()), 1e-300)
    return float(np.ptp(d)) <= 1e-9 * scale


def paired_difference(a: dict[int, float | None], b: dict[int, float | None],
                      margin: float = EQUIVALENCE_MARGIN) -> Paired:
    """``b − a`` paired by seed (the keys): mean, its 95 % t interval, the paired t-test's p and the
    TOST equivalence p at ±``margin`` (two one-sided paired t-tests; p = the larger). Verdict before
    any family: from the unadjusted p (:meth:`Paired.with_holm` adjusts it)."""
    seeds = sorted(s for s in a.keys() & b.keys()
                   if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s]))
    nan = float("nan")
    if not seeds:
        return Paired(nan, nan, 0, nan, margin=margin)
    x = np.asarray([a[s] for s in seeds], dtype=float)
    y = np.asarray([b[s] for s in seeds], dtype=float)
    d = y - x
    n = len(seeds)
    mean = float(d.mean())
    if n < 2:
        return Paired(mean, 0.0, n, nan, margin=margin)
    if _is_constant(d, x, y):
        return Paired(mean, 0.0, n, nan, (mean, mean), nan, margin=margin, note=CONSTANT)
    from scipy.stats import t as student

    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    df = n - 1
    half = float(student.ppf(1 - LEVEL / 2, df)) * se
    p = float(2 * student.sf(abs(mean) / se, df))
    p_lower = float(student.sf((mean + margin) / se, df))   # H0: mean <= −margin
    p_upper = float(student.cdf((mean - margin) / se, df))  # H0: mean >= +margin
    p_equiv = max(p_lower, p_upper)
    return Paired(mean, sd, n, p, (mean - half, mean + half), p_equiv, None,
                  verdict_of(mean, p, p_equiv), margin=margin)


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None or NaN entries are left out of the
    family and stay None): the i-th smallest of m becomes max over j ≤ i of min(1, (m − j + 1) p_(j))."""
    idx = [i for i, p in enumerate(ps) if p is not None and math.isfinite(p)]
    order = sorted(idx, key=lambda i: ps[i])
    m = len(order)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def adjust_family(comparisons: Sequence[Paired]) -> list[Paired]:
    """Each comparison with its Holm-adjusted p and verdict within ``comparisons`` (one claim's family)."""
    return [c.with_holm(p) for c, p in zip(comparisons, holm([c.p for c in comparisons]))]


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
