"""What the synthetic datasets of several upstreams share: balanced labels and class-tinted frames."""

from __future__ import annotations

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
