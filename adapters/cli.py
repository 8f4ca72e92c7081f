"""``simam2``: fetch upstreams, write synthetic data, run an upstream script with SimAM², make a table.

    simam2 fetch [NAME ...]                  fetch and patch upstream checkouts (vendor_fetch.py)
    simam2 synth NAME DIR                    write a tiny synthetic dataset in NAME's on-disk format
    simam2 run NAME [options] -- ARGS ...    run NAME's own training script with ARGS
    simam2 table {ogm-ge,ave,fop}            reproduce a table of the paper on synthetic data
    simam2 study {avdigits,mfeat} --out DIR  the paper's claims on real data, with seeds (docs/results.md)
    simam2 demo                              one minute of the study: SimAM² on real data (mfeat)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import ADAPTERS, TABLES, get_adapter
from .base import MODULATION_CHOICES, ZETA_CHOICES, AdapterError, run_script


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SimAM² and modulation")
    g.add_argument("--simam2", action="store_true", help="replace the upstream's fusion with SimAM²")
    g.add_argument("--zeta", choices=ZETA_CHOICES, default="fixed",
                   help="ζ: fixed 0.5, a learnable gate, or the upstream's own gate (default: fixed)")
    g.add_argument("--modulation", choices=MODULATION_CHOICES, default="none",
                   help="gradient modulation: none, OGM-GE's decoupled ratio, or decoupling-free (Eq. 11)")
    g.add_argument("--no-ge", action="store_true", help="modulate without OGM-GE's Gaussian noise (plain OGM)")
    g.add_argument("--alpha", type=float, default=0.1, help="OGM-GE's alpha (default 0.1)")
    g.add_argument("--modulation-start", type=int, default=0, help="first modulated epoch (default 0)")
    g.add_argument("--modulation-end", type=int, default=50, help="last modulated epoch (default 50)")
    g.add_argument("--lam", type=float, default=1e-6, help="λ of Eq. 6-7 (default 1e-6)")
    g.add_argument("--s", type=float, default=2.5, help="s of Eq. 6 (default 2.5)")
    g.add_argument("--seed", type=int, default=None, help="seed Python, NumPy and torch before the run")
    g.add_argument("--record", type=Path, default=None,
                   help="JSON-lines file for per-step ratios and per-evaluation metrics")
    w = p.add_argument_group("where")
    w.add_argument("--checkout", type=Path, default=None,
                   help="an upstream checkout to use (default: fetch into the cache)")
    w.add_argument("--workdir", type=Path, default=None,
                   help="working directory of the run (default: the current one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simam2", description=__doc__,
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
    p.add_argument("dir", type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = sub.add_parser("run", help="run an upstream's own training script with SimAM²", add_help=False,
                       description="Run NAME's own script unchanged; arguments after -- go to it.")
    p.add_argument("name", nargs="?", help=f"the upstream: {', '.join(ADAPTERS)}")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    from .study import add_study_parser

    add_study_parser(sub)

    p = sub.add_parser("demo", help="one minute of simam2 study: SimAM² on real data (mfeat)",
                       add_help=False, description="See simam2 demo --help.")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    p = sub.add_parser("table", help="reproduce a table of the paper on synthetic data",
                       description="Run every cell of one of the paper's tables on a synthetic dataset "
                                   "and print it in the paper's layout.")
    p.add_argument("table", choices=list(TABLES), help="; ".join(f"{k}: {v[1]}" for k, v in TABLES.items()))
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder for the runs (default: ./runs)")
    p.add_argument("--data", type=Path, default=None, help="an existing synthetic dataset (default: write one)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per cell (default: the table's own)")
    return parser


def _run_parser(name: str):
    adapter = get_adapter(name)
    p = argparse.ArgumentParser(
        prog=f"simam2 run {name}",
        description=f"Run {adapter.upstream}'s {adapter.script} unchanged, with SimAM² as configured. "
                    "Arguments after -- are passed to the script.")
    _add_run_options(p)
    adapter.add_arguments(p)
    return adapter, p


def _cmd_run(ns) -> int:
    if ns.name in (None, "-h", "--help"):
        print(f"usage: simam2 run NAME [options] -- ARGS ...\n\nNAME: {', '.join(ADAPTERS)}\n"
              "simam2 run NAME --help lists NAME's options.")
        return 0 if ns.name else 2
    rest = list(ns.rest)
    upstream = []
    if "--" in rest:
        i = rest.index("--")
        rest, upstream = rest[:i], rest[i + 1:]
    adapter, parser = _run_parser(ns.name)
    args = parser.parse_args(rest)
    config = adapter.config_from_args(args)
    if config.record is not None:  # relative to where the user stands, not the run's workdir
        config.record = config.record.resolve()
    argv = adapter.upstream_args(args) + upstream
    ctx = run_script(adapter, argv, config, checkout=args.checkout, cwd=adapter.workdir_for(args),
                     script=adapter.script_for(args))
    if config.record is not None:
        print(f"records: {config.record}")
    return 0 if ctx else 1


def _cmd_synth(ns) -> int:
    out = get_adapter(ns.name).synth(ns.dir, seed=ns.seed)
    print(f"wrote a synthetic {ns.name} dataset to {out}")
    return 0


def _cmd_table(ns) -> int:
    module = importlib.import_module(TABLES[ns.table][0])
    kwargs = {"data_dir": ns.data}
    if ns.epochs is not None:
        kwargs["epochs"] = ns.epochs
    print(module.run_table(ns.out, **kwargs))
    return 0


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


COMMANDS = {"demo": _cmd_demo, "study": _cmd_study, "fetch": _cmd_fetch, "synth": _cmd_synth, "run": _cmd_run, "table": _cmd_table}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # run and demo hand their arguments on untouched (argparse's REMAINDER misses a leading option)
    if argv and argv[0] in ("run", "demo"):
        ns = argparse.Namespace(command=argv[0], name=argv[1] if len(argv) > 1 else None, rest=argv[2:])
        if argv[0] == "demo":
            ns.rest = argv[1:]
    else:
        ns = build_parser().parse_args(argv)
    try:
        return COMMANDS[ns.command](ns) or 0
    except (AdapterError, ValueError, FileNotFoundError) as e:
        print(f"simam2 {ns.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
