"""One ``simam2 run`` command line: parsed and checked (:func:`prepare_run`), then run in this
process (:func:`run_prepared`); :mod:`simam2.adapters.launch` runs the same under torchrun. Both the
command (:mod:`~simam2.adapters.cli`) and the launcher import this module; it imports neither.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import get_spec
from .launch_options import add_launch_options
from .machinery import AdapterError, RecordsError, RunConfig, Spec, add_run_options, config_from_args, run_script
from .machinery.context import RunRefused
from .machinery.install import checkout_of
from .machinery.records import RecordsRefused

EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130


def run_parser(name: str):
    """(spec, the parser of ``simam2 run NAME``): the shared run options from RunConfig, then the spec's."""
    spec = get_spec(name)
    p = argparse.ArgumentParser(
        prog=f"simam2 run {name}",
        description=f"Run {spec.upstream}'s {spec.script} unchanged, with SimAM² as configured. "
                    "Arguments after -- are passed to the script.")
    add_run_options(p)
    w = p.add_argument_group("where")
    w.add_argument("--checkout", type=Path, default=None,
                   help="an upstream checkout to use (default: fetch into the cache)")
    w.add_argument("--workdir", type=Path, default=None,
                   help="working directory of the run (default: the current one)")
    add_launch_options(p)
    spec.add_arguments(p)
    return spec, p


@dataclass
class PreparedRun:
    """A ``simam2 run`` command line, parsed and checked: what :func:`run_script` needs."""

    spec: Spec
    args: argparse.Namespace
    config: RunConfig
    checkout: Path
    argv: list[str]
    cwd: Path | None
    script: str
    #: the working directory this command line created (removed again if the run is refused)
    made_workdir: Path | None = None
    #: the spec's own options for the run (``Spec.run_options``)
    options: dict = field(default_factory=dict)


def prepare_run(name: str, rest: list[str]) -> PreparedRun:
    """Parse ``simam2 run NAME`` options (``rest``: ours, then ``--`` and the script's arguments)."""
    rest = list(rest)
    upstream = []
    if "--" in rest:
        i = rest.index("--")
        rest, upstream = rest[:i], rest[i + 1:]
    spec, parser = run_parser(name)
    args = parser.parse_args(rest)
    config = config_from_args(args, default_zeta=spec.default_zeta)
    if config.record is not None:  # relative to where the user stands, not the run's workdir
        config.record = config.record.resolve()
    # the command line's own checks first: a refused command line fetches nothing and writes nothing
    if args.workdir is None and spec.workdir_required:
        raise AdapterError(f"simam2 run {name} needs --workdir: {spec.workdir_required}")
    argv = spec.upstream_argv(config, args) + upstream
    checkout = Path(args.checkout).resolve() if args.checkout is not None else checkout_of(spec)
    if args.workdir is not None:
        _refuse_inside(Path(args.workdir), checkout, "--workdir")
    made = Path(args.workdir) if args.workdir is not None and not Path(args.workdir).exists() else None
    cwd = spec.workdir_for(args)
    return PreparedRun(spec, args, config, checkout, argv, cwd, spec.script_for(args),
                       made if made is not None and made.exists() else None, spec.run_options(args))


def run_prepared(run: PreparedRun, config: RunConfig | None = None, start_extra: dict | None = None) -> int:
    """Run a prepared command line (with ``config`` in place of its own, if given); the exit status."""
    config = config or run.config
    try:
        ctx = run_script(run.spec, run.argv, config, checkout=run.checkout, cwd=run.cwd, script=run.script,
                         start_extra=start_extra, options=run.options)
    except (RunRefused, RecordsRefused):
        if run.made_workdir is not None:  # nothing ran in it: the corrected rerun finds it as before
            shutil.rmtree(run.made_workdir, ignore_errors=True)
        raise
    if ctx.recorder.broken is not None:  # the script swallowed the write error and went on
        raise RecordsError(f"cannot write records to {config.record}: {ctx.recorder.broken}; the run finished, "
                           "but its records stop where the disk filled (no end record)")
    if config.record is not None:
        print(f"records: {config.record}")
    if ctx.recorder.nonfinite:
        print("simam2 run: a loss or metric of the run was NaN or infinite (see the records' end record)",
              file=sys.stderr)
        return EXIT_NONFINITE
    return 0


def _refuse_inside(path: Path, checkout: Path, option: str) -> None:
    """The cached checkout is shared and read-only for runs: nothing of a run goes inside it."""
    resolved = path.resolve()
    if resolved == checkout or checkout in resolved.parents:
        raise AdapterError(f"{option} {path} is inside the upstream checkout {checkout}: choose a folder of "
                           "your own (the checkout is a shared cache)")
