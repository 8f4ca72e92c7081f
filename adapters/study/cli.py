"""The ``simam2 study`` command: parse, run the grid, write the report."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import data
from .models import FUSIONS
from .train import DIAGNOSIS, METHODS, QUICK_EPOCHS, RECIPES

DESCRIPTION = """\
Table 1's grid on real data: fusion (sum, concat, film, late) × method (baseline, simam2, ogm-ge,
ogm-ge+simam2, df+simam2) × seeds, each regime; then DIR/results.json, tables.md, tables.csv and the
figures. A run whose records are complete is not run again (rerun the same command to resume or to
add regimes, fusions, methods or seeds). Methods take SimAM² overrides for the diagnosis ablations,
e.g. simam2:energy=nodeg, simam2:energy=simam_u, simam2:lam=0.01, simam2:zeta=learnable,s=10
(--diagnosis adds the standard set). avdigits pairs images and spoken digits by label only."""


def add_study_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("study", help="the paper's claims on real data: Table 1's grid with seeds",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)
    return p


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=data.DATASETS, help="avdigits (MNIST 5k + FSDD) or mfeat (UCI)")
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and the report")
    p.add_argument("--regime", nargs="+", default=["natural"], metavar="R",
                   help=f"one or more of natural, m1, m2, balanced ({data.REGIME_HELP}); default natural")
    p.add_argument("--views", nargs=2, metavar=("A", "B"), default=None,
                   help=f"mfeat: two views of {', '.join(data.MFEAT_VIEWS)} (default {' '.join(data.DEFAULT_VIEWS)})")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; --quick 2)")
    p.add_argument("--fusions", nargs="+", default=list(FUSIONS), choices=FUSIONS, metavar="F",
                   help=f"fusions (default all: {' '.join(FUSIONS)})")
    p.add_argument("--methods", nargs="+", default=list(METHODS), metavar="M",
                   help=f"methods (default the five of Table 1: {' '.join(METHODS)})")
    p.add_argument("--diagnosis", action="store_true", help="add the diagnosis ablations: " + " ".join(DIAGNOSIS))
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per run (default {', '.join(f'{k} {v.epochs}' for k, v in RECIPES.items())}; "
                        f"--quick {', '.join(f'{k} {v}' for k, v in QUICK_EPOCHS.items())})")
    p.add_argument("--quick", action="store_true", help="2 seeds and fewer epochs (minutes, not hours)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes, one thread each (default 2)")
    p.add_argument("--limit", type=int, nargs=2, metavar=("TRAIN", "TEST"), default=None,
                   help="use only the first TRAIN / TEST samples (tiny runs, tests)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")


def run_study(ns: argparse.Namespace) -> int:
    from .grid import run_grid
    from .report import write_report

    seeds = ns.seeds if ns.seeds is not None else (2 if ns.quick else 5)
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if ns.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {ns.jobs}")
    epochs = ns.epochs if ns.epochs is not None else (QUICK_EPOCHS[ns.dataset] if ns.quick else None)
    recipe = RECIPES[ns.dataset] if epochs is None else replace(RECIPES[ns.dataset], epochs=epochs)
    if recipe.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {recipe.epochs}")
    methods = list(dict.fromkeys(list(ns.methods) + (list(DIAGNOSIS) if ns.diagnosis else [])))
    if "baseline" not in methods:
        methods.insert(0, "baseline")  # every difference is paired with the baseline's seeds
    start = time.perf_counter()
    summary = run_grid(ns.dataset, ns.out, ns.regime, ns.fusions, methods, range(seeds), recipe,
                       views=ns.views, jobs=ns.jobs, limit=ns.limit)
    res = write_report(ns.out, figures=not ns.no_figures)
    print((Path(ns.out) / "tables.md").read_text())
    print(f"wall time {time.perf_counter() - start:.0f}s for {summary['ran']} runs on {ns.jobs} process(es); "
          f"results: {Path(ns.out) / 'results.json'}")
    for f in res.get("figures", []):
        print(f"figure: {f}")
    for what, error in summary["failed"]:
        print(f"failed: {what}: {error}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="simam2 study", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)
    ns = p.parse_args(argv)
    try:
        return run_study(ns)
    except (ValueError, data.DataError) as e:
        print(f"simam2 study: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
