"""What the synthetic datasets of several upstreams share: balanced labels and class-tinted frames."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


def balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Every class as evenly as n allows (so accuracy, per-class AP and macro-F1 see each class), shuffled."""
    return rng.permutation(np.arange(n) % classes)


def palette(classes: int, seed: int) -> np.ndarray:
    """(classes, 3) unit colour directions, one per class, fixed by the seed."""
    p = np.random.default_rng(seed + 7919).standard_normal((classes, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def tinted_frame(tint: np.ndarray, size: int, snr: float, rng: np.random.Generator) -> Image.Image:
    """Mid-grey, plus ``snr`` × the class tint, plus unit pixel noise; 40 grey levels per unit."""
    pixels = 128 + 40 * (snr * tint + rng.standard_normal((size, size, 3)))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


#: CREMA-D's six emotions, in the order the upstreams' loaders index them
CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")


def write_cremad_lists(lists_dir: Path, n_train: int, n_test: int, rng: np.random.Generator,
                       write_clip: Callable[[str, int], object]) -> None:
    """Name ``n_train`` / ``n_test`` balanced clips as CREMA-D does, let ``write_clip(clip, label)``
    write each one's files, and write ``train.csv`` / ``test.csv`` (``clip,EMOTION``) to ``lists_dir``."""
    index = 0
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for label in balanced_labels(n, len(CREMAD_EMOTIONS), rng):
            clip = f"{1001 + index}_SYN_{CREMAD_EMOTIONS[label]}_XX"  # actor_sentence_emotion_level
            index += 1
            write_clip(clip, int(label))
            rows.append((clip, CREMAD_EMOTIONS[label]))
        with open(Path(lists_dir) / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
