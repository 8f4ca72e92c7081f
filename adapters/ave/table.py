"""Table 2 of the paper (AVE localization accuracy, AVGA and PSP) on a synthetic AVE, through the
upstreams' own scripts.

Eight cells: four methods × two networks. Each cell runs the upstream's script in its own folder
(checkpoints, ``records.jsonl``):

=============================  ======  ===========  ======================================
method                         SimAM²  ζ            modulation
=============================  ======  ===========  ======================================
Baseline                       off     —            none
+SimAM²                        on      learnable    none
+OGM-GE                        off     —            OGM-GE, decoupled ratio (SPEC §6)
+SimAM² +Decoupling-free       on      learnable    OGM-GE's rule on Eq. 11's ratio
=============================  ======  ===========  ======================================

Each network's accuracy follows its script's own protocol: AVGA trains (``val()`` every 5 epochs
keeps the best model in ``model/AV_att.pt``), then ``supervised_main.py`` without ``--train``
tests that model; PSP tests after every epoch (``--check_epoch 1``) and reports its best test
accuracy (``[best test accuracy]``). For the decoupling-free cells the table also gives the Pearson
correlation of the two ratios over the training steps (both are recorded in every cell).

The numbers of a synthetic set say whether every cell runs and records, not how the methods rank
on AVE.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

from ..machinery import RunConfig, read_records, run_script
from ..machinery.install import checkout_of
from ..machinery.stats import ratio_correlation as _ratio_correlation
from ..machinery.table import Method, cell_name
from .avga import SPEC as AVGA
from .common import data_args
from .psp import SPEC as PSP

#: the paper's Table 2 (accuracy, %), shown beside the synthetic numbers
PAPER = {
    ("Baseline", "avga"): 72.0, ("+SimAM²", "avga"): 72.4, ("+OGM-GE", "avga"): 72.8,
    ("+SimAM² +Decoupling-free", "avga"): 73.0,
    ("Baseline", "psp"): 76.2, ("+SimAM²", "psp"): 76.7, ("+OGM-GE", "psp"): 76.9,
    ("+SimAM² +Decoupling-free", "psp"): 77.2,
}
NETWORKS = (("avga", "AVGA"), ("psp", "PSP"))



METHODS = (
    Method("Baseline", False, "none"),
    Method("+SimAM²", True, "none"),
    Method("+OGM-GE", False, "ogm-ge"),
    Method("+SimAM² +Decoupling-free", True, "df"),
)


def ratio_correlation(records: list[dict]) -> float | None:
    """Pearson r of Eq. 11's ratio and OGM-GE's decoupled ratio over the training steps."""
    return _ratio_correlation(records)[0]


def format_table(results: dict[tuple[str, str], dict | None], title: str) -> str:
    """Table 2's layout: one row per method, accuracy (%) per network, the paper's beside it."""
    width = max(len(m.label) for m in METHODS) + 2
    head = f"{'Method':<{width}}" + "".join(f"{name + ' (synthetic)':>18}{name + ' (paper)':>14}"
                                             for _, name in NETWORKS)
    lines = [title, head, "-" * len(head)]
    notes = []
    for m in METHODS:
        row = f"{m.label:<{width}}"
        for key, name in NETWORKS:
            r = results.get((m.label, key))
            shown = "—" if r is None or r.get("acc") is None else f"{100 * r['acc']:.1f}"
            row += f"{shown:>18}{PAPER[(m.label, key)]:>14.1f}"
            if r is not None and r.get("corr") is not None and m.modulation == "df":
                notes.append(f"{name}, {m.label}: Pearson r(ρ Eq. 11, ρ OGM-GE) over {r['steps']} steps = {r['corr']:.3f}")
        lines.append(row)
    return "\n".join(lines + ([""] + notes if notes else []))


def _evals(records: list[dict], split: str) -> list[dict]:
    return [r for r in records if r.get("event") == "eval" and r.get("split") == split and r.get("acc") is not None]


def run_table(out_dir, data_dir=None, epochs: int | None = None, progress: Callable[[str], object] = print,
              checkout_avga=None, checkout_psp=None, seed: int = 0, alpha: float = 0.5,
              batch_size: int = 8, n_train: int = 48, n_val: int = 16, n_test: int = 16, n_classes: int = 4,
              threshold: float = 0.099, audio_signal: float = 0.5, visual_signal: float = 0.5) -> str:
    """Run the eight cells and return Table 2 as text (also ``out_dir/table.txt``; every cell's
    numbers in ``out_dir/table.json``).

    ``data_dir``: an existing AVE folder in the scripts' layout (as :func:`.ave_synth.write_synthetic_ave`
    writes; its val/test orders must hold 402 entries); None writes a synthetic one of ``n_train`` /
    ``n_val`` / ``n_test`` videos of ``n_classes`` classes to ``out_dir/data``, with class prototypes
    scaled by ``audio_signal`` / ``visual_signal`` (at full strength, 1.0, PSP reaches 100 % within 8
    epochs and the cells cannot differ). ``epochs`` (default 8) per cell; ``batch_size`` must be at
    least ``n_train / batch_size`` (PSP's epoch summary).
    """
    epochs = 8 if epochs is None else epochs
    if epochs < 2:
        raise ValueError(f"epochs must be at least 2 (PSP tests from its second epoch on), got {epochs}")
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    checkout_avga = Path(checkout_avga) if checkout_avga is not None else checkout_of(AVGA)
    checkout_psp = Path(checkout_psp) if checkout_psp is not None else checkout_of(PSP)
    if data_dir is None:
        data = AVGA.synth(out / "data", n_train=n_train, n_val=n_val, n_test=n_test, n_classes=n_classes,
                          seed=seed, checkout=checkout_avga, audio_signal=audio_signal,
                          visual_signal=visual_signal)
        progress(f"wrote a synthetic AVE to {data} ({n_train} train / {n_val} val / {n_test} test videos, "
                 f"{n_classes} classes, signal audio {audio_signal} / visual {visual_signal})")
    else:
        data = Path(data_dir).absolute()
    results: dict[tuple[str, str], dict | None] = {}
    for network, _ in NETWORKS:
        for method in METHODS:
            cell = out / cell_name(method, network)
            config = method.run_config(cell, alpha=alpha, seed=seed)
            start = time.perf_counter()
            if network == "avga":
                argv = ["--model_name", "AV_att", "--nb_epoch", str(epochs), "--batch_size", str(batch_size),
                        *data_args(data, "--dir_labels", "labels.h5")]
                run_script(AVGA, ["--train", *argv], config, checkout=checkout_avga, cwd=cell)
                test_config = RunConfig(simam2=method.simam2, zeta=config.zeta, seed=seed, record=config.record,
                                        append=True)  # the test run's records follow the training run's
                run_script(AVGA, argv, test_config, checkout=checkout_avga, cwd=cell)
                records = read_records(config.record)
                tests = _evals(records, "test")
                acc = tests[-1]["acc"] if tests else None
            else:
                argv = ["--model_name", "PSP", f"--threshold={threshold}", "--train", "--nb_epoch", str(epochs),
                        "--batch_size", str(batch_size), "--save_epoch", str(epochs + 1), "--check_epoch", "1",
                        *data_args(data, "--dir_labels", "right_labels.h5")]
                ctx = run_script(PSP, argv, config, checkout=checkout_psp, cwd=cell)
                records = ctx.recorder.read()
                tests = _evals(records, "test")
                acc = max(r["acc"] for r in tests) if tests else None  # the script's [best test accuracy]
            corr = ratio_correlation(records)
            steps = sum(1 for r in records if r.get("event") == "step")
            results[(method.label, network)] = {"acc": acc, "corr": corr, "steps": steps}
            shown = "no test" if acc is None else f"test accuracy {acc:.3f}"
            if corr is not None and not math.isnan(corr):
                shown += f", r(ρ Eq. 11, ρ OGM-GE) = {corr:.3f}"
            progress(f"{network:>5} {method.label:<26} {shown}  ({time.perf_counter() - start:.0f} s)")
    table = format_table(results, f"Table 2 on a synthetic AVE ({epochs} epochs per cell, {data}), accuracy in %")
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    (out / "table.json").write_text(json.dumps(
        [{"method": m, "network": n, **(r or {}), "paper": PAPER[(m, n)]} for (m, n), r in results.items()],
        indent=1), encoding="utf-8")
    return table
