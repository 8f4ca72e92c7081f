"""Evaluation of a FOP checkpoint through its own test.py, and main.py's best checkpoint."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from ..machinery import AdapterError, RunConfig, run_script
from .checks import READ_SPLIT, prepare_workdir
from .spec import EVAL_SCRIPT, SPEC

_PRINTED = {"eer": re.compile(r"Equal Error Rate \(EER\): ([0-9.]+)"),
            "auc": re.compile(r"Area Under Curve \(AUC\): ([0-9.]+)"),
            "accuracy": re.compile(r"Accuracy: ([0-9.]+)\+-")}


def parse_test_output(text: str) -> dict[str, float]:
    """EER, AUC and accuracy as test.py prints them (three decimals); it returns nothing else."""
    found = {k: rx.findall(text) for k, rx in _PRINTED.items()}
    missing = [k for k, v in found.items() if not v]
    if missing:
        raise AdapterError(f"test.py printed no {', '.join(missing)}; its output ends with: {text[-300:]!r}")
    return {k: float(v[-1]) for k, v in found.items()}


def evaluate_checkpoint(checkpoint, data_dir, workdir, split: str = READ_SPLIT, fusion: str = "gated",
                        config: RunConfig | None = None, checkout=None, log=None, extra_args=()) -> dict:
    """Run test.py on ``checkpoint`` against ``split``'s list of ``data_dir``, in ``workdir``
    (prepared here); returns {"eer", "auc", "accuracy"} as test.py prints them.

    ``config`` must match the one the checkpoint was trained with (SimAM² on or off: the state
    dict of a learnable ζ gate only loads into a model that has one). ``log``: a text file that
    receives the script's output (default: kept in memory only).
    """
    work = prepare_workdir(data_dir, workdir, split)
    argv = ["--ckpt", str(Path(checkpoint).resolve()), "--fusion", fusion, *extra_args]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        run_script(SPEC, argv, config or RunConfig(), checkout=checkout, cwd=work, script=EVAL_SCRIPT)
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(buf.getvalue())
    return parse_test_output(buf.getvalue())


def best_checkpoint(workdir, fusion: str = "gated", save_dir: str = "model", alpha: float = 1.0) -> Path:
    """main.py's best checkpoint (lowest online EER, the latest of equals): the newest file it
    saved under ``best_<fusion>_<save_dir>_alpha_<alpha>``."""
    folder = Path(workdir) / ("best_%s_%s_alpha_%0.2f" % (fusion, save_dir, alpha))
    found = sorted(folder.glob("checkpoint_*.pth.tar"))
    if not found:
        raise AdapterError(f"main.py saved no best checkpoint in {folder}")
    return found[-1]


