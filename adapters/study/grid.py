"""The study's grid: regimes × fusions × methods × seeds, plus each encoder trained alone, run in
parallel worker processes, resumable.

Every run writes its own records file under ``OUT/runs/`` (docs/records.md). A run whose records end
with an ``end`` record of status ``completed`` is not run again; a file without one (a killed run) is
removed and the run starts over. ``OUT/study.json`` says what the folder holds.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from simam2.adapters.machinery.records import atomic_write_text, is_complete, read_records

from . import data
from .train import Recipe, parse_method, train_alone, train_cell


@dataclass(frozen=True)
class Job:
    regime: str
    fusion: str | None  # None: an encoder trained alone
    method: str         # a method spec, or alone-m1 / alone-m2
    seed: int

    def path(self, out: Path) -> Path:
        if self.fusion is None:
            return out / "runs" / self.regime / "alone" / self.method / f"seed{self.seed}.jsonl"
        return out / "runs" / self.regime / self.fusion / slug(self.method) / f"seed{self.seed}.jsonl"


def slug(method: str) -> str:
    """A folder name for a method spec: ``simam2:zeta=learnable,s=10`` -> ``simam2__zeta-learnable_s-10``."""
    return method.replace(":", "__").replace("=", "-").replace(",", "_")


def plan(regimes, fusions, methods, seeds) -> list[Job]:
    jobs = []
    for regime in regimes:
        for seed in seeds:
            jobs += [Job(regime, None, f"alone-m{k}", seed) for k in (1, 2)]
            jobs += [Job(regime, f, m, seed) for f in fusions for m in methods]
    return jobs


# -- the worker ------------------------------------------------------------------------------------

_PAIRS: dict = {}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _pair(spec: dict, regime: str):
    key = (regime, json.dumps(spec, sort_keys=True))
    if key not in _PAIRS:
        pair = data.load(spec["dataset"], regime, spec.get("views"), spec.get("home"))
        if spec.get("limit"):
            pair = pair.subset(*spec["limit"])
        _PAIRS[key] = pair
    return _PAIRS[key]


def run_job(job: Job, out: Path, spec: dict, recipe: Recipe) -> tuple[Job, float, str | None]:
    """Run one job into its records file; (job, seconds, one-line error or None)."""
    path = job.path(out)
    start = time.perf_counter()
    try:
        pair = _pair(spec, job.regime)
        if job.fusion is None:
            train_alone(pair, int(job.method[-1]), job.seed, recipe, path)
        else:
            train_cell(pair, job.fusion, job.method, job.seed, recipe, path)
    except Exception as e:  # the records say failed; the grid goes on with the other runs
        return job, time.perf_counter() - start, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return job, time.perf_counter() - start, None


# -- the grid --------------------------------------------------------------------------------------

def pending(jobs: list[Job], out: Path) -> list[Job]:
    """The jobs still to run: a complete records file is kept, an incomplete one removed."""
    todo = []
    for job in jobs:
        path = job.path(out)
        if path.exists():
            try:
                if is_complete(read_records(path)):
                    continue
            except (OSError, ValueError):
                pass
            path.unlink()
        todo.append(job)
    return todo


def write_manifest(out: Path, spec: dict, recipe: Recipe, regimes, fusions, methods, seeds) -> None:
    manifest = {"dataset": spec["dataset"], "views": spec.get("views"), "limit": spec.get("limit"),
                "recipe": asdict(recipe), "regimes": list(regimes), "fusions": list(fusions),
                "methods": list(methods), "seeds": list(seeds)}
    path = out / "study.json"
    if path.exists():  # a resumed or extended study: keep what earlier invocations ran
        old = json.loads(path.read_text())
        if old.get("dataset") != spec["dataset"] or old.get("views") != spec.get("views") \
                or old.get("recipe") != manifest["recipe"] or old.get("limit") != manifest["limit"]:
            raise ValueError(f"{out} holds a study of another dataset, views or recipe: use another --out")
        for k in ("regimes", "fusions", "methods", "seeds"):
            manifest[k] = list(dict.fromkeys(old[k] + manifest[k]))
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")


def run_grid(dataset: str, out: Path, regimes, fusions, methods, seeds, recipe: Recipe, views=None,
             jobs: int = 2, limit=None, home=None, log=print) -> dict:
    """Run every job not yet complete; returns counts and wall time. Failures are listed, not raised."""
    for m in methods:
        parse_method(m)  # a typo fails now, not in a worker
    out = Path(out)
    spec = {"dataset": dataset, "views": list(views) if views else None, "limit": list(limit) if limit else None,
            "home": str(home) if home else None}
    for regime in regimes:
        data._regime(dataset, regime)
    # load once here: downloads and feature caches happen before the workers start
    for regime in regimes:
        data.load(dataset, regime, views, home)
    write_manifest(out, spec, recipe, regimes, fusions, methods, seeds)
    every = plan(regimes, fusions, methods, seeds)
    todo = pending(every, out)
    log(f"study {dataset}: {len(every)} runs, {len(every) - len(todo)} complete already, {len(todo)} to run "
        f"on {jobs} process{'es' if jobs > 1 else ''}")
    start = time.perf_counter()
    failed = []
    done = 0
    if todo:
        if jobs <= 1:
            _init_worker(1)
            results = (run_job(j, out, spec, recipe) for j in todo)
            iterator = results
        else:
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                       initializer=_init_worker, initargs=(1,))
            futures = [pool.submit(run_job, j, out, spec, recipe) for j in todo]
            iterator = (f.result() for f in as_completed(futures))
        try:
            for job, seconds, error in iterator:
                done += 1
                what = f"{job.regime} {job.fusion or 'alone'} {job.method} seed {job.seed}"
                if error:
                    failed.append((what, error))
                    log(f"[{done}/{len(todo)}] {what}: FAILED {error}")
                else:
                    log(f"[{done}/{len(todo)}] {what}: {seconds:.1f}s")
        finally:
            if jobs > 1:
                pool.shutdown(cancel_futures=True)
    wall = time.perf_counter() - start
    return {"runs": len(every), "ran": done, "failed": failed, "wall_s": wall, "jobs": jobs,
            "cpus": os.cpu_count()}
