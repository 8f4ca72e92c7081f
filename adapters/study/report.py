"""The study's report: ``results.json`` (one row per cell, every seed's numbers), Markdown and CSV
tables and small PNG figures, all read back from the runs' records (docs/records.md).

results.json schema (``format`` 2)::

    {"format": 2, "dataset", "modalities": [m1, m2], "views", "pairing", "limit",
     "protocol": {"name": "tuned" | "tuned-quick" | "fixed", "max_epochs", "seeds", "lrs", "alphas",
                  "tuning_seeds", "patience", "lr_step", "modulate", "batch", ...},
     "cells": [{"regime", "fusion", "method", "label", "control": bool, "counted": bool,
                "seeds": [s, ...],
                "values": {"acc": {seed: v}, "acc_m1", "acc_m2", "acc_head_m1", "acc_head_m2",
                           "probe_m1", "probe_m2", "val_acc", "best_epoch", "epochs_run", "ratio_r",
                           "rho_df", "rho_decoupled", "k1", "k2", "zeta_mean", "r"},  # per seed
                "summary": {name: {"mean", "std", "n"}},        # mean ± std over seeds (ddof 1)
                "selection": {"lr", "alpha", "epochs", "val_acc", "n", "scores"} | null,  # SPEC §9's choice
                "vs_baseline": COMPARISON | null,               # acc − the Baseline's acc, paired by seed
                "vs_baseline_all": {name: COMPARISON} | null}],  # the same for each accuracy and probe
     "comparisons": [COMPARISON + {"kind", "regime", "fusion", "a", "b", "metric", "family", "counted"}],
     "claims": [{"claim": 1..4, "text", "verdicts": {...}, "cells": [...], ...}],
     "alone": [{"regime", "modality": 1 | 2, "values": {"acc", "probe", "val_acc"}, "selection", "summary"}]}

    COMPARISON = {"mean", "std", "n", "ci95": [lo, hi], "p", "p_holm", "p_equiv", "margin", "verdict",
                  "note"?}   # b − a; p, p_holm, p_equiv null where undefined (a constant difference)
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from simam2.adapters.machinery.records import atomic_write_text, is_complete, plain, read_records, runs
from simam2.adapters.machinery.stats import ratio_correlation, summarize

from .verdicts import CONTROL_METHODS, claims, compare, counted, is_control

VALUES = ("acc", "acc_m1", "acc_m2", "acc_head_m1", "acc_head_m2", "probe_m1", "probe_m2")
STEP_MEANS = ("rho_df", "rho_decoupled", "k1", "k2", "zeta_mean", "r")
FUSION_ORDER = ("sum", "concat", "film", "late")
METHOD_ORDER = ("baseline", "simam2", "simam2:u=vanilla", "ogm-ge", "ogm-ge+simam2", "ogm-ge+simam2:u=vanilla",
                "df+simam2") + CONTROL_METHODS
LABELS = {"baseline": "Baseline", "simam2": "+SimAM² (eq4)", "simam2:u=vanilla": "+SimAM² (vanilla)",
          "ogm-ge": "+OGM-GE", "ogm-ge+simam2": "+OGM-GE +SimAM² (eq4)",
          "ogm-ge+simam2:u=vanilla": "+OGM-GE +SimAM² (vanilla)", "df+simam2": "+DF +SimAM²",
          "temperature": "control: Baseline × eq4 gain", "simam2:energy=simam_u": "control: SimAM on U",
          "simam2:energy=nodeg": "control: Eq. 7 without (1−r)e_U"}
FUSION_LABELS = {"sum": "Summation", "concat": "Concatenation", "film": "FiLM", "late": "Late fusion"}


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def run_values(records: list[dict]) -> dict:
    """One run's numbers: the eval record's accuracies, the probes, the ratio correlation and step means."""
    out: dict = {}
    for r in records:
        if r.get("event") == "eval" and r.get("split", "test") == "test":
            out.update({k: r.get(k) for k in VALUES if k in r})
        elif r.get("event") == "note" and r.get("what") == "linear_probe":
            out.update({k: v for k, v in r.items() if k.startswith("probe_")})
        elif r.get("event") == "note" and r.get("what") == "early_stopping":
            out.update(val_acc=r.get("val_acc"), best_epoch=r.get("best_epoch"), epochs_run=r.get("epochs_run"))
    steps = [r for r in records if r.get("event") == "step"]
    for k in STEP_MEANS:
        out[k] = _mean(s.get(k) for s in steps)
    out["ratio_r"] = ratio_correlation(records)[0]
    return out


def _order(items, order):
    return sorted(items, key=lambda x: (order.index(x) if x in order else len(order), x))


def collect(out: Path) -> dict:
    """Read every complete run under ``out/runs`` into results.json's structure."""
    out = Path(out)
    manifest = _read_json(out / "study.json")
    if not isinstance(manifest, dict):
        raise ValueError(f"{out} holds no study (no study.json): run simam2 study with --out {out} first")
    cells: dict = defaultdict(dict)
    alone: dict = defaultdict(dict)
    modalities, pairing = None, None
    incomplete = []
    if not any((out / "runs").rglob("records.jsonl")) and any((out / "runs").rglob("seed*.jsonl")):
        raise ValueError(f"{out} holds runs of the earlier layout (runs/.../seed<k>.jsonl): run the same simam2 study "
                         "command again to move them into their folders (nothing is rerun that completed)")
    for path in sorted((out / "runs").rglob("records.jsonl")):
        if "tune" in path.relative_to(out).parts:
            continue  # tuning runs choose settings (selection.json); they carry no test number
        records = read_records(path)
        if not is_complete(records):
            incomplete.append(str(path.relative_to(out)))
            continue
        records = runs(records)[-1]
        start = records[0]
        opts = start["upstream_options"]
        modalities = start["modalities"]
        pairing = opts.get("pairing") or pairing
        seed = start["config"]["seed"]
        vals = run_values(records)
        if opts["fusion"] is None:
            alone[(opts["regime"], int(opts["method"][-1]))][seed] = vals
        else:
            cells[(opts["regime"], opts["fusion"], opts["method"])][seed] = vals
    rows = []
    selection = _read_json(out / "selection.json") or {}
    for (regime, fusion, method), by_seed in cells.items():
        seeds = sorted(by_seed)
        names = sorted({k for v in by_seed.values() for k in v})
        values = {k: {s: by_seed[s].get(k) for s in seeds} for k in names}
        summary = {k: vars(summarize(list(values[k].values()))) for k in names}
        rows.append({"regime": regime, "fusion": fusion, "method": method, "label": label(method),
                     "control": is_control(method), "counted": counted(manifest["dataset"], regime, method),
                     "seeds": seeds, "values": values, "summary": summary,
                     "selection": selection.get(f"{regime}/{fusion}/{method}"),
                     "vs_baseline": None, "vs_baseline_all": None})
    _sort_cells(rows, manifest["regimes"])
    alone_rows = []
    for (regime, k), by_seed in sorted(alone.items()):
        values = {"acc": {s: v.get("acc") for s, v in by_seed.items()},
                  "probe": {s: v.get(f"probe_m{k}") for s, v in by_seed.items()},
                  "val_acc": {s: v.get("val_acc") for s, v in by_seed.items()}}
        alone_rows.append({"regime": regime, "modality": k, "values": values,
                           "selection": selection.get(f"{regime}/alone/alone-m{k}"),
                           "summary": {n: vars(summarize(list(v.values()))) for n, v in values.items()}})
    res = {"format": 2, "dataset": manifest["dataset"], "modalities": modalities, "views": manifest.get("views"),
            "pairing": pairing, "protocol": manifest.get("protocol") or {"name": "fixed", **manifest.get("recipe", {})}, "limit": manifest.get("limit"),
            "cells": rows, "alone": alone_rows, "incomplete": incomplete}
    res["comparisons"] = compare(res)
    res["claims"] = claims(res, res["comparisons"])
    return res


def _sort_cells(cells: list[dict], regimes) -> None:
    """Cells in table order: by ``regimes`` (others last), fusion, then method."""
    cells.sort(key=lambda r: (regimes.index(r["regime"]) if r["regime"] in regimes else 99,
                              FUSION_ORDER.index(r["fusion"]) if r["fusion"] in FUSION_ORDER else 9,
                              METHOD_ORDER.index(r["method"]) if r["method"] in METHOD_ORDER else 9, r["method"]))


def _read_json(path: Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({e}); remove it and rerun the study to rebuild it") from None


# -- tables ----------------------------------------------------------------------------------------

def _fmt(s: dict | None, scale=100.0, digits=1) -> str:
    if not s or s["n"] == 0 or s["mean"] is None or (isinstance(s["mean"], float) and math.isnan(s["mean"])):
        return "—"
    if s["n"] == 1:
        return f"{scale * s['mean']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def _fmt_diff(d: dict | None, verdict: bool = False) -> str:
    """``+1.2 (p=0.03)``; with ``verdict`` the 95 % interval, the Holm p and SPEC §9's label."""
    if not d or d["n"] == 0:
        return ""
    if d.get("note"):
        p = "constant"
    else:
        p = "p n/a" if d["p"] is None or (isinstance(d["p"], float) and math.isnan(d["p"])) else f"p={d['p']:.2g}"
    text = f"{100 * d['mean']:+.1f}"
    if not verdict:
        return f"{text} ({p})"
    lo, hi = d.get("ci95") or (None, None)
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None and lo != hi else ""
    holm = "" if d.get("p_holm") is None else f", Holm p={d['p_holm']:.2g}"
    return f"{text}{ci} ({p}{holm}) **{d['verdict']}**"


def _fmt_selection(sel: dict | None) -> str:
    if not sel:
        return "—"
    alpha = "" if sel.get("alpha") is None else f", α {sel['alpha']:g}"
    return f"lr {sel['lr']:g}{alpha}; {sel['epochs']:.0f} ep; val {100 * sel['val_acc']:.1f}"


def label(method: str) -> str:
    return LABELS.get(method, method)


def _claims_markdown(res: dict) -> list[str]:
    lines = ["## The paper's claims (cells that count: SPEC §9)", ""]
    for c in res.get("claims", []):
        head = f"**Claim {c['claim']}** — {c['text']}"
        if c.get("reading"):
            head += f"; reading `u={c['reading']}`"
        elif c.get("row"):
            head += f"; {label(c['row'])}"
        lines.append(head + ".")
        if "verdicts" in c:
            v = c["verdicts"]
            lines.append(f"  verdicts: {v['gain']} gain, {v['loss']} loss, {v['equivalent']} equivalent, "
                         f"{v['inconclusive']} inconclusive")
        if c["claim"] == 1:
            v = c["verdicts_sum"]
            lines.append(f"  on summation: {v['gain']} gain, {v['loss']} loss, {v['equivalent']} equivalent, "
                         f"{v['inconclusive']} inconclusive; summation's difference the largest of the "
                         f"fusions in {', '.join(c['sum_largest_in']) or 'no regime'}")
        for cell in c.get("cells", []):
            lines.append(f"  - {cell}")
        for r in c.get("correlations", []):
            lines.append(f"  - {r['regime']}/{r['fusion']}: r = {r['mean_r']:.2f} [{r['ci95'][0]:.2f}, "
                         f"{r['ci95'][1]:.2f}] over {r['n']} runs")
        lines.append("")
    return lines


def markdown(res: dict) -> str:
    """Tables: accuracy with the paired difference to the baseline, its interval and verdict; the
    chosen settings; per-modality accuracy and probes; the other comparisons; ratio correlation."""
    m1, m2 = res["modalities"] or ("m1", "m2")
    lines = [f"# Study: {res['dataset']} ({m1} = modality 1, {m2} = modality 2)", ""]
    if res.get("pairing"):
        lines += [f"Pairing of the two modalities: **{res['pairing']}**.", ""]
    n_seeds = sorted({len(c["seeds"]) for c in res["cells"]})
    proto = res["protocol"]
    lines += [f"Protocol **{proto.get('name')}**: " + ", ".join(f"{k} {v}" for k, v in proto.items() if k != "name")
              + ".", "",
              f"Test accuracy in %, mean ± std over {'/'.join(map(str, n_seeds))} seeds; then the paired "
              "difference to the Baseline of the same fusion (same seeds) in points, its 95 % t interval, "
              "the paired t-test p, the Holm p within its family, and SPEC §9's verdict (TOST margin ±1 point). "
              "Controls and regimes outside SPEC §9's counted set are shown and never counted.", ""]
    for m in res.get("merged", []):
        lines += [f"Cells from an earlier report, `{m['from']}` (same protocol; its runs are not in this folder): "
                  + (", ".join(f"`{c}`" for c in m["cells"]) or "none") + ". Every Holm p is over all cells here.", ""]
    lines += _claims_markdown(res)
    by_regime = defaultdict(list)
    for c in res["cells"]:
        by_regime[c["regime"]].append(c)
    alone = {(a["regime"], a["modality"]): a for a in res["alone"]}
    for regime, cells in by_regime.items():
        fusions = _order({c["fusion"] for c in cells}, FUSION_ORDER)
        methods = _order({c["method"] for c in cells}, METHOD_ORDER)
        get = {(c["fusion"], c["method"]): c for c in cells}
        a1, a2 = alone.get((regime, 1)), alone.get((regime, 2))
        count = " (counted)" if any(c["counted"] for c in cells) else " (not counted: a control)"
        lines += [f"## Regime `{regime}`{count}", ""]
        if a1 or a2:
            lines += [f"Encoders trained alone: {m1} {_fmt(a1 and a1['summary']['acc'])}, "
                      f"{m2} {_fmt(a2 and a2['summary']['acc'])} (linear probe {_fmt(a1 and a1['summary']['probe'])}"
                      f" / {_fmt(a2 and a2['summary']['probe'])}).", ""]
        header = "| method | " + " | ".join(FUSION_LABELS.get(f, f) for f in fusions) + " |"
        rule = "|---|" + "---|" * len(fusions)
        lines += ["### Fused accuracy", "", header, rule]
        for m in methods:
            row = []
            for f in fusions:
                c = get.get((f, m))
                row.append("—" if c is None else f"{_fmt(c['summary']['acc'])} {_fmt_diff(c['vs_baseline'], True)}".strip())
            lines.append(f"| {label(m)} | " + " | ".join(row) + " |")
        if any(c.get("selection") for c in cells):
            lines += ["", "### Chosen settings (validation only: lr, α, mean best epoch, mean validation accuracy)",
                      "", header, rule]
            for m in methods:
                lines.append(f"| {label(m)} | " + " | ".join(_fmt_selection((get.get((f, m)) or {}).get("selection"))
                                                            for f in fusions) + " |")
        lines += ["", f"### Per modality: mean-ablation accuracy and linear probe ({m1} / {m2})", "", header, rule]
        for m in methods:
            row = []
            for f in fusions:
                c = get.get((f, m))
                if c is None:
                    row.append("—")
                    continue
                s = c["summary"]
                row.append(f"abl {_fmt(s.get('acc_m1'), digits=0)} / {_fmt(s.get('acc_m2'), digits=0)}; "
                           f"probe {_fmt(s.get('probe_m1'), digits=1)} / {_fmt(s.get('probe_m2'), digits=1)}")
            lines.append(f"| {label(m)} | " + " | ".join(row) + " |")
        comps = [d for d in res.get("comparisons", []) if d["regime"] == regime and d["kind"] in ("df_vs_ogm", "reading")]
        if comps:
            lines += ["", "### +DF +SimAM² − +OGM-GE, and `u=vanilla` − `u=eq4` (paired by seed)", "",
                      "| comparison | fusion | difference |", "|---|---|---|"]
            for d in comps:
                lines.append(f"| {label(d['b'])} − {label(d['a'])} | {FUSION_LABELS.get(d['fusion'], d['fusion'])} | "
                             f"{_fmt_diff(d, True)} |")
        ratio_cells = [c for c in cells if c["summary"].get("ratio_r", {}).get("n")]
        if ratio_cells:
            lines += ["", "### Eq. 11's ratio against OGM-GE's decoupled ratio (Pearson r over a run's steps)", "",
                      "| fusion | method | r (mean ± std over seeds) | mean ρ_DF | mean ρ_decoupled | mean k1 / k2 |",
                      "|---|---|---|---|---|---|"]
            for c in ratio_cells:
                s = c["summary"]
                k = f"{_fmt(s.get('k1'), 1, 3)} / {_fmt(s.get('k2'), 1, 3)}"
                lines.append(f"| {FUSION_LABELS.get(c['fusion'], c['fusion'])} | {label(c['method'])} | "
                             f"{_fmt(s['ratio_r'], 1, 2)} | {_fmt(s.get('rho_df'), 1, 3)} | "
                             f"{_fmt(s.get('rho_decoupled'), 1, 3)} | {k} |")
        lines.append("")
    if res.get("incomplete"):
        lines += [f"Incomplete runs left out: {len(res['incomplete'])}.", ""]
    return "\n".join(lines)


def csv_text(res: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    names = list(VALUES) + ["ratio_r"] + list(STEP_MEANS)
    w.writerow(["regime", "fusion", "method", "n"] + [f"{n}_{s}" for n in names for s in ("mean", "std")]
               + ["diff_acc", "diff_std", "ci95_lo", "ci95_hi", "p", "p_holm", "p_equiv", "verdict",
                  "lr", "alpha", "val_acc"])
    for c in res["cells"]:
        row = [c["regime"], c["fusion"], c["method"], len(c["seeds"])]
        for n in names:
            s = c["summary"].get(n)
            row += [s["mean"], s["std"]] if s and s["n"] else ["", ""]
        d = c["vs_baseline"]
        row += ([d["mean"], d["std"], d["ci95"][0], d["ci95"][1], d["p"], d["p_holm"], d["p_equiv"], d["verdict"]]
                if d else [""] * 8)
        sel = c.get("selection") or {}
        row += [sel.get("lr", ""), sel.get("alpha", ""), sel.get("val_acc", "")]
        w.writerow(row)
    return buf.getvalue()


# -- figures ---------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SHORT = {"sum": "sum", "concat": "concat", "film": "FiLM", "late": "late"}


def plot_deltas(res: dict, path: Path, methods=None, regimes=None, title: str = "", fusions=None) -> Path | None:
    """Per regime, the paired difference of each method's accuracy to the baseline of the same
    fusion (mean ± std over seeds, percentage points), one horizontal bar per method and fusion."""
    plt = _plt()
    cells = [c for c in res["cells"] if c["vs_baseline"] and c["vs_baseline"]["n"]
             and (methods is None or c["method"] in methods) and (regimes is None or c["regime"] in regimes)
             and (fusions is None or c["fusion"] in fusions)]
    if not cells:
        return None
    regs = list(dict.fromkeys(c["regime"] for c in cells))
    ms = list(methods) if methods else _order({c["method"] for c in cells}, METHOD_ORDER)
    ms = [m for m in ms if any(c["method"] == m for c in cells)]
    fusions = _order({c["fusion"] for c in cells}, FUSION_ORDER)
    height = 0.8 / len(fusions)
    fig, axes = plt.subplots(1, len(regs), figsize=(3.3 * len(regs) + 1.6, 0.13 * len(ms) * len(fusions) + 0.25 * len(ms) + 1.0),
                             squeeze=False, dpi=80, sharey=True)
    colors = plt.get_cmap("tab10")
    for ax, regime in zip(axes[0], regs):
        get = {(c["fusion"], c["method"]): c["vs_baseline"] for c in cells if c["regime"] == regime}
        for j, f in enumerate(fusions):
            ys, xs, es = [], [], []
            for i, m in enumerate(ms):
                d = get.get((f, m))
                if d:
                    ys.append(i + (j - (len(fusions) - 1) / 2) * height)
                    xs.append(100 * d["mean"])
                    es.append(100 * d["std"])
            if ys:  # an empty bar set would still take a legend entry, without its colour
                ax.barh(ys, xs, height, xerr=es, color=colors(j), label=SHORT.get(f, f), capsize=1.5,
                        error_kw={"lw": 0.7})
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(ms)), [label(m) for m in ms], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("accuracy − baseline (points)", fontsize=8)
        ax.set_title(f"{res['dataset']}, {regime}" + (f": {title}" if title else ""), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[0][0].legend(handles.values(), handles.keys(), fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


VERDICT_COLORS = {"gain": "#1a9850", "loss": "#d73027", "equivalent": "#4575b4", "inconclusive": "#999999"}


def plot_intervals(res: dict, path: Path, methods=None, kinds=("vs_baseline",), title: str = "") -> Path | None:
    """Each comparison's paired mean difference with its 95 % t interval, the ±margin equivalence
    band shaded, the marker coloured by SPEC §9's verdict; one panel per regime, one line per row and
    fusion."""
    plt = _plt()
    comps = [c for c in res.get("comparisons", []) if c["kind"] in kinds and c["n"]
             and (methods is None or c["b"] in methods)]
    if not comps:
        return None
    regs = list(dict.fromkeys(c["regime"] for c in comps))
    fusions = _order({c["fusion"] for c in comps}, FUSION_ORDER)
    ms = _order({c["b"] for c in comps}, METHOD_ORDER)
    labels = [(m, f) for m in ms for f in fusions]
    fig, axes = plt.subplots(1, len(regs), figsize=(3.4 * len(regs) + 2.4, 0.22 * len(labels) + 1.3),
                             squeeze=False, dpi=80, sharey=True)
    for ax, regime in zip(axes[0], regs):
        get = {(c["b"], c["fusion"]): c for c in comps if c["regime"] == regime}
        margin = 100 * next(iter(get.values()))["margin"] if get else 1.0
        ax.axvspan(-margin, margin, color="#4575b4", alpha=0.12, lw=0)
        ax.axvline(0, color="k", lw=0.8)
        for i, key in enumerate(labels):
            c = get.get(key)
            if c is None:
                continue
            color = VERDICT_COLORS[c["verdict"]]
            lo, hi = c["ci95"]
            if lo is not None and hi is not None:
                ax.plot([100 * lo, 100 * hi], [i, i], color=color, lw=1.6)
            ax.plot(100 * c["mean"], i, "o", color=color, ms=4)
        ax.set_yticks(range(len(labels)), [f"{label(m)} · {SHORT.get(f, f)}" for m, f in labels], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("difference to Baseline (accuracy points)", fontsize=7)
        count = "counted" if any(c["counted"] for c in get.values()) else "not counted"
        ax.set_title(f"{res['dataset']}, {regime} ({count})" + (f": {title}" if title else ""), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    handles = [plt.Line2D([], [], marker="o", color=col, lw=1.6, label=v) for v, col in VERDICT_COLORS.items()]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="#4575b4", alpha=0.12, label="±1 point (TOST margin)"))
    fig.legend(handles=handles, fontsize=6, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_accuracy(res: dict, path: Path, methods=METHOD_ORDER) -> Path | None:
    """Per regime: fused accuracy of each method, grouped by fusion, with the std over seeds."""
    plt = _plt()
    regimes = list(dict.fromkeys(c["regime"] for c in res["cells"]))
    if not regimes:
        return None
    fig, axes = plt.subplots(1, len(regimes), figsize=(3.4 * len(regimes) + 2.8, 3.0), squeeze=False, dpi=80)
    colors = plt.get_cmap("tab10")
    for ax, regime in zip(axes[0], regimes):
        cells = {(c["fusion"], c["method"]): c for c in res["cells"] if c["regime"] == regime}
        fusions = _order({f for f, _ in cells}, FUSION_ORDER)
        ms = [m for m in methods if any((f, m) in cells for f in fusions)]
        width = 0.8 / max(1, len(ms))
        lo = 1.0
        for j, m in enumerate(ms):
            xs, ys, es = [], [], []
            for i, f in enumerate(fusions):
                c = cells.get((f, m))
                if c:
                    s = c["summary"]["acc"]
                    xs.append(i + (j - (len(ms) - 1) / 2) * width)
                    ys.append(100 * s["mean"])
                    es.append(100 * s["std"])
                    lo = min(lo, s["mean"] - s["std"])
            ax.bar(xs, ys, width, yerr=es, label=label(m), color=colors(j), capsize=2)
        ax.set_xticks(range(len(fusions)), [SHORT.get(f, f) for f in fusions])
        ax.set_ylim(max(0, 100 * lo - 5), 100.5)
        ax.set_title(f"{res['dataset']}: {regime}", fontsize=9)
        ax.set_ylabel("test accuracy (%)")
    width_in = fig.get_size_inches()[0]
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="center right", frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / width_in, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_probes(res: dict, path: Path, regime: str | None = None) -> Path | None:
    """Linear probe of each frozen encoder per method (sum fusion and the others), against the
    same encoder trained alone (dashed)."""
    plt = _plt()
    regimes = list(dict.fromkeys(c["regime"] for c in res["cells"]))
    if regime is None and regimes:
        regime = regimes[0]
    cells = [c for c in res["cells"] if c["regime"] == regime and c["method"] in METHOD_ORDER]
    if not cells:
        return None
    alone = {a["modality"]: a for a in res["alone"] if a["regime"] == regime}
    fusions = _order({c["fusion"] for c in cells}, FUSION_ORDER)
    fig, axes = plt.subplots(1, 2, figsize=(9.8, 2.9), dpi=80)
    colors = plt.get_cmap("tab10")
    names = res["modalities"] or ("m1", "m2")
    for k, ax in zip((1, 2), axes):
        ms = _order({c["method"] for c in cells}, METHOD_ORDER)
        width = 0.8 / len(ms)
        for j, m in enumerate(ms):
            xs, ys, es = [], [], []
            for i, f in enumerate(fusions):
                c = next((c for c in cells if c["fusion"] == f and c["method"] == m), None)
                if c and c["summary"].get(f"probe_m{k}", {}).get("n"):
                    s = c["summary"][f"probe_m{k}"]
                    xs.append(i + (j - (len(ms) - 1) / 2) * width)
                    ys.append(100 * s["mean"])
                    es.append(100 * s["std"])
            ax.bar(xs, ys, width, yerr=es, color=colors(j), label=label(m), capsize=2)
        a = alone.get(k)
        lows = [100 * c["summary"][f"probe_m{k}"]["mean"] for c in cells if c["summary"].get(f"probe_m{k}", {}).get("n")]
        if a:
            ax.axhline(100 * a["summary"]["probe"]["mean"], ls="--", color="k", lw=1, label="trained alone")
            lows.append(100 * a["summary"]["probe"]["mean"])
        ax.set_ylim(max(0, min(lows) - 8), min(100, max(lows) + 4))
        ax.set_xticks(range(len(fusions)), [SHORT.get(f, f) for f in fusions])
        ax.set_title(f"probe of {names[k - 1]}'s encoder ({regime})", fontsize=9)
        ax.set_ylabel("probe accuracy (%)")
    fig.legend(*axes[1].get_legend_handles_labels(), fontsize=6, loc="center right", frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_size_inches()[0], 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_ratios(out: Path, res: dict, path: Path, regime: str | None = None, fusion: str = "sum") -> Path | None:
    """Eq. 11's ratio against OGM-GE's decoupled ratio at each step of one DF run: the records'
    ratio figure (``simam2 plot``'s, :func:`~simam2.adapters.machinery.plots.plot_ratios`)."""
    from .grid import Job

    # ``fusion``'s cell first; a cell merged from an earlier report (--with-results) has no records
    # here, so the first cell whose run this folder holds is drawn, or none
    cells = sorted((c for c in res["cells"] if c["method"] == "df+simam2"
                    and (regime is None or c["regime"] == regime)), key=lambda c: c["fusion"] != fusion)
    run = next(((c, Job(c["regime"], c["fusion"], "df+simam2", c["seeds"][0]).path(Path(out))) for c in cells
                if Job(c["regime"], c["fusion"], "df+simam2", c["seeds"][0]).path(Path(out)).exists()), None)
    if run is None:
        return None
    cell, records = run
    plt = _plt()
    from simam2.adapters.machinery import plots

    seed = cell["seeds"][0]
    runs_ = plots.load([records], labels=[f"{cell['regime']}, {cell['fusion']}, +DF +SimAM², seed {seed}"],
                       warn=lambda s: None)
    figure = plots.plot_ratios(runs_)
    if figure.fig is None:
        return None
    try:
        plots.save(figure.fig, path)
    finally:
        plt.close(figure.fig)
    return path


def _seed_keyed(values: dict) -> dict:
    """A results.json ``values`` block with its seeds as ints again (JSON made them strings)."""
    return {name: {int(s): v for s, v in by_seed.items()} for name, by_seed in values.items()}


def read_earlier(path, dataset: str, protocol: dict) -> dict:
    """An earlier results.json for :func:`merge_earlier`, checked before any run starts: it must exist,
    be a study's results, and be of ``dataset`` under ``protocol`` (its plain form); one-line
    ValueError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--with-results {path}: no such file")
    res = _read_json(path)
    if not isinstance(res, dict) or not isinstance(res.get("cells"), list):
        raise ValueError(f"--with-results {path}: not a study's results.json")
    if res.get("dataset") != dataset:
        raise ValueError(f"--with-results {path} holds {res.get('dataset')!r} results, not {dataset!r}")
    if res.get("protocol") != json.loads(json.dumps(plain(protocol))):
        raise ValueError(f"--with-results {path} holds results of another protocol "
                         f"({(res.get('protocol') or {}).get('name')}, or other numbers): two protocols are never mixed")
    return res


def merge_earlier(res: dict, earlier: dict, source: str) -> dict:
    """``res`` with the cells (and encoders alone) of an ``earlier`` results.json that ``res`` does not
    hold, and every comparison, Holm p and verdict computed again over the union.

    For a study run in parts (other folders, other machines, a folder whose runs were lost after
    their report was written): one Holm adjustment over all its counted cells, as SPEC §9 asks. The
    earlier results must be of the same dataset, views, limit and protocol (a ValueError otherwise:
    two protocols are never mixed); where both hold a cell, this folder's runs win. ``source`` (the
    earlier file's name) is listed in ``res["merged"]`` with the cells it gave."""
    for key in ("dataset", "views", "limit", "protocol"):
        if earlier.get(key) != res.get(key):
            raise ValueError(f"{source} holds results of another {key} ({earlier.get(key)!r}, this folder "
                             f"{res.get(key)!r}): only results of the same study and protocol are merged")
    have = {(c["regime"], c["fusion"], c["method"]) for c in res["cells"]}
    taken = [c for c in earlier.get("cells", []) if (c["regime"], c["fusion"], c["method"]) not in have]
    have_alone = {(a["regime"], a["modality"]) for a in res["alone"]}
    taken_alone = [a for a in earlier.get("alone", []) if (a["regime"], a["modality"]) not in have_alone]
    res["cells"] += [{**c, "seeds": [int(s) for s in c["seeds"]], "values": _seed_keyed(c["values"])}
                     for c in taken]
    res["alone"] += [{**a, "values": _seed_keyed(a["values"])} for a in taken_alone]
    _sort_cells(res["cells"], list(dict.fromkeys(c["regime"] for c in res["cells"])))
    res.setdefault("merged", []).append({"from": source, "cells": [f"{c['regime']}/{c['fusion']}/{c['method']}"
                                                                    for c in taken]})
    for c in res["cells"]:
        c["vs_baseline"] = c["vs_baseline_all"] = None
    res["comparisons"] = compare(res)
    res["claims"] = claims(res, res["comparisons"])
    return res


def _probe_figures(res: dict, out: Path) -> list:
    """``probes.png`` for a study of one regime; ``probes-REGIME.png`` for each of several (one
    figure holds one regime's encoders)."""
    regimes = list(dict.fromkeys(c["regime"] for c in res["cells"]))
    if len(regimes) <= 1:
        return [plot_probes(res, out / "probes.png")]
    return [plot_probes(res, out / f"probes-{r}.png", regime=r) for r in regimes]


def write_report(out: Path, figures: bool = True, earlier: tuple = ()) -> dict:
    """results.json, tables.md, tables.csv and the figures into ``out``; returns the results.
    ``earlier``: results.json files whose cells this folder lacks, reported with its own
    (:func:`merge_earlier`)."""
    out = Path(out)
    res = collect(out)
    for path in earlier:
        merge_earlier(res, read_earlier(path, res["dataset"], res["protocol"]), str(path))
    atomic_write_text(out / "results.json", json.dumps(res, indent=1) + "\n")
    atomic_write_text(out / "tables.md", markdown(res))
    atomic_write_text(out / "tables.csv", csv_text(res))
    if figures:
        rows = [m for m in METHOD_ORDER if m != "baseline" and m not in CONTROL_METHODS]
        paths = [plot_accuracy(res, out / "accuracy.png", methods=("baseline",) + tuple(rows)),
                 plot_intervals(res, out / "intervals.png", methods=rows),
                 plot_intervals(res, out / "controls.png", methods=("simam2",) + CONTROL_METHODS,
                                kinds=("vs_baseline", "control"), title="controls"),
                 *_probe_figures(res, out), plot_ratios(out, res, out / "ratios.png")]
        res["figures"] = [str(p) for p in paths if p is not None]
    return res
