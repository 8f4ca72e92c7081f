"""The study's grid: regimes × fusions × methods × seeds, plus each encoder trained alone, run in
parallel worker processes, resumable.

Every run writes its own records file under ``OUT/runs/`` (docs/records.md). A run whose records end
with an ``end`` record of status ``completed`` is not run again; a file without one (a killed run) is
removed and the run starts over. ``OUT/study.json`` says what the folder holds, protocol included
(a folder never mixes two protocols); under SPEC §9's protocol ``OUT/selection.json`` holds each
row's chosen setting, read from its tuning runs (``runs/<regime>/<fusion>/<method>/tune/``).
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from simam2.adapters.machinery.records import atomic_write_text, is_complete, read_records

from . import data
from .protocol import Protocol, select
from .train import Recipe, parse_method, train_alone, train_cell


@dataclass(frozen=True)
class Job:
    regime: str
    fusion: str | None  # None: an encoder trained alone
    method: str         # a method spec, or alone-m1 / alone-m2
    seed: int
    lr: float | None = None     # SPEC §9: the setting a tuning run tries, or the one a final run uses
    alpha: float | None = None
    tune: bool = False

    def path(self, out: Path) -> Path:
        base = out / "runs" / self.regime / ("alone" if self.fusion is None else self.fusion) / slug(self.method)
        if self.tune:
            base = base / "tune" / setting_name(self.lr, self.alpha)
        return base / f"seed{self.seed}.jsonl"

    def describe(self) -> str:
        what = f"{self.regime} {self.fusion or 'alone'} {self.method} seed {self.seed}"
        return what + (f" [tune {setting_name(self.lr, self.alpha)}]" if self.tune else "")


_SAFE = re.compile(r"[A-Za-z0-9._+-]+")


def slug(method: str) -> str:
    """A folder name for a method spec: ``simam2:zeta=learnable,s=10`` -> ``simam2__zeta-learnable_s-10``.
    Only letters, digits and ``. _ + -`` survive into a path (a spec is validated before any path is
    made from it; this refuses anything that still could leave the study's folder)."""
    name = method.replace(":", "__").replace("=", "-").replace(",", "_")
    if not _SAFE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"method {method!r} cannot name a folder (letters, digits, . _ + - only)")
    return name


def setting_name(lr: float | None, alpha: float | None) -> str:
    return f"lr-{lr:g}" + ("" if alpha is None else f"_alpha-{alpha:g}")


def is_modulated(method: str) -> bool:
    return not method.startswith("alone-") and parse_method(method).modulation != "none"


def tuning_plan(regimes, fusions, methods, protocol: Protocol) -> list[Job]:
    jobs = []
    for regime in regimes:
        for k in (1, 2):
            jobs += [Job(regime, None, f"alone-m{k}", s, lr, a, True)
                     for lr, a in protocol.settings(False) for s in protocol.tuning_seeds]
        for f in fusions:
            for m in methods:
                jobs += [Job(regime, f, m, s, lr, a, True)
                         for lr, a in protocol.settings(is_modulated(m)) for s in protocol.tuning_seeds]
    return jobs


def plan(regimes, fusions, methods, seeds, selection: dict | None = None) -> list[Job]:
    """The final runs; with ``selection`` (SPEC §9) each carries its row's chosen lr and α."""
    jobs = []
    for regime in regimes:
        for seed in seeds:
            for fusion, method in [(None, f"alone-m{k}") for k in (1, 2)] + [(f, m) for f in fusions for m in methods]:
                chosen = (selection or {}).get(row_key(regime, fusion, method))
                lr, alpha = (chosen["lr"], chosen["alpha"]) if chosen else (None, None)
                jobs.append(Job(regime, fusion, method, seed, lr, alpha))
    return jobs


def row_key(regime: str, fusion: str | None, method: str) -> str:
    return f"{regime}/{fusion or 'alone'}/{method}"


# -- the worker ------------------------------------------------------------------------------------

_PAIRS: dict = {}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _pair(spec: dict, regime: str):
    key = (regime, json.dumps(spec, sort_keys=True))
    if key not in _PAIRS:
        pair = data.load(spec["dataset"], regime, spec.get("views"), spec.get("home"), val=spec.get("val", False))
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

def _made_with(records: list[dict], job: Job) -> bool:
    """Whether a complete run was made with the job's setting (a final run whose row's selection
    has changed since, e.g. after tuning seeds were added, is run again)."""
    if job.lr is None:
        return True
    opts = (records[0].get("upstream_options") or {}) if records else {}
    if opts.get("lr") != job.lr:
        return False
    return job.alpha is None or not is_modulated(job.method) or opts.get("alpha") == job.alpha


def pending(jobs: list[Job], out: Path) -> list[Job]:
    """The jobs still to run: a complete records file made with the job's setting is kept, any other
    removed."""
    todo = []
    for job in jobs:
        path = job.path(out)
        if path.exists():
            try:
                records = read_records(path)
                if is_complete(records) and _made_with(records, job):
                    continue
            except (OSError, ValueError):
                pass
            path.unlink()
        todo.append(job)
    return todo


def _normalise_views(dataset: str, views):
    if dataset != "mfeat":
        return list(views) if views else None
    return list(views) if views else list(data.DEFAULT_VIEWS)


def read_manifest(out: Path) -> dict | None:
    path = out / "study.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        return manifest
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read as a study manifest ({e}); move it away or use another --out") from None


def write_manifest(out: Path, spec: dict, protocol: Protocol, regimes, fusions, methods) -> None:
    manifest = {"dataset": spec["dataset"], "views": spec.get("views"), "limit": spec.get("limit"),
                "protocol": protocol.plain(), "regimes": list(regimes), "fusions": list(fusions),
                "methods": list(methods), "seeds": list(protocol.seeds)}
    old = read_manifest(out)
    if old is not None:  # a resumed or extended study: keep what earlier invocations ran
        if old.get("dataset") != spec["dataset"] or old.get("views") != spec.get("views") \
                or old.get("limit") != manifest["limit"]:
            raise ValueError(f"{out} holds a study of another dataset, views or --limit: use another --out")
        if old.get("protocol") != manifest["protocol"]:
            raise ValueError(f"{out} holds a study of another protocol ({(old.get('protocol') or {}).get('name')}, "
                             "or other epochs or settings): results of two protocols are never mixed; use another --out")
        for k in ("regimes", "fusions", "methods", "seeds"):
            manifest[k] = list(dict.fromkeys(old[k] + manifest[k]))
    atomic_write_text(out / "study.json", json.dumps(manifest, indent=1) + "\n")


def prepare_out(out: Path) -> Path:
    """The study's folder, made if need be; a file there, or a folder that cannot be written, is one
    line (ValueError)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: name a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written: {e.strerror or e}") from None
    return out


def read_selection(out: Path, regimes, fusions, methods, protocol: Protocol) -> dict:
    """Each row's chosen setting (SPEC §9) from its tuning runs' records; validation accuracy only.
    A row with no complete tuning run is left out (its final runs wait)."""
    chosen = {}
    rows = [(r, None, f"alone-m{k}") for r in regimes for k in (1, 2)]
    rows += [(r, f, m) for r in regimes for f in fusions for m in methods]
    for regime, fusion, method in rows:
        modulated = fusion is not None and is_modulated(method)
        scores, epochs = {}, {}
        for lr, alpha in protocol.settings(modulated):
            for seed in protocol.tuning_seeds:
                path = Job(regime, fusion, method, seed, lr, alpha, True).path(out)
                note = _early_stopping(path)
                if note is not None:
                    scores.setdefault((lr, alpha), []).append(note["val_acc"])
                    epochs.setdefault((lr, alpha), []).append(note["best_epoch"] + 1)
        complete = {k: v for k, v in scores.items() if len(v) == len(protocol.tuning_seeds)}
        if len(complete) < len(protocol.settings(modulated)):
            continue
        sel = select(complete)
        sel["epochs"] = sum(epochs[(sel["lr"], sel["alpha"])]) / len(epochs[(sel["lr"], sel["alpha"])])
        chosen[row_key(regime, fusion, method)] = sel
    return chosen


def _early_stopping(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        records = read_records(path)
    except (OSError, ValueError):
        return None
    if not is_complete(records):
        return None
    notes = [r for r in records if r.get("event") == "note" and r.get("what") == "early_stopping"]
    return notes[-1] if notes else None


def _execute(todo: list[Job], out: Path, spec: dict, protocol: Protocol, jobs: int, log, label: str) -> tuple[int, list]:
    failed, done = [], 0
    if not todo:
        return 0, failed
    recipes = [protocol.recipe(j.lr, j.alpha, score_test=not j.tune) for j in todo]
    if jobs <= 1:
        _init_worker(1)
        iterator = (run_job(j, out, spec, r) for j, r in zip(todo, recipes))
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                   initializer=_init_worker, initargs=(1,))
        futures = [pool.submit(run_job, j, out, spec, r) for j, r in zip(todo, recipes)]
        iterator = (f.result() for f in as_completed(futures))
    start = time.perf_counter()
    try:
        for job, seconds, error in iterator:
            done += 1
            left = (time.perf_counter() - start) / done * (len(todo) - done)
            if error:
                failed.append((job.describe(), error))
                log(f"[{label} {done}/{len(todo)}] {job.describe()}: FAILED {error}")
            else:
                log(f"[{label} {done}/{len(todo)}] {job.describe()}: {seconds:.1f}s (about {left / 60:.0f} min left)")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return done, failed


def run_grid(dataset: str, out: Path, regimes, fusions, methods, protocol: Protocol, views=None,
             jobs: int = 2, limit=None, home=None, log=print) -> dict:
    """Run every job not yet complete — SPEC §9's tuning runs, then each row's final runs with its
    chosen setting — and return counts and wall time. Failures are listed, not raised."""
    for m in methods:
        parse_method(m)  # a typo or a bad value fails now, before any path is made from it
        slug(m)
    views = _normalise_views(dataset, views)
    for regime in regimes:
        data._regime(dataset, regime)
    out = prepare_out(out)
    spec = {"dataset": dataset, "views": views, "limit": list(limit) if limit else None,
            "home": str(home) if home else None, "val": protocol.tuned}
    write_manifest(out, spec, protocol, regimes, fusions, methods)
    # load once here: downloads and feature caches happen before the workers start
    for regime in regimes:
        data.load(dataset, regime, views, home, val=protocol.tuned)
    start = time.perf_counter()
    ran, failed = 0, []
    selection = None
    if protocol.tuned:
        every = tuning_plan(regimes, fusions, methods, protocol)
        todo = pending(every, out)
        log(f"study {dataset} ({protocol.name}): {len(every)} tuning runs, {len(every) - len(todo)} complete "
            f"already, {len(todo)} to run on {jobs} process{'es' if jobs > 1 else ''}")
        n, f = _execute(todo, out, spec, protocol, jobs, log, "tune")
        ran, failed = ran + n, failed + f
        selection = read_selection(out, regimes, fusions, methods, protocol)
        old = out / "selection.json"
        merged = {}
        if old.exists():
            try:
                merged = json.loads(old.read_text())
            except (OSError, ValueError):
                merged = {}
        merged.update(selection)
        atomic_write_text(old, json.dumps(merged, indent=1, sort_keys=True) + "\n")
    every = plan(regimes, fusions, methods, protocol.seeds, selection)
    if selection is not None:
        waiting = [j for j in every if j.lr is None]
        every = [j for j in every if j.lr is not None]
        if waiting:
            log(f"{len(waiting)} final runs wait for their row's tuning runs (some failed); rerun to resume")
    todo = pending(every, out)
    log(f"study {dataset}: {len(every)} final runs, {len(every) - len(todo)} complete already, {len(todo)} to run")
    n, f = _execute(todo, out, spec, protocol, jobs, log, "final")
    ran, failed = ran + n, failed + f
    wall = time.perf_counter() - start
    return {"runs": len(every), "ran": ran, "failed": failed, "wall_s": wall, "jobs": jobs,
            "cpus": os.cpu_count()}
