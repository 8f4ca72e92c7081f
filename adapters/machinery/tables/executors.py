"""Where a table's cell-seeds run: one after another here (``serial``), in worker processes on this
machine (``local``: ``jobs`` at a time, or one per GPU), or as Slurm jobs through submitit (``slurm``).

Every executor runs :func:`run_cell_seed` for each cell-seed, so each writes the same folder, the
same ``cell.json`` and the same records, and a table resumes on any executor. A worker reports a
failure as one line (``Type: first line``); the caller decides what a finished cell-seed means by
reading its records.

**Picklable cells.** ``local`` and ``slurm`` send ``Table.run_cell`` to another process, so it must
pickle: a module-level function, a ``functools.partial`` of one, or an instance of a module-level
class (the tables of Tables 1–3 bind their options to a module-level ``run_cell`` with ``partial``).
A closure is refused in one line before anything runs.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .declare import CellSeed, GridError

#: a cell-seed with the signature its ``cell.json`` is to hold
Job = tuple[CellSeed, dict]
#: ``finished(cs, error, seconds)``: error is None or one line
Finished = Callable[[CellSeed, "str | None", float], None]
Started = Callable[[CellSeed], None]

EXECUTORS = ("serial", "local", "slurm")
#: what a reused worker's cell-seed says when its process died (a pool cannot tell which one did)
WORKER_DIED = "a worker process died (killed, or out of memory)"


def _clear(path: Path | None) -> None:
    if path is not None and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_cell_seed(run_cell: Callable[[CellSeed], Any], cs: CellSeed, signature: dict) -> None:
    """One cell-seed from scratch, in whichever process runs it: its folder (and TensorBoard folder)
    cleared, its ``cell.json`` written, then ``run_cell(cs)``. Clearing here rather than in the
    caller means a Slurm job requeued after preemption also starts from an empty folder."""
    _clear(cs.folder)
    _clear(cs.tensorboard)
    cs.folder.mkdir(parents=True)
    (cs.folder / "cell.json").write_text(json.dumps(signature, indent=1), encoding="utf-8")
    run_cell(cs)


def describe_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _check_picklable(run_cell, executor: str) -> None:
    try:
        pickle.dumps(run_cell)
    except Exception as e:  # noqa: BLE001 — any pickling failure is the same one-line refusal
        raise GridError(f"--executor {executor} sends each cell to another process, but this table's run_cell "
                        f"cannot be pickled ({describe_error(e)}); bind its options with functools.partial to a "
                        "module-level function") from None


@dataclass
class Serial:
    """Today's loop: each cell-seed in this process, one after another."""

    name = "serial"

    def run(self, jobs: Sequence[Job], run_cell, out: Path, started: Started, finished: Finished) -> None:
        for cs, sig in jobs:
            started(cs)
            t0 = time.perf_counter()
            try:
                run_cell_seed(run_cell, cs, sig)
            except Exception as e:  # noqa: BLE001 — one failing cell must not lose the others
                finished(cs, describe_error(e), time.perf_counter() - t0)
            else:
                finished(cs, None, time.perf_counter() - t0)


def _worker(run_cell, cs: CellSeed, sig: dict, conn) -> None:
    try:
        run_cell_seed(run_cell, cs, sig)
    except BaseException as e:  # noqa: BLE001 — Ctrl-C too: said to the parent, which decides
        conn.send(describe_error(e))
    else:
        conn.send(None)
    finally:
        conn.close()


@dataclass
class Local:
    """Worker processes on this machine (spawned: a fresh interpreter per cell-seed, so nothing of one
    cell's CUDA or module state reaches the next). ``jobs`` at a time; with ``gpus``, one cell-seed
    per GPU at a time, its ``CUDA_VISIBLE_DEVICES`` set to that GPU (``jobs`` is then their number).

    ``reuse``: ``jobs`` worker processes that each run many cell-seeds, one after another (the
    study's runs last seconds, and a fresh interpreter with torch costs about two). Not with ``gpus``."""

    jobs: int = 1
    gpus: Sequence[int] | None = None
    reuse: bool = False
    name = "local"

    def __post_init__(self) -> None:
        if self.gpus is not None:
            self.gpus = [int(g) for g in self.gpus]
            if not self.gpus or len(set(self.gpus)) != len(self.gpus) or min(self.gpus) < 0:
                raise GridError(f"--gpus must name distinct GPU indices (0,1,…), got {self.gpus}")
            self.jobs = len(self.gpus)
        if self.jobs < 1:
            raise GridError(f"--jobs must be at least 1, got {self.jobs}")
        if self.reuse and self.gpus is not None:
            raise GridError("worker processes reused across cell-seeds cannot each take a GPU: use fresh workers")

    def run(self, jobs: Sequence[Job], run_cell, out: Path, started: Started, finished: Finished) -> None:
        _check_picklable(run_cell, self.name)
        if self.reuse:
            return self._run_pool(jobs, run_cell, started, finished)
        ctx = multiprocessing.get_context("spawn")
        free: list[str | None] = [str(g) for g in self.gpus] if self.gpus is not None else [None] * self.jobs
        pending = deque(jobs)
        running: dict[Any, tuple] = {}  # sentinel -> (process, pipe, cell-seed, slot, start time)
        try:
            while pending or running:
                while pending and free:
                    cs, sig = pending.popleft()
                    slot = free.pop(0)
                    receive, send = ctx.Pipe(duplex=False)
                    p = ctx.Process(target=_worker, args=(run_cell, cs, sig, send), name=f"cell {cs.cell} seed {cs.seed}")
                    started(cs)
                    # the child copies the environment when it starts: set before, restored after
                    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
                    if slot is not None:
                        os.environ["CUDA_VISIBLE_DEVICES"] = slot
                    try:
                        p.start()
                    finally:
                        if slot is not None:
                            if saved is None:
                                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                            else:
                                os.environ["CUDA_VISIBLE_DEVICES"] = saved
                    send.close()
                    running[p.sentinel] = (p, receive, cs, slot, time.perf_counter())
                for sentinel in multiprocessing.connection.wait(list(running)):
                    p, receive, cs, slot, t0 = running.pop(sentinel)
                    p.join()
                    try:
                        error = receive.recv() if receive.poll() else f"worker exited with code {p.exitcode}"
                    except EOFError:
                        error = f"worker exited with code {p.exitcode}"
                    receive.close()
                    free.append(slot)
                    finished(cs, error, time.perf_counter() - t0)
        except BaseException:
            for p, receive, *_ in running.values():  # Ctrl-C: no cell-seed is left running
                p.terminate()
                p.join()
                receive.close()
            raise

    def _run_pool(self, jobs: Sequence[Job], run_cell, started: Started, finished: Finished) -> None:
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        def new_pool():
            return ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"))

        pool = new_pool()
        pending, running = deque(jobs), {}
        try:
            while pending or running:
                while pending and len(running) < self.jobs:  # submitted as slots free: started() is true
                    cs, sig = pending.popleft()
                    started(cs)
                    running[pool.submit(run_cell_seed, run_cell, cs, sig)] = (cs, time.perf_counter())
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    cs, t0 = running.pop(future)
                    e = future.exception()
                    if isinstance(e, BrokenProcessPool):
                        broken, error = True, WORKER_DIED
                    else:
                        error = describe_error(e) if e is not None else None
                    finished(cs, error, time.perf_counter() - t0)
                if broken:  # every cell-seed of the dead pool is said; the rest go on in a new one
                    for future, (cs, t0) in list(running.items()):
                        finished(cs, WORKER_DIED, time.perf_counter() - t0)
                    running.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = new_pool()
        except BaseException:
            for p in list((getattr(pool, "_processes", None) or {}).values()):  # Ctrl-C: none left running
                p.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Slurm:
    """Slurm jobs through submitit, one per cell-seed, submitted as one job array.

    ``time_min``: each job's time limit; ``gpus_per_cell``: GPUs per job; ``array_parallelism``: jobs
    of the array running at once. A job that Slurm preempts is requeued by submitit and starts its
    cell-seed from an empty folder; one that times out is reported as failed, and its incomplete
    records are cleared and run again the next time the table runs. ``cluster``: submitit's
    ``slurm``, or ``local`` / ``debug`` (its executors on this machine, which the tests use)."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_cell: int = 1
    array_parallelism: int = 16
    cluster: str = "slurm"
    poll_s: float = 5.0
    name = "slurm"

    def run(self, jobs: Sequence[Job], run_cell, out: Path, started: Started, finished: Finished) -> None:
        try:
            import submitit
        except ImportError:
            raise GridError("--executor slurm needs submitit: pip install 'simam2[slurm]'") from None
        if self.time_min < 1 or self.gpus_per_cell < 0 or self.array_parallelism < 1:
            raise GridError("--slurm-time and --slurm-array-parallelism must be at least 1, --slurm-gpus-per-cell at "
                            f"least 0 (got {self.time_min}, {self.array_parallelism}, {self.gpus_per_cell})")
        _check_picklable(run_cell, self.name)
        executor = submitit.AutoExecutor(folder=out / ".submitit" / "%j", cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.time_min, "gpus_per_node": self.gpus_per_cell,
                                  "tasks_per_node": 1, "nodes": 1, "name": "simam2-table",
                                  "slurm_array_parallelism": self.array_parallelism}
        if self.partition:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        submitted = []
        try:
            with executor.batch():
                for cs, sig in jobs:
                    submitted.append((executor.submit(run_cell_seed, run_cell, cs, sig), cs))
            t0 = time.perf_counter()
            for _, cs in submitted:
                started(cs)
            waiting = list(submitted)
            while waiting:
                for job, cs in list(waiting):
                    if not job.done():
                        continue
                    waiting.remove((job, cs))
                    try:
                        job.result()
                    except Exception as e:  # noqa: BLE001 — a failed, timed-out or cancelled job: said
                        error = describe_error(e)
                    else:
                        error = None
                    finished(cs, error, time.perf_counter() - t0)
                if waiting:
                    time.sleep(self.poll_s)
        except BaseException:
            for job, _ in submitted:  # Ctrl-C: the pending and running jobs are cancelled
                if not job.done():
                    job.cancel(check=False)
            raise


def make_executor(executor: "str | Serial | Local | Slurm | None") -> "Serial | Local | Slurm":
    """An executor from its name (with its defaults) or as given; None is ``serial``."""
    if executor is None or executor == "serial":
        return Serial()
    if executor == "local":
        return Local()
    if executor == "slurm":
        return Slurm()
    if isinstance(executor, str):
        raise GridError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return executor


__all__ = ["Serial", "Local", "Slurm", "make_executor", "run_cell_seed", "EXECUTORS"]
