"""Tiny real clips, made with the library that decodes them (OpenCV's VideoWriter; PyAV for an MP4
with sound): CREMA-D and VGGSound as downloaded, for ``simam2 prepare ogm-ge``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile

CREMAD_AUDIO_RATE = 16000  # CREMA-D's AudioWAV files


def _frames(n: int, size: tuple[int, int], shade: int) -> list[np.ndarray]:
    w, h = size
    rng = np.random.default_rng(shade)
    return [np.clip(shade + 20 * rng.standard_normal((h, w, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def write_flv(path: Path, seconds: float, fps: int, size=(32, 24), shade: int = 100) -> int:
    """An FLV1 video of ``seconds`` at ``fps``; the number of frames written."""
    import cv2

    n = int(round(seconds * fps))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FLV1"), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write FLV1 to {path}"
    for frame in _frames(n, size, shade):
        writer.write(frame)
    writer.release()
    return n


def cremad_names(checkout: Path, per_split: int) -> dict[str, list[tuple[str, str]]]:
    """The first ``per_split`` (clip, emotion) rows of the checkout's official train and test lists."""
    names = {}
    for split in ("train", "test"):
        with open(checkout / "data" / "CREMAD" / f"{split}.csv", newline="") as f:
            names[split] = [tuple(r[:2]) for r, _ in zip(csv.reader(f), range(per_split))]
    return names


def write_raw_cremad(raw: Path, clips: list[str], seconds: float = 2.5, fps: int = 10) -> Path:
    """CREMA-D as downloaded: AudioWAV/<clip>.wav (16 kHz) and VideoFlash/<clip>.flv for each clip."""
    (raw / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (raw / "VideoFlash").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, clip in enumerate(clips):
        t = np.arange(int(seconds * CREMAD_AUDIO_RATE)) / CREMAD_AUDIO_RATE
        wave = 0.3 * np.sin(2 * np.pi * (300 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(raw / "AudioWAV" / f"{clip}.wav", wave.astype(np.float32), CREMAD_AUDIO_RATE,
                        subtype="PCM_16")
        write_flv(raw / "VideoFlash" / f"{clip}.flv", seconds, fps, shade=60 + 10 * (i % 12))
    return raw


def write_mp4_with_sound(path: Path, seconds: float, fps: int, rate: int = 44100, size=(32, 24), shade: int = 100):
    """An MPEG-4 video with a stereo AAC track at ``rate`` Hz (PyAV: OpenCV writes no audio)."""
    import av

    n = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="stereo")
        for frame in _frames(n, size, shade):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        samples = np.stack([tone, tone])  # planar stereo
        step = 1024
        for start in range(0, samples.shape[1], step):
            chunk = np.ascontiguousarray(samples[:, start:start + step])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.rate = rate
            frame.pts = start
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


def write_raw_vggsound(raw: Path, rows: list[tuple[str, int, str, str]], seconds: float = 4.5, fps: int = 8) -> Path:
    """VGGSound as OGM-GE's scripts read it: vggsound.csv and {split}-videos/{split}-set/<ytid>_<start>.mp4."""
    raw.mkdir(parents=True, exist_ok=True)
    with open(raw / "vggsound.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    for i, (ytid, start, _label, split) in enumerate(rows):
        folder = raw / f"{split}-videos" / f"{split}-set"
        folder.mkdir(parents=True, exist_ok=True)
        write_mp4_with_sound(folder / f"{ytid}_{start}.mp4", seconds, fps, shade=60 + 15 * i)
    return raw
