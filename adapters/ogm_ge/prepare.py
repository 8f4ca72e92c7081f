"""``simam2 prepare ogm-ge RAW OUT``: CREMA-D or VGGSound as downloaded, in the layout main.py reads.

The layout is the one ``simam2 synth ogm-ge`` writes (:mod:`.synth`), so every command that takes a
synthetic folder takes a prepared one. What OGM-GE's own preprocessing does is reproduced in
behaviour (see :mod:`.decode`), not run: its scripts hard-code their paths and run on import.

CREMA-D (``RAW/AudioWAV/<clip>.wav``, ``RAW/VideoFlash/<clip>.flv``)::

    OUT/data/CREMAD/train.csv, test.csv   the pinned checkout's official lists, filtered to the clips prepared
    OUT/AudioWAV/<clip>.wav               the raw file, hard-linked (or copied)
    OUT/Image-01-FPS/<clip>/00000.jpg …   the first frame of every second

VGGSound (``RAW/vggsound.csv`` rows ``ytid,start,label,train|test``; ``RAW/{split}-videos/{split}-set/
<ytid>_<start>.mp4``, the folders OGM-GE's scripts read)::

    OUT/data/VGGSound/vggsound.csv                                   the rows prepared
    OUT/{split}-audios/{split}-set/<clip>.wav                        16 kHz PCM (mp4_to_wav.py)
    OUT/{split}-videos/{split}-set-img/Image-01-FPS/<clip>.mp4/*.jpg  frames

Clips run on ``jobs`` processes. A clip's outputs appear under their final names only when
complete, so an interrupted run resumes where it stopped (complete clips are skipped). A clip that
cannot be read is skipped and listed at the end; the lists name only the clips prepared.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..machinery import AdapterError
from ..machinery.provenance import PREPARED_MARKER
from . import decode

DATASETS = ("CREMAD", "VGGSound")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Clip:
    """One clip's inputs and outputs."""

    name: str
    split: str
    video: Path
    frames: Path  # the clip's frame folder
    audio_out: Path
    audio_in: Path | None = None  # CREMA-D's own WAV; VGGSound's audio comes out of the video

    def done(self) -> bool:
        return self.frames.is_dir() and self.audio_out.is_file()


@dataclass
class Prepared:
    """What a run of :func:`prepare` did: clips per split, failures, what it skipped as done."""

    out: Path
    listed: dict[str, int]
    prepared: dict[str, int]
    missing: dict[str, int]  # listed, but not in RAW
    resumed: int
    failed: list[tuple[str, str]]
    seconds: float
    few_frames: int = 0  # VGGSound: prepared, but main.py keeps only clips with more than 3 frames


def _require_decoders(dataset: str) -> None:
    needed = ["cv2"] + (["av"] if dataset == "VGGSound" else [])
    import importlib.util

    absent = [m for m in needed if importlib.util.find_spec(m) is None]
    if absent:
        raise AdapterError(f"prepare decodes videos with opencv-python-headless{' and PyAV' if 'av' in needed else ''}, "
                           f"not installed here ({', '.join(absent)}): pip install -e '.[prepare]'")


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if row]


def _cremad_clips(raw: Path, out: Path, checkout: Path, fps: int) -> tuple[dict, list[Clip], dict]:
    for sub in ("AudioWAV", "VideoFlash"):
        if not (raw / sub).is_dir():
            raise AdapterError(f"{raw} is not CREMA-D as downloaded: no {sub}/ folder (expected AudioWAV/*.wav "
                               "and VideoFlash/*.flv)")
    lists = {s: _read_rows(checkout / "data" / "CREMAD" / f"{s}.csv") for s in SPLITS}
    clips, missing = [], {}
    for split, rows in lists.items():
        missing[split] = 0
        for clip, _label in (r[:2] for r in rows):
            video, wav = raw / "VideoFlash" / f"{clip}.flv", raw / "AudioWAV" / f"{clip}.wav"
            if not (video.is_file() and wav.is_file()):
                missing[split] += 1
                continue
            clips.append(Clip(clip, split, video, out / f"Image-{fps:02d}-FPS" / clip, out / "AudioWAV" / f"{clip}.wav",
                              audio_in=wav))
    return lists, clips, missing


def _vggsound_clips(raw: Path, out: Path, fps: int, checkout: Path | None) -> tuple[dict, list[Clip], dict]:
    listing = raw / "vggsound.csv"
    if not listing.is_file() and checkout is not None:
        listing = checkout / "data" / "VGGSound" / "vggsound.csv"  # the pinned checkout's, where it was had
    if not listing.is_file():
        raise AdapterError(f"{raw} has no vggsound.csv (VGGSound's list: ytid,start,label,train|test), and the "
                           f"checkout lacks one: put the list there")
    rows = _read_rows(listing)
    lists = {s: [r for r in rows if len(r) >= 4 and r[3] == s] for s in SPLITS}
    clips, missing = [], {}
    for split, split_rows in lists.items():
        missing[split] = 0
        for ytid, start, *_ in split_rows:
            clip = f"{ytid}_{start}"
            video = raw / f"{split}-videos" / f"{split}-set" / f"{clip}.mp4"
            if not video.is_file():
                missing[split] += 1
                continue
            clips.append(Clip(clip, split, video,
                              out / f"{split}-videos" / f"{split}-set-img" / f"Image-{fps:02d}-FPS" / f"{clip}.mp4",
                              out / f"{split}-audios" / f"{split}-set" / f"{clip}.wav"))
    return lists, clips, missing


def _prepare_clip(job: tuple[Clip, int]) -> tuple[Clip, str | None, int]:
    """(clip, None or why it failed, frames kept); runs in a worker process."""
    clip, fps = job
    try:
        if not clip.frames.is_dir():
            clip.frames.parent.mkdir(parents=True, exist_ok=True)
            frames = decode.write_frames(clip.video, clip.frames, fps)
        else:
            frames = len(list(clip.frames.glob("*.jpg")))
        if not clip.audio_out.is_file():
            clip.audio_out.parent.mkdir(parents=True, exist_ok=True)
            if clip.audio_in is not None:
                decode.place_audio(clip.audio_in, clip.audio_out)
            else:
                decode.write_wav_16k(clip.video, clip.audio_out)
        return clip, None, frames
    except decode.ClipError as e:
        return clip, str(e), 0
    except Exception as e:  # a decoder's own failure on one clip must not stop the others
        return clip, f"{type(e).__name__}: {e}", 0


def _remove_partial(clip: Clip) -> None:
    """A clip that failed half-way (frames written, audio not) leaves neither behind."""
    import shutil

    if clip.frames.is_dir():
        shutil.rmtree(clip.frames)
    clip.audio_out.unlink(missing_ok=True)


def _write_lists(dataset: str, out: Path, lists: dict, ok: set[tuple[str, str]]) -> dict[str, int]:
    counts = {}
    folder = out / "data" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    if dataset == "CREMAD":
        for split, rows in lists.items():
            kept = [r for r in rows if (split, r[0]) in ok]
            _write_csv(folder / f"{split}.csv", kept)
            counts[split] = len(kept)
    else:
        kept = [r for split, rows in lists.items() for r in rows if (split, f"{r[0]}_{r[1]}") in ok]
        _write_csv(folder / "vggsound.csv", kept)
        counts = {s: sum(r[3] == s for r in kept) for s in SPLITS}
    return counts


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    part = path.with_name(f".{path.name}.part-{os.getpid()}")
    with open(part, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    os.replace(part, path)


def _progress_line(stream, total: int, resumed: int) -> Callable[[int], None]:
    """``show(n)``: one line, rewritten in place on a terminal (twice a second at most), of ``n``
    clips decoded by this run and its rate."""
    started = time.perf_counter()
    last = [started]
    tty = stream.isatty()

    def show(decoded: int) -> None:
        now = time.perf_counter()
        done = resumed + decoded
        if done < total and now - last[0] < (0.5 if tty else 10.0):
            return
        last[0] = now
        rate = decoded / max(now - started, 1e-9)
        print(f"\rprepare: {done}/{total} clips ({resumed} from an earlier run), {rate:.1f} clips/s",
              end="\n" if done == total or not tty else "", file=stream, flush=True)

    return show


def prepare(raw, out, dataset: str = "CREMAD", jobs: int | None = None, checkout=None, fps: int = 1,
            stream=sys.stderr) -> Prepared:
    """Prepare ``raw`` (the download) into ``out``; see the module's docstring. ``checkout``: OGM-GE's
    patched checkout (CREMA-D's lists), default the cached one; ``fps``: frames kept per second."""
    if dataset not in DATASETS:
        raise AdapterError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if fps < 1:
        raise AdapterError(f"--fps must be at least 1, got {fps}")
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise AdapterError(f"--jobs must be at least 1, got {jobs}")
    raw, out = Path(raw).absolute(), Path(out).absolute()
    if not raw.is_dir():
        raise AdapterError(f"{raw} is not a folder (the dataset as downloaded)")
    if out == raw or raw in out.parents:
        raise AdapterError(f"{out} is inside the raw dataset {raw}: name a folder of its own")
    _require_decoders(dataset)
    if checkout is None and (dataset == "CREMAD" or not (raw / "vggsound.csv").is_file()):
        from ..machinery.install import checkout_of
        from .spec import SPEC

        checkout = checkout_of(SPEC)
    if dataset == "CREMAD":
        lists, clips, missing = _cremad_clips(raw, out, Path(checkout), fps)
    else:
        lists, clips, missing = _vggsound_clips(raw, out, fps, Path(checkout) if checkout else None)
    if not clips:
        raise AdapterError(f"no listed {dataset} clip has its files in {raw}: nothing to prepare")
    out.mkdir(parents=True, exist_ok=True)
    for folder in {c.frames.parent for c in clips} | {c.audio_out.parent for c in clips}:
        decode.remove_parts(folder)  # what an interrupted run left under temporary names
    todo = [c for c in clips if not c.done()]
    resumed = len(clips) - len(todo)
    started = time.perf_counter()
    show = _progress_line(stream, len(clips), resumed)
    failed: list[tuple[str, str]] = []
    few_frames = 0
    decoded = 0
    # fork: a spawned worker would import torch again (simam2.adapters does) before its first clip
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(min(jobs, max(len(todo), 1))) as pool:
        for clip, error, frames in pool.imap_unordered(_prepare_clip, [(c, fps) for c in todo], chunksize=1):
            decoded += 1
            if error is not None:
                _remove_partial(clip)
                failed.append((clip.name, error))
            elif dataset == "VGGSound" and frames <= 3:
                few_frames += 1
            show(decoded)
    ok = {(c.split, c.name) for c in clips if c.done()}
    prepared = _write_lists(dataset, out, lists, ok)
    (out / PREPARED_MARKER).write_text(json.dumps(
        {"by": "simam2 prepare ogm-ge", "dataset": dataset, "raw": str(raw), "fps": fps,
         "clips": prepared}, indent=2) + "\n")
    return Prepared(out, {s: len(r) for s, r in lists.items()}, prepared, missing, resumed, sorted(failed),
                    time.perf_counter() - started, few_frames)


def report(result: Prepared, dataset: str) -> str:
    """What a run did, for the terminal: counts per split, failures listed."""
    lines = []
    for split in SPLITS:
        lines.append(f"{split}: {result.listed[split]} listed, {result.missing[split]} without files in the "
                     f"download, {result.prepared[split]} prepared")
    if result.resumed:
        lines.append(f"{result.resumed} clip(s) were complete from an earlier run and kept")
    if result.few_frames:
        lines.append(f"{result.few_frames} clip(s) have 3 frames or fewer, which main.py's VGGSound loader skips")
    if result.failed:
        lines.append(f"{len(result.failed)} clip(s) could not be read and were skipped:")
        lines += [f"  {name}: {why}" for name, why in result.failed]
    audio = "AudioWAV" if dataset == "CREMAD" else "."
    lines.append(f"prepared {dataset} in {result.out}: run main.py there with --audio_path {audio} --visual_path . "
                 f"(simam2 run ogm-ge --workdir {result.out} -- --dataset {dataset} ...)")
    return "\n".join(lines)
