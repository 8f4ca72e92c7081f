"""``simam2``: fetch upstreams, write synthetic data, run an upstream script with SimAM², make a table.

    simam2 fetch [NAME ...]                  fetch and patch upstream checkouts (vendor_fetch.py)
    simam2 synth NAME DIR                    write a tiny synthetic dataset in NAME's on-disk format
    simam2 prepare ogm-ge RAW OUT            CREMA-D (or VGGSound) as downloaded -> the layout main.py reads
    simam2 run NAME [options] -- ARGS ...    run NAME's own training script with ARGS
    simam2 run NAME --nproc-per-node N ... -- ARGS
                                             the same, as N processes per node under torchrun (DDP)
    simam2 table {ogm-ge,ave,fop,balancemm}  reproduce a table (synthetic data, or --data DIR; --seeds N; resumes)
    simam2 study {avdigits,mfeat} --out DIR  the paper's claims on real data, with seeds (docs/results.md)
    simam2 plot RECORDS... --out DIR         PNG plots of runs' records (ratios, k1/k2, metrics, ζ)
    simam2 demo                              one minute of the study: SimAM² on real data (mfeat)
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys

from pathlib import Path

from . import ADAPTERS, TABLES, get_spec
from .launch_options import launch_requested
from .machinery import AdapterError, RecordsError
from .machinery.table import add_table_options, executor_from_options
from .run import (  # noqa: F401  (PreparedRun, run_parser and the exit codes are the command's API too)
    EXIT_INTERRUPTED,
    EXIT_NONFINITE,
    EXIT_USAGE,
    PreparedRun,
    prepare_run,
    run_parser,
    run_prepared,
)



def build_parser() -> argparse.ArgumentParser:
    from simam2.docs import page

    # the pages named here (docs/results.md, …) ship with the package: say where this install has them
    parser = argparse.ArgumentParser(prog="simam2", description=__doc__,
                                     epilog=f"documentation pages (docs/): {page('results.md').parent}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fetch", help="fetch and patch upstream checkouts",
                       description="Fetch upstreams at their pinned commits and apply patches/ (see vendor_fetch.py).")
    p.add_argument("names", nargs="*", help=f"upstreams to fetch (default: all of {', '.join(ADAPTERS)})")
    p.add_argument("--source", help="source template with {owner} and {name} (default: $SIMAM2_SOURCE or GitHub)")
    p.add_argument("--home", help="cache folder (default: $SIMAM2_HOME or ~/.cache/simam2)")
    p.add_argument("--force", action="store_true", help="rebuild checkouts even if cached")

    p = sub.add_parser("synth", help="write a tiny synthetic dataset in an upstream's on-disk format",
                       description="Write a tiny synthetic dataset that the upstream's own loaders read.")
    p.add_argument("name", choices=list(ADAPTERS), help="the upstream")
    p.add_argument("dir", type=Path, help="output folder (new or empty, unless --force)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--dataset", default=None, help="ogm-ge: CREMAD (default) or VGGSound")
    p.add_argument("--force", action="store_true", help="write into a folder that already holds files")

    p = sub.add_parser("prepare", help="a dataset as downloaded, in the layout an upstream's script reads",
                       description="Decode CREMA-D (AudioWAV/*.wav, VideoFlash/*.flv) or VGGSound (vggsound.csv, "
                                   "{train,test}-videos/{train,test}-set/*.mp4) into the layout simam2 synth "
                                   "ogm-ge writes: frames as OGM-GE's preprocessing keeps them, the audio, and the "
                                   "split lists filtered to the clips prepared. Resumable; an unreadable clip is "
                                   "skipped and listed. Needs the prepare extra: pip install -e '.[prepare]'.")
    p.add_argument("name", choices=["ogm-ge"], help="the upstream whose layout to write")
    p.add_argument("raw", type=Path, help="the dataset as downloaded")
    p.add_argument("out", type=Path, help="the prepared folder (a rerun resumes it)")
    p.add_argument("--dataset", choices=["CREMAD", "VGGSound"], default="CREMAD", help="default CREMAD")
    p.add_argument("--jobs", type=int, default=None, help="processes decoding clips (default: every core)")
    p.add_argument("--fps", type=int, default=1, help="frames kept per second, main.py's --fps (default 1)")
    p.add_argument("--checkout", type=Path, default=None,
                   help="OGM-GE checkout whose data/CREMAD lists to use (default: the cached one)")

    p = sub.add_parser("run", help="run an upstream's own training script with SimAM²", add_help=False,
                       description="Run NAME's own script unchanged; arguments after -- go to it.")
    p.add_argument("name", nargs="?", help=f"the upstream: {', '.join(ADAPTERS)}")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    from .study import add_study_parser

    add_study_parser(sub)

    p = sub.add_parser("demo", help="one minute of simam2 study: SimAM² on real data (mfeat)",
                       add_help=False, description="See simam2 demo --help.")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    p = sub.add_parser("table", help="reproduce a table of the paper",
                       description="Run every cell of one of the paper's tables on a dataset (synthetic unless "
                                   "--data names one) and print it in the paper's layout.")
    p.add_argument("table", choices=list(TABLES), help="; ".join(f"{k}: {v[1]}" for k, v in TABLES.items()))
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder for the runs (default: ./runs)")
    p.add_argument("--data", type=Path, default=None,
                   help="the dataset folder in the upstream's layout: simam2 synth's, simam2 prepare's, or your "
                        "own (default: write a synthetic one under --out)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per cell (default: the recipe's)")
    r = p.add_argument_group("recipe (ogm-ge)")
    r.add_argument("--recipe", choices=["quick", "paper"], default=None,
                   help="quick (default): batch 8, 2 epochs, lr 0.01; paper: main.py's own, batch 64, 100 epochs, "
                        "SGD lr 1e-3 momentum 0.9 weight decay 1e-4, StepLR 70 × 0.1, modulation epochs 0-50; "
                        "α 0.8 in both (OGM-GE's value for CREMA-D)")
    r.add_argument("--batch-size", type=int, default=None, help="main.py's --batch_size (default: the recipe's)")
    r.add_argument("--lr", type=float, default=None, help="main.py's --learning_rate (default: the recipe's)")
    r.add_argument("--alpha", type=float, default=None, help="OGM-GE's α (default: the recipe's, 0.8)")
    r.add_argument("--keep-checkpoints", action="store_true",
                   help="keep main.py's checkpoints (about 180 MB each; default: removed once a cell is evaluated)")
    add_table_options(p)

    p = sub.add_parser("plot", help="PNG plots of records files (ratios, k1/k2, metrics, ζ, loss)", add_help=False,
                       description="See simam2 plot --help.")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _cmd_run(ns) -> int:
    if ns.name in (None, "-h", "--help"):
        print(f"usage: simam2 run NAME [options] -- ARGS ...\n\nNAME: {', '.join(ADAPTERS)}\n"
              "simam2 run NAME --help lists NAME's options.")
        return 0 if ns.name else EXIT_USAGE
    run = prepare_run(ns.name, ns.rest)
    if launch_requested(run.args):
        from .launch import launch

        return launch(run, ns.rest)
    return run_prepared(run)


def _cmd_synth(ns) -> int:
    out = Path(ns.dir)
    if out.exists() and not out.is_dir():
        raise AdapterError(f"synth: {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not ns.force:
        raise AdapterError(f"synth: {out} already holds files, which the dataset would overwrite; name a new "
                           "or empty folder, or pass --force")
    kwargs = {"seed": ns.seed}
    if ns.dataset is not None:
        if ns.name != "ogm-ge":
            raise AdapterError("synth: --dataset chooses between ogm-ge's CREMAD and VGGSound")
        kwargs["dataset"] = ns.dataset
    made = not out.exists()
    try:
        written = get_spec(ns.name).synth(out, **kwargs)
    except OSError as e:  # a path through a file, a read-only or full disk: nothing half-written left
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise AdapterError(f"synth: cannot write {e.filename or out}: {e.strerror or e}") from None
    print(f"wrote a synthetic {ns.name} dataset to {written}")
    return 0


def _cmd_prepare(ns) -> int:
    from .ogm_ge.prepare import prepare, report

    result = prepare(ns.raw, ns.out, dataset=ns.dataset, jobs=ns.jobs, checkout=ns.checkout, fps=ns.fps)
    print(report(result, ns.dataset))
    return 0


def _cmd_table(ns) -> int:
    module = importlib.import_module(TABLES[ns.table][0])
    if ns.seeds is not None and ns.seeds < 1:
        raise AdapterError(f"--seeds must be at least 1, got {ns.seeds}")
    kwargs = {"data_dir": ns.data}
    if ns.epochs is not None:
        kwargs["epochs"] = ns.epochs
    recipe = {"recipe_name": ns.recipe, "batch_size": ns.batch_size, "learning_rate": ns.lr, "alpha": ns.alpha,
              "keep_checkpoints": ns.keep_checkpoints or None}
    given = {k: v for k, v in recipe.items() if v is not None}
    if given and ns.table != "ogm-ge":
        raise AdapterError("table: --recipe, --batch-size, --lr, --alpha and --keep-checkpoints are Table 1's "
                           "(ogm-ge); the other tables' scripts take their own values")
    kwargs.update(given)
    if ns.u is not None:
        if ns.table == "fop":
            raise AdapterError("table fop: --u reads U where ζ is fixed; this table's SimAM² rows take ζ from "
                               "FOP, where the two readings coincide")
        kwargs["u"] = ns.u
    if ns.nproc_per_node is not None:
        if ns.table != "ogm-ge":
            raise AdapterError(f"table {ns.table}: --nproc-per-node is Table 1's (ogm-ge): the other upstreams' scripts "
                               "do not run under torchrun (docs/distributed.md)")
        if ns.nproc_per_node < 1:
            raise AdapterError(f"--nproc-per-node must be at least 1, got {ns.nproc_per_node}")
        kwargs["nproc_per_node"] = ns.nproc_per_node
    try:
        executor = executor_from_options(ns)
    except ValueError as e:
        raise AdapterError(f"table: {e}") from None
    kwargs.update(seeds=ns.seeds or (2 if ns.table == "balancemm" else 1), fresh=ns.fresh, tensorboard=ns.tensorboard, bar=ns.progress, executor=executor)
    print(module.run_table(ns.out, **kwargs))
    print(f"(also as Markdown, CSV and JSON: {ns.out / 'table.md'}, .csv, .json)")
    return 0


def _cmd_plot(ns) -> int:
    from .machinery.plots import main as plot_main

    return plot_main(ns.rest)


def _cmd_fetch(ns) -> int:
    import vendor_fetch

    argv = list(ns.names)
    if ns.source:
        argv += ["--source", ns.source]
    if ns.home:
        argv += ["--home", ns.home]
    if ns.force:
        argv.append("--force")
    return vendor_fetch.main(argv)


def _cmd_study(ns) -> int:
    from .study import run_study

    return run_study(ns)


def _cmd_demo(ns) -> int:
    from .study import demo

    return demo.main(ns.rest)


COMMANDS = {"demo": _cmd_demo, "study": _cmd_study, "fetch": _cmd_fetch, "synth": _cmd_synth, "prepare": _cmd_prepare,
            "run": _cmd_run,
            "table": _cmd_table, "plot": _cmd_plot}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # run and demo hand their arguments on untouched (argparse's REMAINDER misses a leading option)
    if argv and argv[0] in ("run", "demo", "plot"):
        ns = argparse.Namespace(command=argv[0], name=argv[1] if len(argv) > 1 else None, rest=argv[2:])
        if argv[0] in ("demo", "plot"):
            ns.rest = argv[1:]
    else:
        ns = build_parser().parse_args(argv)
    try:
        return COMMANDS[ns.command](ns) or 0
    except (AdapterError, RecordsError, ValueError, FileNotFoundError) as e:
        print(f"simam2 {ns.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"simam2 {ns.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
