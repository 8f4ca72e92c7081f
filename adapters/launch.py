"""``simam2 run NAME --nproc-per-node N ... -- ARGS``: an upstream's script under torchrun, and each rank's entry.

:func:`launch` (in the ``simam2`` process) checks the command line once, chooses the backend (NCCL
with one GPU per process where the node has enough GPUs, gloo on the CPU where it has none) and
starts ``python -m torch.distributed.run [torchrun options] -m simam2.adapters.launch --backend=B
NAME --checkout CHECKOUT [options] -- ARGS`` (the checkout resolved once, not fetched by every rank). Each rank (:func:`worker_main`) joins the process group, parses the same
command line and runs the upstream's script through :func:`run_script` inside the distributed layer
(:mod:`.machinery.distributed`). When a rank fails, torchrun stops the others (SIGTERM, which
unwinds them: their records end ``interrupted``) and ``simam2 run`` exits with one line. A Ctrl-C,
SIGTERM or SIGHUP (a closed terminal) to ``simam2 run`` is passed to torchrun once, which passes it
to every rank. A ``simam2 run`` killed outright (SIGKILL) forwards nothing: torchrun, and each rank,
carry a parent-death signal (:mod:`.machinery.lifeline`), so that they stop with their parent.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys

from .run import EXIT_INTERRUPTED, EXIT_NONFINITE, EXIT_USAGE, PreparedRun, prepare_run, run_prepared
from .launch_options import torchrun_argv
from .machinery import AdapterError, Modulation, RecordsError
from .machinery.distributed import Rank, distributed_layer, process_group, rank_config
from .machinery.lifeline import die_with_parent
from .machinery.records import check_path

WORKER = "simam2.adapters.launch"


def choose_backend(nproc: int) -> str:
    """NCCL with one GPU per process where this node has at least ``nproc`` GPUs; gloo on a node with none."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        return "gloo"
    if gpus < nproc:
        raise AdapterError(f"--nproc-per-node {nproc} needs one GPU per process; this node has {gpus}")
    return "nccl"


def check_distributed(run: PreparedRun) -> None:
    """Refuse what cannot run as several ranks, before any process starts."""
    spec = run.spec
    if spec.distributed is not None:
        raise AdapterError(f"{spec.name} does not run under torchrun: {spec.distributed}")
    if spec.own_ogm_ge and Modulation.of(run.config).decoupled:
        raise AdapterError(f"{spec.name}'s own OGM-GE computes its coefficients from each rank's batch alone, so "
                           "the ranks' parameters would drift apart; use --modulation df (reduced over ranks) "
                           "or none")


def launch(run: PreparedRun, rest: list[str]) -> int:
    """Start torchrun with every rank running :func:`worker_main` on ``rest``; its exit status."""
    check_distributed(run)
    if run.config.record is not None:  # rank 0 would refuse it alone, after the others had started
        check_path(run.config.record, run.config.append)
    backend = choose_backend(run.args.nproc_per_node)
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_argv(run.args),
           "-m", WORKER, f"--backend={backend}", run.spec.name, "--checkout", str(run.checkout), *rest]
    record = run.config.record
    before = record.stat().st_size if record is not None and record.is_file() else 0
    # torchrun in a session of its own: a Ctrl-C or a kill reaches it once, through us, and never
    # twice (a second signal during its shutdown would leave ranks behind)
    # and a lifeline: killed outright, we forward nothing, so the kernel sends torchrun SIGTERM
    proc = subprocess.Popen(cmd, start_new_session=True,
                            preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()))
    stopped: list[int] = []

    def forward(signum, frame):
        if not stopped and proc.poll() is None:
            # torchrun passes it on to every rank, which unwinds; a hang-up goes as SIGTERM, which
            # the ranks turn into KeyboardInterrupt
            proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
        stopped.append(signum)

    handlers = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        rc = proc.wait()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if stopped:
        print(f"simam2 run: interrupted ({signal.Signals(stopped[0]).name}); every rank was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    if rc != 0:
        if _ended_nonfinite(record, before):  # rank 0 finished and said so: exit status 3 is no failure
            return EXIT_NONFINITE
        raise AdapterError(f"the run under torchrun failed (exit status {rc}): a rank stopped; its error is above")
    return 0


def _ended_nonfinite(path, size_before: int) -> bool:
    """Whether rank 0's records of this run (the file grew) say it completed with a NaN or infinite
    loss or metric."""
    if path is None or not path.is_file() or path.stat().st_size <= size_before:
        return False
    from .machinery.records import read_records, runs

    split = runs(read_records(path))
    last = split[-1][-1] if split else {}
    return last.get("event") == "end" and last.get("status") == "completed" and bool(last.get("nonfinite"))


def worker_main(argv: list[str] | None = None) -> int:
    """One rank: ``--backend=B NAME [options] -- ARGS`` (started by torchrun through :func:`launch`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prefix = "simam2 run"
    die_with_parent(signal.SIGTERM)  # torchrun killed outright: this rank unwinds, its records say so
    try:
        if len(argv) < 2 or not argv[0].startswith("--backend="):
            raise AdapterError("usage: python -m simam2.adapters.launch --backend=gloo|nccl NAME [options] -- ARGS "
                               "(started by simam2 run NAME --nproc-per-node N)")
        rank = Rank.from_env(argv[0].split("=", 1)[1])
        prefix = f"simam2 run [rank {rank.rank}]"
        name, rest = argv[1], argv[2:]
        with process_group(rank):
            run = prepare_run(name, rest)
            check_distributed(run)
            seed = run.config.seed if run.config.seed is not None else 0
            config = rank_config(run.config, rank.rank)
            with distributed_layer(rank, seed, run.checkout):
                return run_prepared(run, config, start_extra={"distributed": {"world_size": rank.world_size,
                                                                              "backend": rank.backend}})
    except (AdapterError, RecordsError, ValueError, FileNotFoundError) as e:
        print(f"{prefix}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print(f"{prefix}: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(worker_main())
