"""The study's grid: regimes × fusions × methods × seeds, plus each encoder trained alone, as two
tables on the engine every table uses (``machinery/tables``): SPEC §9's tuning runs, then the final
runs with each row's chosen setting.

Every run is a cell-seed with its own folder ``OUT/runs/<regime>/<fusion>/<method>/[tune/<setting>/]
seed<k>/`` holding ``records.jsonl`` (docs/records.md) and ``cell.json`` (what it was made with:
method, regime and fusion, seed, the protocol, and a final run's chosen lr and α). A run whose records
end with an ``end`` record of status ``completed`` and whose ``cell.json`` matches is not run again;
any other is cleared and run from scratch (a final run whose row's choice changed, e.g. after tuning
seeds were added, too). ``OUT/study.json`` says what the folder holds, protocol included (a folder
never mixes two protocols); ``OUT/selection.json`` holds each row's chosen setting, read from its
tuning runs' validation accuracy alone. A folder of the earlier layout (``seed<k>.jsonl`` files) is
moved into this one first (:func:`migrate_layout`). One study at a time per folder (a lock).
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from simam2.adapters.machinery.records import atomic_write_text, is_complete, plain, read_records
from simam2.adapters.machinery.tables import Column, Local, Row, Serial, Table, folder_lock
from simam2.adapters.machinery.tables.aggregate import last_run
from simam2.adapters.machinery.tables.declare import cell_seeds, signature
from simam2.adapters.machinery.tables.run import run_cells

from . import data
from .protocol import Protocol, select
from .train import parse_method, train_alone, train_cell


@dataclass(frozen=True)
class Job:
    regime: str
    fusion: str | None  # None: an encoder trained alone
    method: str         # a method spec, or alone-m1 / alone-m2
    seed: int
    lr: float | None = None     # SPEC §9: the setting a tuning run tries, or the one a final run uses
    alpha: float | None = None
    tune: bool = False

    def column(self) -> str:
        """The cell's column key (and the folder under ``runs/`` its method's folders lie in)."""
        key = f"{self.regime}/{'alone' if self.fusion is None else self.fusion}"
        return key + (f"/tune/{setting_name(self.lr, self.alpha)}" if self.tune else "")

    def folder(self, out: Path) -> Path:
        base = Path(out) / "runs" / self.regime / ("alone" if self.fusion is None else self.fusion) / slug(self.method)
        if self.tune:
            base = base / "tune" / setting_name(self.lr, self.alpha)
        return base / f"seed{self.seed}"

    def path(self, out: Path) -> Path:
        """The run's records file."""
        return self.folder(out) / "records.jsonl"

    def cell_options(self) -> dict:
        """What a run depends on beyond the study's options: a final run's chosen lr (and α where
        the row is modulated), so that a run made with an earlier choice is rerun."""
        if self.tune or self.lr is None:
            return {}
        out = {"lr": self.lr}
        if self.alpha is not None and is_modulated(self.method):
            out["alpha"] = self.alpha
        return out

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


# -- the cell -------------------------------------------------------------------------------------

_PAIRS: dict = {}


def _pair(spec: dict, regime: str):
    key = (regime, json.dumps(spec, sort_keys=True))
    if key not in _PAIRS:
        pair = data.load(spec["dataset"], regime, spec.get("views"), spec.get("home"), val=spec.get("val", False))
        if spec.get("limit"):
            pair = pair.subset(*spec["limit"])
        _PAIRS[key] = pair
    return _PAIRS[key]


def run_study_cell(cs, spec: dict, protocol: Protocol, jobs: dict) -> None:
    """One run of the study into ``cs.records``, in whichever process the executor gives it: the job
    of ``(cs.row.label, cs.column.key)`` with ``cs.seed``, one torch thread (every run of a study the
    same, so that its numbers do not depend on the executor)."""
    import torch

    torch.set_num_threads(1)
    job = replace(jobs[(cs.row.label, cs.column.key)], seed=cs.seed)
    recipe = protocol.recipe(job.lr, job.alpha, score_test=not job.tune)
    pair = _pair(spec, job.regime)
    if job.fusion is None:
        train_alone(pair, int(job.method[-1]), job.seed, recipe, cs.records)
    else:
        train_cell(pair, job.fusion, job.method, job.seed, recipe, cs.records)


def study_options(spec: dict, protocol: Protocol) -> dict:
    """What every run of a study depends on: the dataset, its views and limit, the protocol."""
    return json.loads(json.dumps(plain({"dataset": spec["dataset"], "views": spec.get("views"),
                                        "limit": spec.get("limit"), "protocol": protocol.plain()})))


def study_table(title: str, jobs: list[Job], spec: dict, protocol: Protocol) -> tuple[Table, list[int]]:
    """The runs ``jobs`` as one table on the engine: a row per method, a column per regime × fusion
    (× tuning setting), the cells the jobs name; returns it with its seeds."""
    templates = {}
    for j in jobs:
        templates.setdefault((j.method, j.column()), replace(j, seed=0))
    rows = [Row(m) for m in dict.fromkeys(m for m, _ in templates)]
    columns = [Column(c, c) for c in dict.fromkeys(c for _, c in templates)]
    seeds = sorted({j.seed for j in jobs})
    wanted = {(j.method, j.column(), j.seed) for j in jobs}
    if len(wanted) != len(templates) * len(seeds):
        raise ValueError("every cell of the study runs the same seeds")

    def folder_of(row, column, seed):
        return replace(templates[(row.label, column.key)], seed=seed).folder(Path("."))

    table = Table(title=title, rows=rows, columns=columns, cells=list(templates),
                  run_cell=functools.partial(run_study_cell, spec=spec, protocol=protocol, jobs=templates),
                  options=study_options(spec, protocol), folder_of=folder_of,
                  cell_options=lambda row, column: templates[(row.label, column.key)].cell_options())
    return table, seeds


def migrate_layout(out: Path, spec: dict, protocol: Protocol) -> int:
    """Move the runs of the earlier layout (``runs/.../seed<k>.jsonl``) into their folders
    (``runs/.../seed<k>/records.jsonl`` with the ``cell.json`` the engine would have written: its
    :func:`~machinery.tables.declare.signature` in a one-run table); an incomplete one is removed (it
    would be run again anyway). Returns how many were moved. The folder's study must be ``spec``'s
    under ``protocol``."""
    moved = 0
    for path in sorted((Path(out) / "runs").rglob("seed*.jsonl")):
        m = re.fullmatch(r"seed(-?\d+)\.jsonl", path.name)
        if m is None or not path.is_file():
            continue
        try:
            records = read_records(path)
        except (OSError, ValueError):
            records = []
        if not records or not is_complete(records):
            path.unlink()
            continue
        job = _job_of(path, Path(out), records, int(m.group(1)))
        folder = job.folder(out)
        if (folder / "records.jsonl").exists():
            path.unlink()  # the new layout's run of the same job wins
            continue
        folder.mkdir(parents=True, exist_ok=True)
        table, _ = study_table("migrated run", [job], spec, protocol)
        cs = cell_seeds(table, Path(out), [job.seed])[0]
        atomic_write_text(folder / "cell.json", json.dumps(signature(table, cs), indent=1))
        os.replace(path, folder / "records.jsonl")
        moved += 1
    return moved


def _job_of(path: Path, out: Path, records: list[dict], seed: int) -> Job:
    parts = path.relative_to(out / "runs").parts  # regime, fusion, method[, tune, setting], file
    opts = records[0].get("upstream_options") or {}
    regime, fusion, method = parts[0], (None if parts[1] == "alone" else parts[1]), opts.get("method")
    tune = len(parts) > 4 and parts[3] == "tune"
    lr = opts.get("lr") if (tune or opts.get("patience") is not None) else None
    alpha = opts.get("alpha") if (tune or lr is not None) and fusion is not None and is_modulated(method) else None
    return Job(regime, fusion, method, seed, lr, alpha, tune)


def _normalise_views(dataset: str, views):
    if dataset != "mfeat":
        return list(views) if views else None
    return list(data.check_mfeat_views(views)) if views else list(data.DEFAULT_VIEWS)


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
    """A complete run's early-stopping note (its best validation accuracy and epoch), or None."""
    records = last_run(path)
    if records is None or not is_complete(records):
        return None
    notes = [r for r in records if r.get("event") == "note" and r.get("what") == "early_stopping"]
    return notes[-1] if notes else None


def run_grid(dataset: str, out: Path, regimes, fusions, methods, protocol: Protocol, views=None,
             jobs: int = 2, limit=None, home=None, log=print, executor=None, progress: bool = False) -> dict:
    """Run every job not yet complete — SPEC §9's tuning runs, then each row's final runs with its
    chosen setting — and return counts and wall time. Failures are listed, not raised. ``executor``:
    the engine's (default: ``jobs`` reused worker processes, or this process for one job)."""
    for m in methods:
        parse_method(m)  # a typo or a bad value fails now, before any path is made from it
        slug(m)
    views = _normalise_views(dataset, views)
    for regime in regimes:
        data._regime(dataset, regime)
    out = prepare_out(out).absolute()
    spec = {"dataset": dataset, "views": views, "limit": list(limit) if limit else None,
            "home": str(home) if home else None, "val": protocol.tuned}
    if executor is None:
        executor = Serial() if jobs <= 1 else Local(jobs=jobs, reuse=True)
    with folder_lock(out, "study"):
        write_manifest(out, spec, protocol, regimes, fusions, methods)
        moved = migrate_layout(out, spec, protocol)
        if moved:
            log(f"{moved} runs of the earlier layout moved into their folders (runs/.../seed<k>/records.jsonl)")
        # load once here: downloads and feature caches happen before the workers start
        for regime in regimes:
            data.load(dataset, regime, views, home, val=protocol.tuned)
        start = time.perf_counter()
        failed: list[str] = []
        ran = 0
        selection = None
        if protocol.tuned:
            every = tuning_plan(regimes, fusions, methods, protocol)
            table, seeds = study_table(f"study {dataset} tuning", every, spec, protocol)
            log(f"study {dataset} ({protocol.name}): {len(every)} tuning runs on {executor.name}"
                + (f" ({executor.jobs} processes)" if isinstance(executor, Local) else ""))
            n, f = run_cells(table, out, seeds, executor=executor, progress=progress, say=log, label="tune")
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
        log(f"study {dataset}: {len(every)} final runs")
        if every:
            table, seeds = study_table(f"study {dataset}", every, spec, protocol)
            n, f = run_cells(table, out, seeds, executor=executor, progress=progress, say=log, label="final")
            ran, failed = ran + n, failed + f
        wall = time.perf_counter() - start
    return {"runs": len(every), "ran": ran, "failed": failed, "wall_s": wall, "executor": executor.name,
            "jobs": getattr(executor, "jobs", 1), "cpus": os.cpu_count()}
