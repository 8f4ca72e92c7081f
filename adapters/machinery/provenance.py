"""What a dataset folder is, as a table names it: synthetic (``simam2 synth`` leaves a marker),
prepared from a download (``simam2 prepare`` leaves another), or the user's own dataset."""

from __future__ import annotations

import json
from pathlib import Path

#: written by ``simam2 synth`` into the folder it fills
SYNTHETIC_MARKER = ".simam2-synthetic"
#: written by ``simam2 prepare`` into the folder it fills
PREPARED_MARKER = ".simam2-prepared"


def mark_synthetic(folder: Path, generator: str, **details) -> None:
    """Leave the marker that says ``folder`` holds synthetic data made by ``generator``."""
    (Path(folder) / SYNTHETIC_MARKER).write_text(json.dumps({"by": generator, **details}, indent=2) + "\n")


def is_synthetic(folder: Path) -> bool:
    return (Path(folder) / SYNTHETIC_MARKER).is_file()


def describe(folder: Path, dataset: str) -> str:
    """``synthetic CREMA-D``, ``CREMA-D prepared from /raw``, or ``your CREMA-D at /data``."""
    folder = Path(folder)
    if is_synthetic(folder):
        return f"synthetic {dataset}"
    marker = folder / PREPARED_MARKER
    if marker.is_file():
        try:
            raw = json.loads(marker.read_text()).get("raw")
        except (OSError, ValueError, AttributeError):
            raw = None
        return f"{dataset} prepared from {raw}" if raw else f"{dataset} at {folder}"
    return f"your {dataset} at {folder}"
