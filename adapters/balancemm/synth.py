"""A tiny synthetic CREMA-D in exactly the on-disk layout BalanceMM's ``CREMADDataset`` reads.

``balancemm/datasets/cremad_dataset.py`` at the pin::

    DIR/train.csv, DIR/test.csv       rows ``clip,EMO`` (EMO one of NEU HAP SAD FEA DIS ANG)  train_txt, test_txt
    DIR/audio/<clip>.pt               a 2-D float tensor (T, F), one shape for all clips       audio_path = DIR/audio/
    DIR/visual/<clip>/00000.jpg ...   at least ``fps`` (2) frames per clip                     visual_path = DIR/visual/

The loader joins ``audio_path + clip + '.pt'`` and ``visual_path + clip`` by string concatenation,
so both paths end with ``/`` (:func:`dataset_paths` gives them so). It keeps a row only when the
label is known, the audio file exists and the frame folder holds at least ``fps`` files. The audio
stands for the pre-extracted filterbank of the real set (300 × 128 there); every clip has the same
shape because the default collate stacks them.

Each clip's class shows in both modalities with a controllable strength, so that one modality can
be made to dominate, as audio does in CREMA-D: the audio is unit Gaussian noise plus ``audio_snr``
on a class-specific band of frequency bins, the frames a class-specific colour tint (``visual_snr``
times a unit colour direction) on pixel noise. A tint survives the random crops and flips of the
training transform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..machinery.synthetic import CREMAD_EMOTIONS, palette, tinted_frame, write_cremad_lists

#: CREMADDataset's class_dict order.
FPS = 2  # dataset_config.yaml's CREMAD fps: frames drawn per clip


def dataset_paths(root) -> dict[str, str]:
    """The ``config['dataset']`` entries that point CREMADDataset at a set written by :func:`write_cremad`
    (absolute; the two folders end with ``/`` because the loader concatenates strings)."""
    root = Path(root).absolute()
    return {"train_txt": str(root / "train.csv"), "test_txt": str(root / "test.csv"),
            "audio_path": str(root / "audio") + "/", "visual_path": str(root / "visual") + "/"}




def _fbank(label: int, classes: int, shape: tuple[int, int], snr: float, rng: np.random.Generator) -> torch.Tensor:
    """(T, F) unit Gaussian noise with ``snr`` added on the label's band of F // classes bins."""
    t, f = shape
    x = rng.standard_normal((t, f)).astype(np.float32)
    band = f // classes
    x[:, label * band:(label + 1) * band] += snr
    return torch.from_numpy(x)






def write_cremad(out_dir, n_train: int = 12, n_test: int = 12, audio_snr: float = 1.0,
                 visual_snr: float = 0.3, frames: int = FPS, frame_size: int = 64,
                 audio_shape: tuple[int, int] = (100, 64), seed: int = 0) -> Path:
    """Write a synthetic CREMA-D to ``out_dir``; returns it (:func:`dataset_paths` points BalanceMM at it).

    ``frame_size`` is free: the loader resizes (test) or crops (train) every frame to 224 × 224.
    ``audio_shape`` (T, F) must give F ≥ 6 so that every class has a band of its own.
    """
    classes = len(CREMAD_EMOTIONS)
    if n_train < 1 or n_test < 1:
        raise ValueError(f"need at least one train and one test clip, got n_train={n_train}, n_test={n_test}")
    if audio_snr < 0 or visual_snr < 0:
        raise ValueError(f"signal strengths must be non-negative, got audio_snr={audio_snr}, visual_snr={visual_snr}")
    if frames < FPS:
        raise ValueError(f"each clip needs at least fps={FPS} frames, got {frames}")
    if len(audio_shape) != 2 or audio_shape[0] < 1 or audio_shape[1] < classes:
        raise ValueError(f"audio_shape must be (T, F) with T >= 1 and F >= {classes}, got {tuple(audio_shape)}")
    if frame_size < 1:
        raise ValueError(f"frame_size must be positive, got {frame_size}")
    out = Path(out_dir)
    audio_dir, visual_dir = out / "audio", out / "visual"
    audio_dir.mkdir(parents=True, exist_ok=True)
    visual_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tints = palette(classes, seed)

    def write_clip(clip: str, label: int) -> None:
        torch.save(_fbank(label, classes, tuple(audio_shape), audio_snr, rng), audio_dir / f"{clip}.pt")
        folder = visual_dir / clip
        folder.mkdir(exist_ok=True)
        for i in range(frames):
            tinted_frame(tints[label], frame_size, visual_snr, rng).save(folder / f"{i:05d}.jpg", quality=90)

    write_cremad_lists(out, n_train, n_test, rng, write_clip)
    return out
