"""One clip's decoding for ``simam2 prepare ogm-ge``: frames as OGM-GE's preprocessing keeps them,
audio as its ``mp4_to_wav.py`` converts it. Each output is written under a temporary name and
renamed into place, so a clip is either complete or absent.

Frames (``data/CREMAD/video_preprocessing.py`` and ``data/VGGSound/video_preprocessing.py``,
``video2frame_update``): the frame rate is ``int(CAP_PROP_FPS)``; frames are read in order up to
``CAP_PROP_FRAME_COUNT``; a frame counter restarts at every multiple of the frame rate, and with
``kept_per_second`` k and interval ``int(fps / k)`` the frames at counter 0, interval, … below
interval·k are kept — for k = 1 the first frame of every second, indices 0, fps, 2·fps, …. Each is
JPEG-encoded by ``cv2.imencode`` (its default quality) as ``{index:05d}.jpg``.

Audio (VGGSound's ``mp4_to_wav.py``: ``ffmpeg -acodec pcm_s16le -ar 16000``): the first audio
stream resampled to 16 kHz, 16-bit PCM, its channels kept. OpenCV reads no audio, so PyAV (the
FFmpeg libraries in a wheel) decodes it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

VGGSOUND_AUDIO_RATE = 16000  # mp4_to_wav.py's -ar 16000


class ClipError(Exception):
    """A clip that cannot be read: it is listed at the end of the run and skipped."""


def kept_frame_indices(frame_count: int, fps: int, kept_per_second: int = 1) -> list[int]:
    """The frame indices ``video2frame_update`` keeps of a video of ``frame_count`` frames."""
    interval = int(fps / kept_per_second)
    if fps <= 0 or interval <= 0:
        raise ClipError(f"frame rate {fps} cannot keep {kept_per_second} frame(s) per second")
    kept, frame_id = [], 0
    for count in range(frame_count):
        if count % fps == 0:
            frame_id = 0
        if frame_id < interval * kept_per_second and frame_id % interval == 0:
            kept.append(count)
        frame_id += 1
    return kept


def _part(final: Path) -> Path:
    return final.with_name(f".{final.name}.part-{os.getpid()}")


def remove_parts(folder: Path) -> int:
    """Remove what an interrupted run left under temporary names in ``folder``; how many."""
    if not folder.is_dir():
        return 0
    stale = list(folder.glob(".*.part-*"))
    for p in stale:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return len(stale)


def write_frames(video: Path, out: Path, kept_per_second: int = 1) -> int:
    """Decode ``video`` into ``out/{index:05d}.jpg`` as OGM-GE's preprocessing does; the number kept."""
    import cv2

    cv2.setNumThreads(1)  # one clip per process: --jobs spreads the work over the cores
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise ClipError("OpenCV cannot open it")
        fps = int(capture.get(cv2.CAP_PROP_FPS))
        frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if fps <= 0 or frame_count <= 0:
            raise ClipError(f"no frames to read (frame rate {fps}, {frame_count} frames)")
        keep = set(kept_frame_indices(frame_count, fps, kept_per_second))
        part = _part(out)
        part.mkdir(parents=True)
        try:
            written = 0
            for count in range(frame_count):
                ok, image = capture.read()
                if not ok:
                    break  # the upstream stops at the first frame it cannot read, as here
                if count in keep:
                    ok, jpeg = cv2.imencode(".jpg", image)
                    if not ok:
                        raise ClipError(f"cannot encode frame {count} as JPEG")
                    (part / f"{count:05d}.jpg").write_bytes(jpeg.tobytes())
                    written += 1
            if written == 0:
                raise ClipError("no frame could be decoded")
            os.rename(part, out)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
        return written
    finally:
        capture.release()


def place_audio(wav: Path, out: Path) -> None:
    """``wav`` at ``out``: a hard link where the file system allows one, else a copy."""
    import soundfile

    try:
        soundfile.info(str(wav))
    except Exception as e:  # soundfile raises its own error types, and RuntimeError for some files
        raise ClipError(f"unreadable audio {wav.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    part = _part(out)
    try:
        try:
            os.link(wav, part)
        except OSError:
            shutil.copyfile(wav, part)
        os.rename(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def write_wav_16k(video: Path, out: Path) -> None:
    """The first audio stream of ``video`` at 16 kHz, 16-bit PCM, its channels kept (mp4_to_wav.py)."""
    import av
    import numpy as np
    import soundfile

    part = _part(out)
    try:
        try:
            with av.open(str(video)) as container:
                if not container.streams.audio:
                    raise ClipError("no audio stream")
                stream = container.streams.audio[0]
                channels = stream.codec_context.channels or 1
                resampler = av.AudioResampler(format="s16", layout=stream.layout.name, rate=VGGSOUND_AUDIO_RATE)
                chunks = []
                for frame in container.decode(stream):
                    chunks += [f.to_ndarray() for f in resampler.resample(frame)]
                chunks += [f.to_ndarray() for f in resampler.resample(None)]  # what the resampler holds back
        except av.error.FFmpegError as e:
            raise ClipError(f"cannot decode its audio: {e}") from None
        if not chunks:
            raise ClipError("its audio stream holds no samples")
        # packed s16: one row of interleaved samples per frame
        samples = np.concatenate([c.reshape(-1) for c in chunks]).reshape(-1, channels)
        soundfile.write(str(part), samples, VGGSOUND_AUDIO_RATE, subtype="PCM_16", format="WAV")
        os.rename(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
