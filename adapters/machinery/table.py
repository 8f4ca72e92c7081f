"""What the reproduced tables share: a row (method) with its run configuration, and the command line.

Every table is a :class:`~.grid.Table` (rows × columns × seeds, resume, statistics, outputs); a row
is a :class:`Method`, which says how its cells are configured.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from simam2.core.fusion import U_READINGS

from .config import RunConfig
from .lifeline import die_with_parent
from .grid import CellSeed, Row
from .tables.executors import EXECUTORS, Local, Serial, Slurm


@dataclass(frozen=True)
class Method(Row):
    """One row of a reproduced table: its label, SimAM² on or off, ``RunConfig.modulation`` and ζ.

    ζ follows the paper's tables (Table 1's footnote): learnable only where decoupling-free
    modulation needs it (its ratio, Eq. 11, is Σζ / Σ(1 − ζ)); every other SimAM² row fuses with
    the fixed ζ = 0.5; FOP's rows take FOP's own gate as ζ (``given``).
    """

    simam2: bool = False
    modulation: str = "none"
    zeta: str = "fixed"

    def run_config(self, cs: CellSeed, u: str = "eq4", **kwargs) -> RunConfig:
        """This row's RunConfig for one cell-seed: its seed, its records file, its TensorBoard folder;
        ``u`` (SPEC §2's reading of U) applies to the rows with SimAM²."""
        return RunConfig(simam2=self.simam2, zeta=self.zeta, modulation=self.modulation, seed=cs.seed,
                         record=cs.records, tensorboard=cs.tensorboard, u=u if self.simam2 else "eq4", **kwargs)


def run_under_torchrun(name: str, argv: list[str], config: RunConfig, nproc_per_node: int, cwd: Path,
                       log: Path, checkout=None) -> None:
    """One cell as ``simam2 run NAME --nproc-per-node N [config] -- ARGV`` in a new process (torchrun
    and its ranks: the DDP layer of docs/distributed.md; rank 0 writes ``config.record``), its output
    into ``log``; a failure raises with the log's last line."""
    cmd = [sys.executable, "-m", "simam2.adapters.cli", "run", name, "--nproc-per-node", str(nproc_per_node),
           *(["--checkout", str(checkout)] if checkout is not None else []), *config.argv(), "--", *argv]
    with open(log, "w", encoding="utf-8") as out:
        # a worker killed outright (Slurm, the OOM killer) takes simam2 run, and so torchrun, with it
        rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid())).returncode
    if rc != 0:
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        raise RuntimeError(f"simam2 run {name} --nproc-per-node {nproc_per_node} exited with {rc}: "
                           f"{lines[-1] if lines else 'no output'} (all of it in {log})")


def add_table_options(parser: argparse.ArgumentParser) -> None:
    """``simam2 table``'s options that every table shares (the runner's)."""
    g = parser.add_argument_group("seeds and resume")
    g.add_argument("--seeds", type=int, default=None, help="seeds per cell, 0 … N−1 (default 1; balancemm 2): the "
                                                           "table shows mean ± std and paired differences to the baseline")
    g.add_argument("--fresh", action="store_true", help="rerun every cell, also those whose records are complete")
    g.add_argument("--tensorboard", type=Path, default=None,
                   help="write each run's TensorBoard curves under this folder (<cell>/seed<k>)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--u", choices=U_READINGS, default=None,
                   help="SPEC §2's reading of U in the SimAM² rows with fixed ζ (Tables 1, 2 and balancemm): eq4 (default) "
                        "or vanilla; a folder holds one reading (another is run anew, never averaged in)")
    add_executor_options(parser)
    parser.add_argument_group("where the cells run").add_argument(
        "--nproc-per-node", type=int, default=None,
        help="ogm-ge: run each cell as N processes under torchrun (DDP: gloo on CPU, NCCL with one GPU per "
             "process; OGM-GE's own modulation rows cannot, their coefficients being each rank's own); "
             "a folder holds one N")


def add_executor_options(parser: argparse.ArgumentParser, default: str = "serial", jobs: int = 1,
                         what: str = "table", reuse: bool = False) -> None:
    """The options that choose where a table's (or the study's) cell-seeds run (./tables/executors.py)."""
    e = parser.add_argument_group("where the cells run")
    e.add_argument("--executor", choices=EXECUTORS, default=default,
                   help=f"serial{' (default)' if default == 'serial' else ''}: one cell-seed after another here; "
                        f"local{' (default)' if default == 'local' else ''}: --jobs worker processes, or "
                        "one per GPU with --gpus; slurm: one Slurm job per cell-seed through submitit "
                        f"(pip install 'simam2[slurm]'). Every executor writes the same folders, so a {what} resumes "
                        "on any of them")
    e.add_argument("--jobs", type=int, default=None,
                   help=f"local: cell-seeds at once (default {jobs}), " + (
                       "in as many worker processes that run one after another, one torch thread each" if reuse
                       else "each in its own process"))
    e.add_argument("--gpus", default=None,
                   help="local: GPU indices, e.g. 0,1: one cell-seed per GPU at a time, its CUDA_VISIBLE_DEVICES set "
                        "to that GPU (jobs = the number of GPUs)")
    e.add_argument("--slurm-partition", default=None, help="slurm: the partition (default: the cluster's)")
    e.add_argument("--slurm-time", type=int, default=60, help="slurm: each cell-seed's time limit in minutes (default 60)")
    e.add_argument("--slurm-gpus-per-cell", type=int, default=1, help="slurm: GPUs per cell-seed (default 1)")
    e.add_argument("--slurm-array-parallelism", type=int, default=16,
                   help="slurm: cell-seeds of the job array running at once (default 16)")


def executor_from_options(ns: argparse.Namespace, jobs: int = 1, reuse: bool = False) -> Serial | Local | Slurm:
    """The executor the options ask for; options of another executor are refused in one line.
    ``jobs``: local's default; ``reuse``: local's workers run many cell-seeds each (not with --gpus)."""
    local_given = ns.jobs is not None or ns.gpus is not None
    slurm_given = any(getattr(ns, k) != d for k, d in (("slurm_partition", None), ("slurm_time", 60),
                                                       ("slurm_gpus_per_cell", 1), ("slurm_array_parallelism", 16)))
    if local_given and ns.executor != "local":
        raise ValueError("--jobs and --gpus are --executor local's")
    if slurm_given and ns.executor != "slurm":
        raise ValueError("--slurm-* options are --executor slurm's")
    if ns.executor == "local":
        if ns.jobs is not None and ns.gpus is not None:
            raise ValueError("--gpus sets the number of jobs (one per GPU); give --jobs or --gpus, not both")
        gpus = None
        if ns.gpus is not None:
            try:
                gpus = [int(g) for g in ns.gpus.split(",")]
            except ValueError:
                raise ValueError(f"--gpus takes GPU indices separated by commas (0,1), got {ns.gpus!r}") from None
        if ns.jobs is not None and ns.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {ns.jobs}")
        return Local(jobs=ns.jobs or jobs, gpus=gpus, reuse=reuse and gpus is None)
    if ns.executor == "slurm":
        return Slurm(partition=ns.slurm_partition, time_min=ns.slurm_time, gpus_per_cell=ns.slurm_gpus_per_cell,
                     array_parallelism=ns.slurm_array_parallelism)
    return Serial()


__all__ = ["Method", "add_table_options", "add_executor_options", "executor_from_options"]
