"""Tiny synthetic CREMA-D and VGGSound sets in exactly the on-disk layout OGM-GE's loaders read.

CREMA-D (``dataset/CramedDataset.py``)::

    DIR/data/CREMAD/train.csv, test.csv     rows ``clip,EMO``; read from ``./data/CREMAD`` of the cwd
    DIR/AudioWAV/<clip>.wav                 --audio_path DIR/AudioWAV
    DIR/Image-01-FPS/<clip>/00000.jpg ...   --visual_path DIR (the loader appends Image-{fps:02d}-FPS)

VGGSound (``dataset/VGGSoundDataset.py``, with the dataset-roots patch)::

    DIR/data/VGGSound/vggsound.csv          rows ``ytid,start,label,train|test``
    DIR/train-audios/train-set/<ytid>_<start>.wav                        --audio_path DIR
    DIR/train-videos/train-set-img/Image-01-FPS/<ytid>_<start>.mp4/*.jpg --visual_path DIR
    (and test-audios/test-set, test-videos/test-set-img)

Each clip's class shows in both modalities with a controllable strength, so that one modality can
be made to dominate, as audio does in CREMA-D: the audio is a class-specific tone in white noise
(``audio_snr`` is the tone's amplitude over the noise's std), the frames a class-specific colour
tint on pixel noise (``visual_snr`` is the tint over the noise's std). A tint survives the random
crops and flips of the training transform; a tone shows in every column of the log spectrogram.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile

from ..machinery.provenance import mark_synthetic
from ..machinery.synthetic import CREMAD_EMOTIONS, balanced_labels, palette, tinted_frame, write_cremad_lists

#: CramedDataset's class_dict order.
CREMAD_SR = 22050  # CramedDataset loads at 22050 Hz and tiles the clip to 3 s
VGGSOUND_SR = 16000  # VGGSound loads at 16 kHz and tiles the clip to 10 s


def _check(n_train: int, n_test: int, classes: int, audio_snr: float, visual_snr: float) -> None:
    if n_train < 1 or n_test < 1:
        raise ValueError(f"need at least one train and one test clip, got n_train={n_train}, n_test={n_test}")
    if classes < 2:
        raise ValueError(f"need at least 2 classes, got {classes}")
    if audio_snr < 0 or visual_snr < 0:
        raise ValueError(f"signal strengths must be non-negative, got audio_snr={audio_snr}, visual_snr={visual_snr}")




def _tone(label: int, classes: int, sr: int, seconds: float, snr: float, rng: np.random.Generator) -> np.ndarray:
    """A class-specific sine (frequencies spread over 300 Hz .. sr/4) in unit-std white noise, scaled
    into [-1, 1] the same way for every clip so that loudness carries no label."""
    freqs = np.linspace(300.0, sr / 4, classes)
    t = np.arange(int(sr * seconds)) / sr
    phase = rng.uniform(0, 2 * np.pi)
    wave = snr * np.sqrt(2) * np.sin(2 * np.pi * freqs[label] * t + phase) + rng.standard_normal(t.size)
    return (0.2 * wave / (1 + snr)).astype(np.float32)






def _write_frames(folder: Path, tint: np.ndarray, frames: int, size: int, snr: float,
                  rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        # the names CREMA-D's preprocessing writes: the frame index, five digits
        tinted_frame(tint, size, snr, rng).save(folder / f"{i * 30:05d}.jpg", quality=90)


def write_cremad(out_dir, n_train: int = 36, n_test: int = 12, audio_snr: float = 1.0,
                 visual_snr: float = 0.3, frames: int = 3, frame_size: int = 224, seconds: float = 1.0,
                 fps: int = 1, seed: int = 0) -> Path:
    """Write a synthetic CREMA-D to ``out_dir``; returns it. Run main.py with ``out_dir`` as the cwd,
    ``--dataset CREMAD --audio_path out_dir/AudioWAV --visual_path out_dir``.

    ``seconds`` ≥ 1: the loader tiles a clip three times and cuts 3 s, so shorter clips would give
    spectrograms of different widths, which the data loader cannot batch.
    """
    _check(n_train, n_test, len(CREMAD_EMOTIONS), audio_snr, visual_snr)
    if seconds < 1.0:
        raise ValueError(f"clips must last at least 1 s (the loader tiles them to 3 s), got {seconds}")
    if frames < fps:
        raise ValueError(f"each clip needs at least fps={fps} frames, got {frames}")
    out = Path(out_dir)
    classes = len(CREMAD_EMOTIONS)
    rng = np.random.default_rng(seed)
    tints = palette(classes, seed)
    lists = out / "data" / "CREMAD"
    audio_dir, image_dir = out / "AudioWAV", out / f"Image-{fps:02d}-FPS"
    for d in (lists, audio_dir, image_dir):
        d.mkdir(parents=True, exist_ok=True)

    def write_clip(clip: str, label: int) -> None:
        soundfile.write(audio_dir / f"{clip}.wav", _tone(label, classes, CREMAD_SR, seconds, audio_snr, rng),
                        CREMAD_SR, subtype="PCM_16")
        _write_frames(image_dir / clip, tints[label], frames, frame_size, visual_snr, rng)

    write_cremad_lists(lists, n_train, n_test, rng, write_clip)
    mark_synthetic(out, "simam2 synth ogm-ge", dataset="CREMAD", seed=seed)
    return out


def write_vggsound(out_dir, n_train: int = 12, n_test: int = 6, classes: int = 3, audio_snr: float = 1.0,
                   visual_snr: float = 0.3, frames: int = 4, frame_size: int = 224, seconds: float = 2.0,
                   fps: int = 1, seed: int = 0) -> Path:
    """Write a synthetic VGGSound to ``out_dir``; returns it. Run main.py with ``out_dir`` as the cwd,
    ``--dataset VGGSound --audio_path out_dir --visual_path out_dir`` (needs the dataset-roots patch).

    The loader keeps only clips with more than 3 frames, and asserts that train and test hold the
    same number of classes: every class appears in both (n_train, n_test ≥ classes).
    """
    _check(n_train, n_test, classes, audio_snr, visual_snr)
    if frames < 4:
        raise ValueError(f"the VGGSound loader skips clips with 3 frames or fewer, got frames={frames}")
    if min(n_train, n_test) < classes:
        raise ValueError(f"every class must appear in train and test: n_train, n_test >= classes={classes}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    tints = palette(classes, seed)
    names = [f"synthetic sound {c}" for c in range(classes)]
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        audio_dir = out / f"{split}-audios" / f"{split}-set"
        image_dir = out / f"{split}-videos" / f"{split}-set-img" / f"Image-{fps:02d}-FPS"
        audio_dir.mkdir(parents=True, exist_ok=True)
        for i, label in enumerate(balanced_labels(n, classes, rng)):
            ytid, start = f"syn{split}{i:05d}", 10 * i
            clip = f"{ytid}_{start}"
            soundfile.write(audio_dir / f"{clip}.wav",
                            _tone(label, classes, VGGSOUND_SR, seconds, audio_snr, rng), VGGSOUND_SR,
                            subtype="PCM_16")
            _write_frames(image_dir / f"{clip}.mp4", tints[label], frames, frame_size, visual_snr, rng)
            rows.append((ytid, start, names[label], split))
    lists = out / "data" / "VGGSound"
    lists.mkdir(parents=True, exist_ok=True)
    with open(lists / "vggsound.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    mark_synthetic(out, "simam2 synth ogm-ge", dataset="VGGSound", seed=seed)
    return out
