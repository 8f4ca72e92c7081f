"""Table 3 of the paper (face-voice association, EER / AUC) on a synthetic face–voice set, through
FOP's own main.py (training) and test.py (evaluation of main.py's best checkpoint)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Sequence

from ..machinery import RunConfig, run_script
from .checks import prepare_workdir
from .evaluate import best_checkpoint, evaluate_checkpoint
from .spec import SPEC
from .synth import write_fop

#: Table 3 of the paper (VoxCeleb1, % ), for reference beside the synthetic numbers.
PAPER_TABLE3 = {"FOP": (19.3, 89.3, 24.9, 83.5), "FOP + SimAM²": (18.5, 89.8, 24.6, 83.7)}
TABLE3_CELLS = {"FOP": RunConfig(simam2=False), "FOP + SimAM²": RunConfig(simam2=True, zeta="given")}


def run_table(out_dir, data_dir=None, epochs: int = 6, seeds: Sequence[int] = (0, 1, 2), lr: float = 1e-3,
              batch_size: int = 32, checkout=None, progress=print) -> str:
    """Table 3 on a synthetic face–voice set: EER and AUC (%) on Seen-Heard and Unseen-Unheard for
    FOP's gated fusion and for SimAM² with FOP's gate as ζ, mean ± std over ``seeds``.

    Each cell trains with FOP's own main.py for ``epochs`` epochs (``--max_num_epoch epochs + 1``)
    and evaluates main.py's best checkpoint with FOP's own test.py on both lists. Runs, logs and
    records go to ``out_dir``; the synthetic set is written there unless ``data_dir`` is given.
    """
    out = Path(out_dir)
    data = Path(data_dir) if data_dir is not None else write_fop(out / "data", seed=0)
    results: dict[str, list[list[float]]] = {}
    for name, base_config in TABLE3_CELLS.items():
        slug = "simam2" if base_config.simam2 else "fop"
        for seed in seeds:
            run_dir = out / slug / f"seed{seed}"
            config = RunConfig(**{**base_config.__dict__, "seed": seed, "record": run_dir / "records.jsonl"})
            if config.record.exists():
                config.record.unlink()
            work = prepare_workdir(data, run_dir / "train")
            log = run_dir / "log.txt"
            progress(f"fop table: {name}, seed {seed}: main.py, {epochs} epochs")
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                run_script(SPEC, ["--batch_size", str(batch_size), "--max_num_epoch", str(epochs + 1),
                                     "--lr", str(lr), "--seed", str(seed), "--fusion", "gated"],
                           config, checkout=checkout, cwd=work)
            log.write_text(buf.getvalue(), encoding="utf-8")
            ckpt = best_checkpoint(work)
            row = []
            for split in ("seenheard", "unseenunheard"):
                m = evaluate_checkpoint(ckpt, data, run_dir / f"test_{split}", split,
                                        config=RunConfig(simam2=config.simam2, zeta=config.zeta),
                                        checkout=checkout, log=log)
                row += [100 * m["eer"], 100 * m["auc"]]
            progress(f"  best {ckpt.name}: Seen-Heard EER {row[0]:.1f} AUC {row[1]:.1f}, "
                     f"Unseen-Unheard EER {row[2]:.1f} AUC {row[3]:.1f}")
            results.setdefault(name, []).append(row)
    return format_table3(results, epochs=epochs, seeds=seeds)


def format_table3(results: dict[str, list[list[float]]], epochs: int, seeds: Sequence[int]) -> str:
    """Table 3's layout: one row per method, EER ↓ and AUC ↑ (%) per split, the paper's beside."""
    import numpy as np

    head = f"{'':<16}{'Seen-Heard':^24}{'Unseen-Unheard':^24}"
    sub = f"{'Method':<16}" + f"{'EER ↓':^12}{'AUC ↑':^12}" * 2
    lines = [f"Table 3: face-voice association (FOP), synthetic VoxCeleb-format features, "
             f"{epochs} epochs, mean ± std over seeds {', '.join(map(str, seeds))}", head, sub]
    for name, rows in results.items():
        a = np.asarray(rows, dtype=float)
        cells = [f"{m:.1f} ± {s:.1f}" for m, s in zip(a.mean(0), a.std(0))]
        lines.append(f"{name:<16}" + "".join(f"{c:^12}" for c in cells))
    lines.append("paper (VoxCeleb1):")
    for name, vals in PAPER_TABLE3.items():
        lines.append(f"{name:<16}" + "".join(f"{v:^12.1f}" for v in vals))
    return "\n".join(lines)
