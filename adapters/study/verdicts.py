"""SPEC §9's comparisons, families and verdicts, read off a study's collected cells.

Every comparison is paired by seed (:func:`~simam2.adapters.machinery.stats.paired_difference`):
each row against the Baseline of its fusion and regime; +DF +SimAM² against +OGM-GE; each row read
with ``u="vanilla"`` against the same row with ``u="eq4"``; and, for claim 4, the linear probe of the
weak modality's encoder under each modulated row against the Baseline's. Holm's adjustment runs
within a family: one comparison kind, one row, and either the cells that count or those that do not
(the ceiling control and SPEC §9's controls are families of their own, shown and never counted).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from simam2.adapters.machinery.stats import Paired, adjust_family, paired_difference

#: SPEC §9: the regimes where balancing has room to act; the others are shown, never counted
COUNTED_REGIMES = {"mfeat": ("m1", "m2", "balanced"), "avdigits": ("natural", "m2")}
#: SPEC §9's controls: beside the rows, never in a verdict
CONTROL_METHODS = ("temperature", "simam2:energy=simam_u", "simam2:energy=nodeg")
#: each reading's +SimAM² rows (claim 1) and their counterpart without SimAM²
SIMAM2_ROWS = {"eq4": ("simam2", "ogm-ge+simam2"), "vanilla": ("simam2:u=vanilla", "ogm-ge+simam2:u=vanilla")}
MODULATED_ROWS = ("ogm-ge", "ogm-ge+simam2", "ogm-ge+simam2:u=vanilla", "df+simam2")
CLAIM3_FUSIONS = ("sum", "film")


def is_control(method: str) -> bool:
    return method in CONTROL_METHODS


def counted(dataset: str, regime: str, method: str) -> bool:
    return regime in COUNTED_REGIMES.get(dataset, ()) and not is_control(method)


def _values(cell: dict | None, name: str) -> dict:
    if cell is None:
        return {}
    return {int(s): v for s, v in cell["values"].get(name, {}).items()}


def weak_modality(alone: list[dict], regime: str) -> int | None:
    """The modality whose encoder alone has the lower mean *validation* accuracy (the test split is
    never read for a choice); None without both."""
    val = {a["modality"]: a["summary"].get("val_acc", {}).get("mean") for a in alone if a["regime"] == regime}
    if val.get(1) is None or val.get(2) is None:
        return None
    return 1 if val[1] < val[2] else 2


def compare(res: dict) -> list[dict]:
    """Every comparison of SPEC §9 with its family, Holm p and verdict (results.json's ``comparisons``);
    also sets each cell's ``vs_baseline`` (and ``vs_baseline_all``) to the adjusted comparison."""
    dataset = res["dataset"]
    cells = {(c["regime"], c["fusion"], c["method"]): c for c in res["cells"]}
    raw: list[tuple[dict, Paired]] = []

    def add(kind, regime, fusion, a, b, metric, family, cell=None, key=None):
        ca, cb = cells.get((regime, fusion, a)), cells.get((regime, fusion, b))
        if ca is None or cb is None:
            return
        d = paired_difference(_values(ca, metric), _values(cb, metric))
        if d.n == 0:
            return
        head = {"kind": kind, "regime": regime, "fusion": fusion, "a": a, "b": b, "metric": metric,
                "family": family, "counted": counted(dataset, regime, b) and not family.endswith("(not counted)")}
        raw.append((head, d, cell, key))

    for (regime, fusion, method), cell in cells.items():
        tail = "" if counted(dataset, regime, method) else " (not counted)"
        if method != "baseline":
            kind = "control" if is_control(method) else "vs_baseline"
            add(kind, regime, fusion, "baseline", method, "acc", f"{kind}: {method}{tail}", cell, "acc")
            for metric in ("acc_m1", "acc_m2", "probe_m1", "probe_m2"):
                add(f"{kind}_{metric}", regime, fusion, "baseline", method, metric,
                    f"{kind}_{metric}: {method}{tail}", cell, metric)
        if method == "df+simam2":
            claim3 = fusion in CLAIM3_FUSIONS and not tail
            add("df_vs_ogm", regime, fusion, "ogm-ge", method, "acc",
                "claim 3: +DF +SimAM² vs +OGM-GE, sum and FiLM" if claim3 else f"df_vs_ogm{tail or ' (concat, late)'}")
        if method.endswith(":u=vanilla"):
            add("reading", regime, fusion, method[: -len(":u=vanilla")], method, "acc",
                f"reading: {method}{tail}")
        if method in MODULATED_ROWS:
            weak = weak_modality(res.get("alone", []), regime)
            if weak is not None:
                add("probe_weak", regime, fusion, "baseline", method, f"probe_m{weak}",
                    f"claim 4: {method}, probe of the weak modality{tail}")
    families = defaultdict(list)
    for i, (head, d, _, _) in enumerate(raw):
        families[head["family"]].append(i)
    adjusted: list[Paired | None] = [None] * len(raw)
    for members in families.values():
        for i, d in zip(members, adjust_family([raw[i][1] for i in members])):
            adjusted[i] = d
    out = []
    for (head, _, cell, key), d in zip(raw, adjusted):
        entry = {**head, **d.plain()}
        if cell is not None:
            if cell.get("vs_baseline_all") is None:
                cell["vs_baseline_all"] = {}
            cell["vs_baseline_all"][key] = entry
            if key == "acc":
                cell["vs_baseline"] = entry
        if not head["kind"].startswith(("vs_baseline_", "control_")):
            out.append(entry)
    return out


def _count(entries) -> dict:
    c = Counter(e["verdict"] for e in entries)
    return {v: c.get(v, 0) for v in ("gain", "loss", "equivalent", "inconclusive")}


def _fmt_entry(e: dict) -> str:
    lo, hi = e["ci95"]
    ci = "" if lo is None else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    p = "constant" if e.get("note") else ("n/a" if e["p_holm"] is None else f"{e['p_holm']:.2g}")
    return f"{e['regime']}/{e['fusion']} {100 * e['mean']:+.1f}{ci} (Holm p {p}) {e['verdict']}"


def claims(res: dict, comparisons: list[dict]) -> list[dict]:
    """The paper's four claims, each with its counted cells' verdicts and numbers (SPEC §9)."""
    out = []
    for reading, rows in SIMAM2_ROWS.items():
        row = rows[0]
        cells = [e for e in comparisons if e["kind"] == "vs_baseline" and e["b"] == row and e["counted"]]
        by_regime = defaultdict(dict)
        for e in cells:
            by_regime[e["regime"]][e["fusion"]] = e["mean"]
        largest = {r: max(f, key=f.get) == "sum" for r, f in by_regime.items() if "sum" in f and len(f) > 1}
        out.append({"claim": 1, "reading": reading, "row": row,
                    "text": "+SimAM² gains over vanilla fusion, most on summation",
                    "verdicts": _count(cells), "verdicts_sum": _count(e for e in cells if e["fusion"] == "sum"),
                    "sum_largest_in": sorted(r for r, v in largest.items() if v),
                    "sum_not_largest_in": sorted(r for r, v in largest.items() if not v),
                    "cells": [_fmt_entry(e) for e in cells]})
    rs = defaultdict(list)
    for c in res["cells"]:
        if c["method"] == "df+simam2":
            rs[(c["regime"], c["fusion"])] += [v for v in c["values"].get("ratio_r", {}).values() if v is not None]
    corr = []
    for (regime, fusion), values in sorted(rs.items()):
        if len(values) >= 2:
            from scipy.stats import t as student

            a = np.asarray(values)
            half = float(student.ppf(0.975, len(a) - 1)) * a.std(ddof=1) / math.sqrt(len(a))
            corr.append({"regime": regime, "fusion": fusion, "mean_r": float(a.mean()),
                         "ci95": [float(a.mean() - half), float(a.mean() + half)], "n": len(a)})
    out.append({"claim": 2, "text": "Eq. 11's ratio and OGM-GE's decoupled ratio correlate during training "
                                    "(Pearson r over a +DF +SimAM² run's steps; mean over seeds)",
                "correlations": corr})
    c3 = [e for e in comparisons if e["kind"] == "df_vs_ogm" and e["family"].startswith("claim 3")]
    out.append({"claim": 3, "text": "+DF +SimAM² ≥ +OGM-GE on summation and FiLM", "verdicts": _count(c3),
                "cells": [_fmt_entry(e) for e in c3]})
    for row in MODULATED_ROWS:
        c4 = [e for e in comparisons if e["kind"] == "probe_weak" and e["b"] == row and e["counted"]]
        out.append({"claim": 4, "row": row, "text": "modulation helps the weak modality (linear probe of its encoder)",
                    "verdicts": _count(c4), "cells": [_fmt_entry(e) for e in c4]})
    return out
