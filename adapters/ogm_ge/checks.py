"""Checks of what OGM-GE's main.py is about to read, before it starts (one line naming the fix)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Sequence

from ..machinery import AdapterError, option_value


def check_dataset(argv: Sequence[str], cwd: Path) -> None:
    """main.py reads its lists relative to the working directory and silently skips every listed clip
    whose files are missing: an empty set would fail deep in torch."""
    dataset = option_value(argv, "--dataset", "CREMAD")
    needed = {"CREMAD": ["data/CREMAD/train.csv", "data/CREMAD/test.csv"],
              "VGGSound": ["data/VGGSound/vggsound.csv"]}.get(dataset, [])
    missing = [p for p in needed if not (Path(cwd) / p).is_file()]
    if missing:
        raise AdapterError(f"main.py reads its {dataset} lists relative to the working directory, and "
                           f"{Path(cwd).resolve()} lacks {', '.join(missing)}; run in the dataset folder "
                           f"(simam2 synth ogm-ge DIR writes one)")
    if dataset == "CREMAD":
        audio = Path(cwd) / option_value(argv, "--audio_path", "/home/hudi/data/CREMA-D/AudioWAV")
        visual = Path(cwd) / option_value(argv, "--visual_path", "/home/hudi/data/CREMA-D/")
        frames = visual / "Image-{:02d}-FPS".format(int(option_value(argv, "--fps", 1)))
        if not audio.is_dir() or not frames.is_dir():
            raise AdapterError(f"main.py finds no CREMA-D clips: --audio_path {audio} needs the .wav files and "
                               f"--visual_path {visual} the Image-NN-FPS frame folders (for simam2 synth's "
                               f"layout: --audio_path AudioWAV --visual_path .)")
        absent: dict[str, list[str]] = {}
        listed_count = 0
        for split in ("train", "test"):
            listed = Path(cwd) / f"data/CREMAD/{split}.csv"
            with open(listed, newline="") as f:
                clips = [row[0] for row in csv.reader(f) if row]
            absent[split] = [c for c in clips if not ((audio / f"{c}.wav").is_file() and (frames / c).is_dir())]
            listed_count += len(clips)
            if len(absent[split]) == len(clips):
                raise AdapterError(f"{listed} lists {len(clips)} clips and none has both its {audio}/<clip>.wav "
                                   f"and {frames}/<clip>/: main.py would skip them all and fail mid-run")
        warn_absent(absent, listed_count)


def warn_absent(absent: dict[str, list[str]], listed: int, stream=None) -> None:
    """Say how many listed clips main.py will skip for want of files (it does so without a word)."""
    missing = [c for clips in absent.values() for c in clips]
    if not missing:
        return
    per_split = ", ".join(f"{split} {len(clips)}" for split, clips in absent.items())
    few = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
    print(f"warning: {len(missing)} of {listed} listed clips have no files and main.py skips them "
          f"({per_split}; e.g. {few})", file=stream or sys.stderr)
