"""Running a table: every cell-seed not already complete, under a lock on the out folder, then the table.

:func:`run_table` runs the cell-seeds seed by seed (so an interrupted table already holds whole
seeds) on an executor (./executors.py: one after another, in worker processes, or as Slurm jobs),
under a progress bar with the time left, and then aggregates and writes the table.

**Resume.** A cell-seed whose records file is complete (an ``end`` record with status
``completed``) and whose ``cell.json`` says it was run with the same row, column, seed and table
options is not run again. One that crashed, was interrupted, or ended mid-epoch (no ``end`` record)
is run again from scratch: its folder is cleared first. ``fresh=True`` reruns every cell-seed.
The cell folders and their ``cell.json`` are the same on every executor, so a table started on one
resumes on another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from ..records import is_complete
from .aggregate import Result, aggregate, last_run
from .declare import CellSeed, GridError, Table, cell_seeds, made_with, seed_list, signature
from .executors import Local, Serial, Slurm, make_executor
from .render import write_outputs


def is_done(table: Table, cs: CellSeed) -> bool:
    """Whether ``cs`` completed with this table's options (so a resumed table need not run it)."""
    records = last_run(cs.records)
    return records is not None and is_complete(records) and made_with(table, cs, missing=False)


def _bar(total: int, title: str, enabled: bool):
    """tqdm's bar over the cell-seeds to run (its estimate of the time left counts only those)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=title, unit="run", file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def folder_lock(out: Path, what: str = "table"):
    """An exclusive lock on ``out`` for one run of a table or study: a second one on the same folder
    is refused in one line (GridError) instead of deleting the first one's cells in flight. The lock
    is the kernel's (flock), so a killed run releases it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise GridError(f"{out} is in use by another {what} run (pid {holder}); wait for it to end, "
                            "or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def run_table(table: Table, out: Path | str, seeds: int | Sequence[int] = 1, fresh: bool = False,
              tensorboard: Path | str | None = None, progress: bool = True, say=None,
              executor: "str | Serial | Local | Slurm | None" = None) -> Result:
    """Run every cell-seed not already complete (all with ``fresh``) on ``executor`` (./executors.py;
    default ``serial``), then aggregate and write the table (text, Markdown, CSV, JSON) into ``out``;
    returns the :class:`Result`.

    A failing cell-seed does not stop the table: it is said, shown as missing, and run again next
    time. Ctrl-C stops it (the executor's pending and running cell-seeds are cancelled); the table of
    what completed is still written. The folder is locked for the run (:func:`folder_lock`); a
    cell-seed made with other options is never averaged in.
    """
    out = Path(out).absolute()
    executor = make_executor(executor)
    with folder_lock(out):
        return _run_table(table, out, seeds, fresh, tensorboard, progress, say, executor)


def _run_table(table, out, seeds, fresh, tensorboard, progress, say, executor) -> Result:
    seeds = seed_list(seeds)
    try:
        _, failed = run_cells(table, out, seeds, fresh, tensorboard, progress, say, executor)
    except KeyboardInterrupt:
        (say or (lambda s: print(s, file=sys.stderr)))(
            "interrupted: writing the table of the runs that completed; run the table again to resume")
        write_outputs(aggregate(table, out, seeds), out)
        raise
    result = aggregate(table, out, seeds)
    result.failed = failed
    write_outputs(result, out)
    return result


def run_cells(table: Table, out: Path, seeds: Sequence[int], fresh: bool = False, tensorboard: Path | None = None,
              progress: bool = True, say=None, executor: "Serial | Local | Slurm | None" = None,
              label: str | None = None) -> tuple[int, list[str]]:
    """Run every cell-seed of ``table`` not already complete (all with ``fresh``) on ``executor``;
    return how many ran and the names of those that failed; the caller holds the folder's lock (:func:`folder_lock`)
    and makes the table (:func:`run_table`) or its own report (the study) from the records."""
    executor = make_executor(executor)
    tb = None if tensorboard is None else Path(tensorboard).absolute()
    all_runs = cell_seeds(table, out, seeds, tb)
    todo = [cs for cs in all_runs if fresh or not is_done(table, cs)]
    bar = _bar(len(todo), label or table.title.split("(")[0].strip()[:40], progress)
    say = say or (bar.write if bar is not None else (lambda s: print(s, file=sys.stderr)))
    if len(todo) < len(all_runs):
        say(f"{len(all_runs) - len(todo)} of {len(all_runs)} runs already complete in {out}, not run again "
            "(--fresh reruns them)")
    failed: list[str] = []
    done = [0]
    t_start = time.perf_counter()

    def started(cs: CellSeed) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{cs.cell} seed {cs.seed}")

    def finished(cs: CellSeed, error: str | None, seconds: float) -> None:
        name = f"{cs.cell} seed {cs.seed}"
        done[0] += 1
        if error is not None:
            failed.append(name)
            say(f"{name} failed: {error}")
        else:
            records = last_run(cs.records)
            if records is None or not is_complete(records):
                failed.append(name)
                say(f"{name} left no completed records in {cs.records}")
            elif bar is None:
                left = (time.perf_counter() - t_start) / done[0] * (len(todo) - done[0])
                say(f"[{label or 'run'} {done[0]}/{len(todo)}] {name} done ({seconds:.0f} s; about "
                    f"{left / 60:.0f} min left)")
        if bar is not None:
            bar.update(1)

    try:
        executor.run([(cs, signature(table, cs)) for cs in todo], table.run_cell, out, started, finished)
    finally:
        if bar is not None:
            bar.close()
    return done[0], failed


__all__ = ["run_table", "run_cells", "is_done", "folder_lock"]
