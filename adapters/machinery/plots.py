"""``simam2 plot RECORDS... --out DIR``: PNG plots of one or more runs' records (docs/records.md).

One figure per question a reader asks of a run, every records file overlaid in its own colour:

=====================  ==================================================================================
``ratios.png``         Eq. 11's ratio ρ_df = Σζ/Σ(1−ζ) and OGM-GE's decoupled ratio over the steps, one
                       panel each, with the Pearson r of the two per run in the title (the paper's claim
                       that the decoupling-free ratio tracks the decoupled one)
``coefficients.png``   k1 (modality 1) and k2 (modality 2) over the steps
``metric_<name>.png``  per metric, one panel per split: fused (solid), each modality alone by mean
                       ablation (dashed, dotted; SPEC §8) and the upstream's split heads (thin) over the
                       epochs
``zeta.png``           ζ's distribution per epoch (``zeta`` records), one panel per run, with its mean
``loss.png``           the training loss over the steps
=====================  ==================================================================================

Steps are counted over the whole run (0, 1, 2, … across epochs). A field a run did not record
(null, or absent: no SimAM², no split heads, no modulation) leaves that run out of that plot, and a
plot no run has data for is skipped; both are said, with the reason. A record that breaks the
schema (a line that is no JSON object, a ratio that is a string, a ``zeta`` record without its 21
edges and 20 counts, an ``eval`` without its epoch) is said in one line naming the file, the line
and the field, and left out (a bad field of a ``start`` or ``step`` record alone is left out); the
rest of the file is plotted. Figures are drawn on matplotlib's Agg canvas without pyplot (no global
state, no display) and written atomically.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .records import MixedRunsError, parse_lines, runs
from .stats import ratio_correlation
from .steps import STEP_FIELDS, ZETA_BINS

#: how each series of a metric is drawn: (suffix, line style, width, marker, legend text)
# every kind has a marker: a run with one evaluation draws points, not lines
_METRIC_KINDS = (("", "-", 2.0, "o", "fused"), ("_m1", "--", 1.5, "s", "{m1} alone (mean ablation)"),
                 ("_m2", ":", 2.0, "D", "{m2} alone (mean ablation)"),
                 ("_head_m1", "-.", 0.8, "^", "{m1} head (upstream's)"),
                 ("_head_m2", "-.", 0.8, "v", "{m2} head (upstream's)"))


class PlotError(ValueError):
    """A records file cannot be plotted (missing, not records, bad labels): one line, exit 2."""


@dataclass
class Run:
    """One run's records, split by event."""

    label: str
    path: Path | None
    records: list[dict]
    start: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    zetas: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for r in self.records:
            ev = r.get("event")
            if ev == "start":
                self.start = r
            elif ev == "step":
                self.steps.append(r)
            elif ev == "eval":
                self.evals.append(r)
            elif ev == "zeta":
                self.zetas.append(r)

    @property
    def modalities(self) -> tuple[str, str]:
        m = self.start.get("modalities")
        return (str(m[0]), str(m[1])) if isinstance(m, list) and len(m) == 2 else ("modality 1", "modality 2")

    def step_series(self, name: str) -> np.ndarray:
        """``name`` over the run's steps (NaN where null or absent)."""
        return np.asarray([_num(r.get(name)) for r in self.steps], dtype=float)

    def has(self, name: str) -> bool:
        return any(_num(r.get(name)) == _num(r.get(name)) for r in self.steps)  # some finite value


def _num(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return float("nan")
    return float(value)


# -- reading: every record checked against the schema fields the plots use -----------------------

#: step fields drawn as numbers (docs/records.md): a number or null
_STEP_NUMBERS = STEP_FIELDS


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_epoch(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _numbers(value, n: int) -> bool:
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def _check_record(record, metrics: list[str]) -> tuple[dict | None, list[str]]:
    """(the record as the plots may use it, or None to leave it out; what was wrong, one phrase each)."""
    if not isinstance(record, dict):
        return None, [f"is a JSON {type(record).__name__}, not an object"]
    event = record.get("event")
    if not isinstance(event, str):
        return None, ["field 'event' is missing or not a string"]
    bad: list[str] = []
    out = dict(record)
    if event == "start":
        if "metrics" in out and not (isinstance(out["metrics"], list) and all(isinstance(m, str) for m in out["metrics"])):
            bad.append(f"field 'metrics' must be a list of names, got {out.pop('metrics')!r:.40}")
        if "modalities" in out and not (isinstance(out["modalities"], list) and len(out["modalities"]) == 2):
            bad.append(f"field 'modalities' must name two modalities, got {out.pop('modalities')!r:.40}")
    elif event == "step":
        for name in _STEP_NUMBERS:
            if not _is_number(out.get(name)):
                bad.append(f"field {name!r} must be a number or null, got {out[name]!r:.40}")
                out[name] = None  # that value is left out; the step's other values stay
        if "epoch" in out and not _is_epoch(out["epoch"]):
            bad.append(f"field 'epoch' must be an epoch (int >= 0), got {out.pop('epoch')!r:.40}")
    elif event == "eval":
        if not _is_epoch(out.get("epoch")):
            return None, [f"field 'epoch' must be an epoch (int >= 0), got {out.get('epoch')!r:.40}"]
        if not isinstance(out.get("split"), str):
            return None, [f"field 'split' must be a string, got {out.get('split')!r:.40}"]
        for m in metrics:
            for suffix in ("", "_m1", "_m2", "_head_m1", "_head_m2"):
                if not _is_number(out.get(m + suffix)):
                    bad.append(f"field {m + suffix!r} must be a number or null, got {out[m + suffix]!r:.40}")
                    out[m + suffix] = None
    elif event == "zeta":
        if not _is_epoch(out.get("epoch")):
            return None, [f"field 'epoch' must be an epoch (int >= 0), got {out.get('epoch')!r:.40}"]
        if not _numbers(out.get("edges"), ZETA_BINS + 1):
            return None, [f"field 'edges' must be {ZETA_BINS + 1} finite numbers, got {out.get('edges')!r:.40}"]
        if not _numbers(out.get("counts"), ZETA_BINS) or min(out["counts"]) < 0:
            got = out.get("counts")
            shown = f"{len(got)} values" if isinstance(got, list) else repr(got)[:40]
            return None, [f"field 'counts' must be {ZETA_BINS} counts >= 0, got {shown}"]
    return out, bad


def read_checked(path: Path, warn) -> list[dict]:
    """The records of ``path`` that the plots can use; each bad line or field is passed to ``warn``
    as one line (``PATH line N: ...``) and left out. A torn last line (a killed writer) is dropped
    silently, as :func:`~.records.read_records` drops it."""
    try:
        values, not_json = parse_lines(path, torn_alone=False)
    except (OSError, ValueError) as e:
        raise PlotError(f"{path} is not a records file (JSON lines): {e}") from None
    out: list[dict] = []
    problems = [(line, f"{path} line {line}: {why}; left out") for line, why in not_json]
    metrics: list[str] = []
    for line, record in values:
        checked, bad = _check_record(record, metrics)
        if checked is not None and checked.get("event") == "start":
            metrics = list(checked.get("metrics") or [])
        what = "left out" if checked is None else "that value left out"
        problems += [(line, f"{path} line {line}: {b}; {what}") for b in bad]
        if checked is not None:
            out.append(checked)
    problems = [p for _, p in sorted(problems, key=lambda x: x[0])]
    if not out:
        raise PlotError(f"{path} is not a records file (JSON lines): no line is a record"
                        + (f" (line {problems[0].split(' line ', 1)[1].rsplit(';', 1)[0]})" if problems else ""))
    for p in problems:
        warn(p)
    return out


def _default_label(path: Path) -> str:
    # a table's cells are <cell>/seed<k>/records.jsonl: the folders name the run, the file does not
    if path.stem == "records" and path.parent.name:
        parts = path.absolute().parent.parts
        return "/".join(parts[-2:]) if parts[-1].startswith("seed") else parts[-1]
    return path.stem


def _distinct_labels(paths: list[Path]) -> list[str]:
    """Default labels; where two files would share one (``baseline/seed0.jsonl`` and
    ``simam2/seed0.jsonl``), each takes as many of its folders as it needs to tell them apart."""
    labels = [_default_label(p) for p in paths]
    for _ in range(3):
        clashing = {lab for lab in labels if labels.count(lab) > 1}
        if not clashing:
            break
        for i, p in enumerate(paths):
            if labels[i] in clashing:
                depth = labels[i].count("/") + 2
                parts = p.absolute().with_suffix("").parts
                labels[i] = "/".join(parts[-depth:])
    return labels


def load(paths: Sequence[Path | str], labels: Sequence[str] | None = None, warn=None) -> list[Run]:
    """The runs of ``paths`` (each run of a file that holds several, numbered), labelled; each bad
    record said to ``warn`` (default: standard error) and left out."""
    if warn is None:
        def warn(line):
            print(f"simam2 plot: {line}", file=sys.stderr)
    paths = [Path(p) for p in paths]
    if labels is not None and len(labels) != len(paths):
        raise PlotError(f"--labels gives {len(labels)} label(s) for {len(paths)} records file(s)")
    if labels is None:
        labels = _distinct_labels(paths)
    out: list[Run] = []
    for i, path in enumerate(paths):
        if not path.is_file():
            raise PlotError(f"no records file {path}")
        found = read_checked(path, warn)
        label = labels[i]
        try:
            split = runs(found)
        except MixedRunsError as e:
            raise PlotError(f"{path}: {e}") from None
        for k, records in enumerate(split):
            out.append(Run(label if len(split) == 1 else f"{label} [run {k + 1}]", path, records))
    seen: dict[str, int] = {}
    for run in out:  # two files with the same name: keep the legend unambiguous
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} ({seen[run.label]})"
    return out


# -- figures ---------------------------------------------------------------------------------------

def _figure(rows: int = 1, cols: int = 1, size=(9.0, 5.0), sharex: bool = False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110, layout="constrained")
    axes = fig.subplots(rows, cols, sharex=sharex, squeeze=False)
    return fig, axes


def _colours(runs_: Sequence[Run]) -> dict[str, str]:
    cycle = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    return {r.label: cycle[i % len(cycle)] for i, r in enumerate(runs_)}


@dataclass
class Plot:
    """One figure to write (``fig`` None: skipped, ``why`` says so), and what was left out of it."""

    name: str
    fig: object | None
    why: str = ""
    notes: list[str] = field(default_factory=list)


def _steps_x(run: Run) -> np.ndarray:
    return np.arange(len(run.steps), dtype=float)


def _epoch_axis(ax, runs_: Sequence[Run], below=()) -> None:
    """Epochs along the top of a per-step plot (where each epoch's first step is, in the longest
    run), so a step can be matched with the per-epoch metrics."""
    run = max(runs_, key=lambda r: len(r.steps))
    starts: dict[int, int] = {}
    for i, r in enumerate(run.steps):
        if isinstance(r.get("epoch"), int):
            starts.setdefault(r["epoch"], i)
    if len(starts) < 2:
        return
    every = max(1, math.ceil(len(starts) / 12))  # at most about a dozen labels
    shown = sorted(starts.items())[::every]
    top = ax.secondary_xaxis("top")
    top.set_xticks([s for _, s in shown], labels=[str(e) for e, _ in shown])
    top.set_xlabel("epoch (its first step)", fontsize=8)
    top.tick_params(labelsize=8)
    for a in (ax, *below):
        for _, s in shown:
            a.axvline(s, color="0.85", lw=0.6, zorder=0)


def plot_ratios(runs_: Sequence[Run]) -> Plot:
    names = (("rho_df", "ρ_df = Σζ / Σ(1−ζ)  (Eq. 11)", "no SimAM²"),
             ("rho_decoupled", "decoupled ratio (OGM-GE)", "no split heads"))
    with_any = [r for r in runs_ if r.has("rho_df") or r.has("rho_decoupled")]
    if not with_any:
        return Plot("ratios", None, "no run recorded rho_df or rho_decoupled (no SimAM², no split heads)")
    colours = _colours(runs_)
    fig, axes = _figure(2, 1, size=(9.0, 6.5), sharex=True)
    notes, rs = [], []
    for (name, title, reason), ax in zip(names, axes[:, 0]):
        for run in runs_:
            if not run.has(name):
                notes.append(f"{run.label}: no {name} ({reason})")
                continue
            ax.plot(_steps_x(run), run.step_series(name), color=colours[run.label], lw=1.2,
                    label=run.label, gid=f"{run.label}|{name}")
        ax.axhline(1.0, color="0.6", lw=0.8, ls="--", zorder=0)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    for run in with_any:
        r, n = ratio_correlation(run.records)
        if r is not None:
            rs.append(f"{run.label} {r:.3f} ({n} steps)")
        else:
            missing = [k for k in ("rho_df", "rho_decoupled") if not run.has(k)]
            rs.append(f"{run.label} n/a ({'no ' + ' or '.join(missing) if missing else 'too few or constant values'})")
    from matplotlib.lines import Line2D

    m1, m2 = with_any[0].modalities
    fig.legend(handles=[Line2D([], [], color=colours[r.label], lw=2, label=r.label) for r in with_any],
               loc="outside lower center", fontsize=8, ncols=min(3, len(with_any)))
    _epoch_axis(axes[0, 0], with_any, below=[axes[1, 0]])
    axes[1, 0].set_xlabel("step (counted over all epochs)")
    fig.suptitle(f"Both ratios, {m1} over {m2} (1 = balanced, dashed); Pearson r of the two:\n"
                 + "\n".join(rs), fontsize=9)
    return Plot("ratios", fig, notes=notes)


def plot_coefficients(runs_: Sequence[Run]) -> Plot:
    with_any = [r for r in runs_ if r.has("k1") or r.has("k2")]
    if not with_any:
        return Plot("coefficients", None, "no run recorded k1 or k2 (no modulation)")
    colours = _colours(runs_)
    fig, axes = _figure()
    ax = axes[0, 0]
    notes = [f"{r.label}: no k1/k2 (no modulation)" for r in runs_ if r not in with_any]
    for run in with_any:
        m1, m2 = run.modalities
        for name, ls, mod in (("k1", "-", m1), ("k2", "--", m2)):
            if run.has(name):
                ax.plot(_steps_x(run), run.step_series(name), color=colours[run.label], ls=ls, lw=1.2,
                        label=f"{run.label}: {name} ({mod})", gid=f"{run.label}|{name}")
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":", zorder=0)
    ax.set_xlabel("step (counted over all epochs)")
    ax.set_ylabel("coefficient on the modality's gradient")
    ax.set_title("Modulation coefficients (k1 solid, k2 dashed; 1 = unmodulated)", fontsize=10)
    _epoch_axis(ax, with_any)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncols=2)
    return Plot("coefficients", fig, notes=notes)


def _metric_names(runs_: Sequence[Run]) -> list[str]:
    names: list[str] = []
    for run in runs_:
        for m in run.start.get("metrics") or []:
            if m not in names:
                names.append(m)
    return names


def plot_metric(runs_: Sequence[Run], metric: str) -> Plot:
    from matplotlib.lines import Line2D

    name = f"metric_{metric}"
    splits: list[str] = []
    for run in runs_:
        for e in run.evals:
            if _num(e.get(metric)) == _num(e.get(metric)) and e.get("split") not in splits:
                splits.append(e.get("split"))
    if not splits:
        return Plot(name, None, f"no eval record has {metric}")
    colours = _colours(runs_)
    fig, axes = _figure(1, len(splits), size=(5.5 * len(splits) + 3.5, 4.8))  # + the legends on the right
    notes: list[str] = []
    kinds_used: dict[str, tuple] = {}
    for split, ax in zip(splits, axes[0]):
        for run in runs_:
            evals = [e for e in run.evals if e.get("split") == split]
            if not evals:
                continue
            m1, m2 = run.modalities
            epochs = np.asarray([e.get("epoch", i) for i, e in enumerate(evals)], dtype=float)
            for suffix, ls, lw, marker, text in _METRIC_KINDS:
                y = np.asarray([_num(e.get(metric + suffix)) for e in evals], dtype=float)
                if np.isnan(y).all():
                    if suffix in ("_m1", "_m2"):
                        notes.append(f"{run.label} ({split}): no {metric}{suffix} (per-modality evaluation off)")
                    continue
                ax.plot(epochs, y, color=colours[run.label], ls=ls, lw=lw, marker=marker,
                        ms=4 if not suffix else 3.5, gid=f"{run.label}|{split}|{metric}{suffix}")
                kinds_used.setdefault(suffix, (ls, lw, marker, text.format(m1=m1, m2=m2)))
        ax.set_title(f"{metric} on {split}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    run_handles = [Line2D([], [], color=colours[r.label], lw=2, label=r.label) for r in runs_
                   if any(_num(e.get(metric)) == _num(e.get(metric)) for e in r.evals)]
    kind_handles = [Line2D([], [], color="0.3", ls=ls, lw=lw, marker=marker, ms=4, label=text)
                    for ls, lw, marker, text in kinds_used.values()]
    # beside the panels, never over the curves
    fig.legend(handles=run_handles, loc="outside right upper", fontsize=8, title="run", title_fontsize=8)
    fig.legend(handles=kind_handles, loc="outside right lower", fontsize=8)
    return Plot(name, fig, notes=notes)


def _zeta_means(run: Run, share: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """ζ's mean at each ``zeta`` record: the exact ``zeta_mean`` of that epoch's last step where it
    was recorded (the histogram is of that step), else the mean of the histogram's bin centres."""
    last: dict[int, float] = {}
    for r in run.steps:
        if _num(r.get("zeta_mean")) == _num(r.get("zeta_mean")):
            last[r.get("epoch")] = float(r["zeta_mean"])
    centres = (edges[:-1] + edges[1:]) / 2
    return np.asarray([last.get(z["epoch"], float(sh @ centres)) for z, sh in zip(run.zetas, share)])


def plot_zeta(runs_: Sequence[Run]) -> Plot:
    with_any = [r for r in runs_ if r.zetas]
    if not with_any:
        return Plot("zeta", None, "no zeta records (no SimAM², or ζ not recorded)")
    notes = [f"{r.label}: no zeta records (no SimAM²)" for r in runs_ if not r.zetas]
    cols = min(len(with_any), 3)
    rows = math.ceil(len(with_any) / cols)
    fig, axes = _figure(rows, cols, size=(4.2 * cols + 1.0, 3.6 * rows))
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= len(with_any):
            ax.set_visible(False)
            continue
        run = with_any[i]
        edges = np.asarray(run.zetas[0]["edges"], dtype=float)
        epochs = np.asarray([z["epoch"] for z in run.zetas], dtype=float)
        counts = np.asarray([z["counts"] for z in run.zetas], dtype=float)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        # one column per recorded epoch, ζ upwards; the colour is the share of ζ values in the bin
        image = ax.imshow(share.T, origin="lower", aspect="auto", cmap="viridis", vmin=0,
                          extent=(epochs[0] - 0.5, epochs[-1] + 0.5, edges[0], edges[-1]), gid=f"{run.label}|zeta")
        ax.plot(epochs, _zeta_means(run, share, edges), color="white", lw=1.5, marker="o", ms=3,
                gid=f"{run.label}|zeta_mean")
        ax.axhline(0.5, color="0.8", lw=0.8, ls="--")
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"ζ (weight of {run.modalities[0]})")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.colorbar(image, ax=axes, label="share of ζ values (last step of the epoch)", shrink=0.9)
    fig.suptitle("ζ's distribution per epoch (white: its mean; dashed: 0.5, fixed ζ)", fontsize=10)
    return Plot("zeta", fig, notes=notes)


def plot_loss(runs_: Sequence[Run]) -> Plot:
    with_any = [r for r in runs_ if r.has("loss")]
    if not with_any:
        return Plot("loss", None, "no step record has a loss")
    colours = _colours(runs_)
    fig, axes = _figure()
    ax = axes[0, 0]
    for run in with_any:
        ax.plot(_steps_x(run), run.step_series("loss"), color=colours[run.label], lw=1.0, label=run.label,
                gid=f"{run.label}|loss")
    ax.set_xlabel("step (counted over all epochs)")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss", fontsize=10)
    _epoch_axis(ax, with_any)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncols=min(3, len(with_any)))
    return Plot("loss", fig, notes=[f"{r.label}: no loss" for r in runs_ if r not in with_any])


def figures(runs_: Sequence[Run]) -> list[Plot]:
    """Every plot of ``runs_`` (skipped ones with their reason), in the order they are written."""
    plots = [plot_ratios(runs_), plot_coefficients(runs_)]
    metrics = _metric_names(runs_)
    plots += [plot_metric(runs_, m) for m in metrics] or [Plot("metric", None, "no start record names a metric")]
    plots += [plot_zeta(runs_), plot_loss(runs_)]
    return plots


def save(fig, path: Path) -> None:
    """Write ``fig`` as a PNG through a temporary sibling and a rename: never half a picture."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full --out
        raise PlotError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def write_plots(paths: Sequence[Path | str], out: Path | str, labels: Sequence[str] | None = None,
                say=print, warn=None) -> list[Path]:
    """Plot the runs of ``paths`` into ``out``; returns the PNGs written, says what was skipped."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PlotError(f"--out {out} is a file: name a folder")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError("simam2 plot needs matplotlib: pip install matplotlib") from None
    runs_ = load(paths, labels, warn)
    written = []
    for plot in figures(runs_):
        if plot.fig is None:
            say(f"skipped {plot.name}.png: {plot.why}")
            continue
        path = out / f"{plot.name}.png"
        save(plot.fig, path)
        written.append(path)
        say(f"wrote {path}" + "".join(f"\n  left out {n}" for n in plot.notes))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``simam2 plot RECORDS... --out DIR [--labels L ...]``; 0 on success, 2 on bad input."""
    p = argparse.ArgumentParser(prog="simam2 plot", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+", type=Path, help="records files (JSON lines), overlaid in this order")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.add_argument("--labels", nargs="+", default=None, help="one legend label per records file "
                                                              "(default: the file's name, or a table cell's folder)")
    ns = p.parse_args(argv)
    try:
        write_plots(ns.records, ns.out, ns.labels)
    except PlotError as e:
        print(f"simam2 plot: error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["Run", "Plot", "PlotError", "load", "figures", "write_plots", "main", "plot_ratios",
           "plot_coefficients", "plot_metric", "plot_zeta", "plot_loss"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
