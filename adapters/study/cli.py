"""The ``simam2 study`` command: parse, run the grid, write the report."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from simam2.adapters.machinery.table import add_executor_options, executor_from_options

from . import data
from .models import FUSIONS
from . import protocol as protocols
from .train import CONTROLS, DIAGNOSIS, METHODS, ROWS

DESCRIPTION = """\
Table 1's grid on real data under SPEC §9's protocol (the default, --protocol tuned): train /
validation / test splits; for every row (method × reading × fusion × regime) the same grid of lr
(and α for modulated rows), two tuning seeds, early stopping on validation; the best mean validation
accuracy chooses the setting; fresh seeds (10 on mfeat, 5 on avdigits) then run it and the test split
is read once per run. Rows: baseline, simam2, simam2:u=vanilla, ogm-ge, ogm-ge+simam2,
ogm-ge+simam2:u=vanilla, df+simam2, and the controls temperature, simam2:energy=simam_u,
simam2:energy=nodeg. Then DIR/results.json (each comparison's mean, 95 % interval, p, Holm p, TOST p
and verdict), tables.md, tables.csv and the figures. A run whose records are complete is not run
again: rerun the same command to resume, or to add regimes, fusions or methods. --protocol fixed is
the earlier recipe (one lr, last epoch scored), kept so that old numbers can be reproduced; a folder
never mixes two protocols. Methods take overrides, e.g. simam2:u=vanilla, simam2:energy=nodeg,
simam2:lam=0.01, simam2:zeta=learnable,s=10 (--diagnosis adds a standard set). avdigits pairs images
and spoken digits by label only."""


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
    p.add_argument("--protocol", choices=("tuned", "fixed"), default="tuned",
                   help="tuned: SPEC §9 (default); fixed: the earlier recipe, for old numbers")
    p.add_argument("--seeds", type=int, default=None,
                   help="final seeds 0..N-1 (default: tuned 10 on mfeat, 5 on avdigits; fixed 5; --quick 2)")
    p.add_argument("--fusions", nargs="+", default=list(FUSIONS), choices=FUSIONS, metavar="F",
                   help=f"fusions (default all: {' '.join(FUSIONS)})")
    p.add_argument("--methods", nargs="+", default=None, metavar="M",
                   help=f"methods (default: tuned, the rows and controls of SPEC §9; fixed, the five of "
                        f"Table 1: {' '.join(m for m in METHODS if m != 'temperature')})")
    p.add_argument("--diagnosis", action="store_true", help="add the diagnosis ablations: " + " ".join(DIAGNOSIS))
    p.add_argument("--epochs", type=int, default=None,
                   help="most epochs per run (default: tuned 100 on mfeat, 40 on avdigits; fixed 20 and 5)")
    p.add_argument("--quick", action="store_true",
                   help="every number shrunk (2 seeds, 1 tuning seed, 2 lrs, fewer epochs): minutes, not hours")
    p.add_argument("--limit", type=int, nargs=2, metavar=("TRAIN", "TEST"), default=None,
                   help="use only the first TRAIN / TEST samples (tiny runs, tests)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--with-results", action="append", default=[], metavar="RESULTS_JSON",
                   help="also report the cells of an earlier results.json of the same study and protocol that "
                        "--out does not hold (a study run in parts): one Holm adjustment over all cells; "
                        "repeatable")
    add_executor_options(p, default="local", jobs=2, what="study", reuse=True)


def protocol_of(ns: argparse.Namespace) -> protocols.Protocol:
    """The protocol the options ask for (SPEC §9 unless --protocol fixed); --seeds and --epochs
    override its numbers, which the folder then records."""
    if ns.seeds is not None and ns.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {ns.seeds}")
    if ns.epochs is not None and ns.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {ns.epochs}")
    if ns.protocol == "fixed":
        epochs = ns.epochs if ns.epochs is not None else (
            protocols.FIXED_QUICK_EPOCHS[ns.dataset] if ns.quick else None)
        return protocols.fixed(ns.dataset, ns.seeds or (2 if ns.quick else 5), epochs)
    proto = protocols.quick(ns.dataset) if ns.quick else protocols.spec9(ns.dataset)
    changes = {}
    if ns.seeds is not None:
        changes["seeds"] = tuple(range(ns.seeds))
    if ns.epochs is not None:
        changes["max_epochs"] = ns.epochs
        changes["lr_step"] = max(1, int(round(0.7 * ns.epochs)))
    return replace(proto, **changes) if changes else proto


def run_study(ns: argparse.Namespace) -> int:
    from .grid import run_grid
    from .report import read_earlier, write_report

    if ns.gpus is not None:
        raise ValueError("--gpus: the study trains its small models on the CPU, one thread per run; use --jobs")
    executor = executor_from_options(ns, jobs=2, reuse=True)
    proto = protocol_of(ns)
    if ns.methods is not None:
        methods = list(ns.methods)
    elif proto.tuned:
        methods = list(ROWS) + list(CONTROLS)
    else:
        methods = [m for m in METHODS if m != "temperature"]
    methods = list(dict.fromkeys(methods + (list(DIAGNOSIS) if ns.diagnosis else [])))
    if "baseline" not in methods:
        methods.insert(0, "baseline")  # every difference is paired with the baseline's seeds
    for path in ns.with_results:  # a wrong file fails now, not after the grid
        read_earlier(path, ns.dataset, proto.plain())
    start = time.perf_counter()
    summary = run_grid(ns.dataset, ns.out, ns.regime, ns.fusions, methods, proto,
                       views=ns.views, limit=ns.limit, executor=executor, progress=sys.stderr.isatty())
    res = write_report(ns.out, figures=not ns.no_figures, earlier=tuple(ns.with_results))
    print((Path(ns.out) / "tables.md").read_text())
    print(f"wall time {time.perf_counter() - start:.0f}s on {summary['executor']} ({summary['jobs']} at a time); "
          f"results: {Path(ns.out) / 'results.json'}")
    for f in res.get("figures", []):
        print(f"figure: {f}")
    for what in summary["failed"]:
        print(f"failed: {what} (its error is above; rerun the same command to run it again)", file=sys.stderr)
    return 1 if summary["failed"] else 0


def one_line_errors(prog: str, command, ns: argparse.Namespace) -> int:
    """``command(ns)``; a bad input (ValueError, DataError) is one line on stderr and exit status 2."""
    try:
        return command(ns)
    except (ValueError, data.DataError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="simam2 study", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)
    return one_line_errors("simam2 study", run_study, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
