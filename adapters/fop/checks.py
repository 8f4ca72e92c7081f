"""FOP's working directories and the checks of what its scripts are about to read.

The scripts read ``features/*.csv`` and write ``output/`` and checkpoint folders relative to the
working directory; :func:`prepare_workdir` makes one from a dataset folder, with a chosen split's
verification list under the one name the scripts read. Nothing is written into the checkout, and
nothing of a user's is overwritten: a working directory that holds real files where the links go is
refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from ..machinery import AdapterError, option_value
from .synth import FACE_DIM, TRAIN_FILES, VOICE_DIM, list_files

FUSIONS = ("gated", "linear")
#: The verification list both scripts read (online_evaluation.read_data, test.py's read_data).
READ_SPLIT = "unseenunheard"
SPLITS_HELP = "verification list the scripts read (default unseenunheard)"


def prepare_workdir(data_dir, workdir, split: str = READ_SPLIT) -> Path:
    """A working directory for FOP's scripts: ``features/`` linking ``data_dir/features``'s training
    files and ``split``'s verification list under the name the scripts read, and an ``output/``.

    ``data_dir`` is a folder written by :func:`~simam2.adapters.fop_synth.write_fop` (or real
    features laid out the same way). Returns ``workdir``.
    """
    face_list, voice_list = list_files(split)  # checks the split
    src = Path(data_dir).resolve() / "features"
    work = Path(workdir)
    links = {name: src / name for name in TRAIN_FILES}
    links.update(zip(list_files(READ_SPLIT), (src / face_list, src / voice_list)))
    missing = [str(p) for p in links.values() if not p.is_file()]
    if missing:
        raise AdapterError(f"dataset folder {data_dir} lacks {', '.join(missing)} "
                           "(simam2 synth fop DIR writes one)")
    features = work / "features"
    own = [str(features / name) for name in links
           if (features / name).exists() and not (features / name).is_symlink()]
    if own:
        raise AdapterError(f"--workdir {work} holds files of its own where the dataset's links would go "
                           f"({', '.join(own)}): choose an empty or new working directory")
    features.mkdir(parents=True, exist_ok=True)
    (work / "output").mkdir(exist_ok=True)
    for name, target in links.items():
        dest = features / name
        if dest.resolve() == target:
            continue
        if dest.is_symlink():
            dest.unlink()  # a link an earlier preparation made: no data of the user's
        try:
            dest.symlink_to(target)
        except OSError:  # no symlinks here (some file systems): copy
            shutil.copyfile(target, dest)
    return work


def csv_shape(path: Path) -> tuple[int, int]:
    """(rows, columns of the first row) of a header-less CSV, without parsing it all."""
    with open(path, "rb") as f:
        first = f.readline()
        if not first.strip():
            return 0, 0
        cols = first.count(b",") + 1
        rows = 1 + sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if not first.endswith(b"\n"):
        rows -= 1  # the count above found no newline for the first row
    return rows, cols


def validate_features(workdir: Path, training: bool) -> None:
    """Check the CSVs FOP is about to read under ``workdir/features``; AdapterError naming the file.

    Training files: faces exactly 4096 features + identity (main.py takes column 4096 as the label
    and drops the last column), voices exactly 512 + identity, the same rows. Verification list:
    at least 4096 / 512 columns (the rest are ignored), the same rows, at least 10 pairs (10 folds).
    """
    features = Path(workdir) / "features"
    face_list, voice_list = list_files(READ_SPLIT)
    checks = [(face_list, FACE_DIM, False), (voice_list, VOICE_DIM, False)]
    if training:
        checks = [(TRAIN_FILES[0], FACE_DIM + 1, True), (TRAIN_FILES[1], VOICE_DIM + 1, True)] + checks
    rows = {}
    for name, width, exact in checks:
        path = features / name
        if not path.is_file():
            raise AdapterError(f"FOP reads {path}, which does not exist; make the working directory with "
                               f"prepare_workdir or simam2 synth fop DIR")
        n, cols = csv_shape(path)
        if n == 0:
            raise AdapterError(f"{path} is empty")
        if cols != width if exact else cols < width:
            want = f"exactly {width}" if exact else f"at least {width}"
            raise AdapterError(f"{path} has {cols} columns; FOP needs {want} "
                               f"({width - 1 if exact else width} features{' + identity' if exact else ''})")
        rows[name] = n
    pairs = [(face_list, voice_list)] + ([TRAIN_FILES] if training else [])
    for a, b in pairs:
        if rows[a] != rows[b]:
            raise AdapterError(f"{features / a} has {rows[a]} rows but {features / b} has {rows[b]}: "
                               "row i of both must be the same sample or pair")
    if rows[face_list] < 10:
        raise AdapterError(f"{features / face_list} has {rows[face_list]} pairs; FOP's evaluation needs "
                           "at least 10 (10 folds)")
    if training and not (Path(workdir) / "output").is_dir():
        raise AdapterError(f"main.py writes its log to output/, and {Path(workdir).resolve()} has none")


#: Third-party modules each script imports (pip names in brackets where they differ).
SCRIPT_IMPORTS = {"main.py": ("pandas", "sklearn [scikit-learn]", "scipy", "matplotlib", "tqdm"),
                  "test.py": ("pandas", "sklearn [scikit-learn]", "scipy")}


def validate_imports(script: str) -> None:
    """Name every missing module the script imports at once, rather than the first, mid-run."""
    import importlib.util

    missing = [m for m in SCRIPT_IMPORTS.get(script, ()) if importlib.util.find_spec(m.split()[0]) is None]
    if missing:
        names = [m.split()[-1].strip("[]") for m in missing]
        raise AdapterError(f"FOP's {script} imports {', '.join(m.split()[0] for m in missing)}, not installed: "
                           f"pip install {' '.join(names)} (or the project's [upstream] extra)")


def validate_main_args(argv: Sequence[str], train_rows: int) -> None:
    """Catch main.py's option traps before a long read: each fails late, or silently, upstream."""
    if any(a == "--alpha_list" or a.startswith("--alpha_list=") for a in argv):
        raise AdapterError("main.py's --alpha_list (type=list) splits its value into characters; leave it out "
                           "(the default trains with alpha 1, and main.py returns after the first alpha anyway)")
    batch = int(option_value(argv, "--batch_size", 1))
    if batch < 2:
        raise AdapterError(f"--batch_size {batch}: FOP's BatchNorm1d layers need at least 2 samples per batch "
                           "(main.py's default is 1)")
    if train_rows // batch < 1:
        raise AdapterError(f"--batch_size {batch} exceeds the {train_rows} training rows: no batch to train on")
    epochs = int(option_value(argv, "--max_num_epoch", 5))
    if epochs < 2:
        raise AdapterError(f"--max_num_epoch {epochs}: main.py trains epochs 1 .. max_num_epoch - 1, so "
                           "it needs at least 2")
    fusion = option_value(argv, "--fusion", "gated")
    if fusion not in FUSIONS:
        raise AdapterError(f"--fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


