"""``simam2 prepare ogm-ge``: tiny real FLV/MP4 clips, made with the decoding library, prepared end to end
into main.py's layout, then one epoch of OGM-GE's own main.py on the result."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from simam2.adapters.cli import main
from simam2.adapters.ogm_ge import decode
from simam2.adapters.ogm_ge.checks import warn_absent
from simam2.adapters.ogm_ge.prepare import prepare

cv2 = pytest.importorskip("cv2", reason="simam2 prepare needs opencv-python-headless: pip install -e '.[prepare]'")
import raw_clips  # noqa: E402  (needs cv2)

FPS = 10  # the tiny clips' frame rate: 2.5 s keep the frames at 0, 10 and 20


def test_kept_frames_are_the_first_of_every_second():
    # video2frame_update with frame_kept_per_second=1: indices 0, fps, 2·fps, …
    assert decode.kept_frame_indices(75, 30) == [0, 30, 60]
    assert decode.kept_frame_indices(100, 25) == [0, 25, 50, 75]
    assert decode.kept_frame_indices(25, 25) == [0]
    # two per second at 30 fps: interval int(30 / 2) = 15
    assert decode.kept_frame_indices(61, 30, 2) == [0, 15, 30, 45, 60]
    # 29.97 fps reads as int 29: the counter restarts every 29 frames, as upstream
    assert decode.kept_frame_indices(90, 29) == [0, 29, 58, 87]
    with pytest.raises(decode.ClipError, match="frame rate 0"):
        decode.kept_frame_indices(10, 0)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [r for r in csv.reader(f) if r]


@pytest.fixture(scope="module")
def ogm_checkout(upstream_checkout):
    return upstream_checkout("ogm-ge")


@pytest.fixture(scope="module")
def prepared(ogm_checkout, tmp_path_factory):
    """4 train + 3 test official clip names as downloaded, one of them a corrupt FLV and one without video."""
    root = tmp_path_factory.mktemp("cremad")
    names = raw_clips.cremad_names(ogm_checkout, 4)
    clips = [n for split in ("train", "test") for n, _ in names[split][: 4 if split == "train" else 3]]
    raw = raw_clips.write_raw_cremad(root / "raw", clips, seconds=2.5, fps=FPS)
    corrupt, no_video = names["train"][3][0], names["test"][2][0]
    (raw / "VideoFlash" / f"{corrupt}.flv").write_bytes(b"FLV\x01 but then nothing of a video" * 8)
    (raw / "VideoFlash" / f"{no_video}.flv").unlink()
    out = root / "out"
    err = io.StringIO()
    result = prepare(raw, out, jobs=2, checkout=ogm_checkout, stream=err)
    return dict(raw=raw, out=out, names=names, corrupt=corrupt, no_video=no_video, result=result, err=err.getvalue(),
                good=[c for c in clips if c not in (corrupt, no_video)])


def test_cremad_is_prepared_in_main_py_layout(prepared, ogm_checkout):
    out, raw, result = prepared["out"], prepared["raw"], prepared["result"]
    for clip in prepared["good"]:
        frames = sorted(p.name for p in (out / "Image-01-FPS" / clip).iterdir())
        assert frames == ["00000.jpg", "00010.jpg", "00020.jpg"]
        # each kept frame is OpenCV's own JPEG of that frame of the video, byte for byte
        capture = cv2.VideoCapture(str(raw / "VideoFlash" / f"{clip}.flv"))
        images = [capture.read()[1] for _ in range(21)]
        for name in frames:
            assert (out / "Image-01-FPS" / clip / name).read_bytes() == cv2.imencode(".jpg", images[int(name[:5])])[1].tobytes()
        assert os.path.samefile(out / "AudioWAV" / f"{clip}.wav", raw / "AudioWAV" / f"{clip}.wav")
    # the official lists, in their order, filtered to the clips prepared
    for split in ("train", "test"):
        official = _rows(ogm_checkout / "data" / "CREMAD" / f"{split}.csv")
        assert _rows(out / "data" / "CREMAD" / f"{split}.csv") == [r for r in official if r[0] in prepared["good"]]
    assert result.listed == {"train": 6698, "test": 744}
    assert result.prepared == {"train": 3, "test": 2} and result.missing == {"train": 6694, "test": 742}
    assert [name for name, _ in result.failed] == [prepared["corrupt"]] and result.resumed == 0
    # the corrupt clip left nothing: no frames, no audio, no temporary folder
    assert not (out / "Image-01-FPS" / prepared["corrupt"]).exists()
    assert not (out / "AudioWAV" / f"{prepared['corrupt']}.wav").exists()
    assert not list(out.rglob(".*.part-*"))
    assert json.loads((out / ".simam2-prepared").read_text())["raw"] == str(raw)
    assert "prepare: 6/6 clips (0 from an earlier run)" in prepared["err"]


def test_a_rerun_resumes_and_redoes_only_what_is_missing(prepared, ogm_checkout, tmp_path, capsys):
    out = prepared["out"]
    first, second = prepared["good"][:2]
    kept = (out / "Image-01-FPS" / second / "00000.jpg").stat().st_ino
    import shutil

    shutil.rmtree(out / "Image-01-FPS" / first)  # as if interrupted before this clip
    (out / "Image-01-FPS" / f".{first}.part-99").mkdir()  # and its half-written frames
    assert main(["prepare", "ogm-ge", str(prepared["raw"]), str(out), "--jobs", "2",
                 "--checkout", str(ogm_checkout)]) == 0
    printed = capsys.readouterr().out
    assert "4 clip(s) were complete from an earlier run and kept" in printed
    assert f"1 clip(s) could not be read and were skipped:\n  {prepared['corrupt']}: " in printed
    assert "train: 6698 listed, 6694 without files in the download, 3 prepared" in printed
    assert len(list((out / "Image-01-FPS" / first).iterdir())) == 3
    assert (out / "Image-01-FPS" / second / "00000.jpg").stat().st_ino == kept
    assert not list(out.rglob(".*.part-*"))


def test_one_epoch_of_main_py_runs_on_the_prepared_folder(prepared, ogm_checkout, tmp_path, capsys):
    record = tmp_path / "run.jsonl"
    assert main(["run", "ogm-ge", "--checkout", str(ogm_checkout), "--fusion", "sum", "--record", str(record),
                 "--workdir", str(prepared["out"]), "--", "--alpha", "0.8", "--ckpt_path", str(tmp_path / "ckpt"),
                 "--train", "--epochs", "1", "--batch_size", "3", "--audio_path", "AudioWAV", "--visual_path", "."]) == 0
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert rows[-1]["event"] == "end" and rows[-1]["status"] == "completed"
    evals = [r for r in rows if r["event"] == "eval"]
    assert evals and 0.0 <= evals[-1]["top1"] <= 1.0
    assert "have no files" not in capsys.readouterr().err  # the prepared lists name only prepared clips


def test_run_warns_of_listed_clips_without_files(prepared, ogm_checkout, tmp_path, capsys):
    """The raw download beside the official lists (as OGM-GE's README has it): main.py would skip
    every listed clip without files, silently; simam2 run says how many, and names a few."""
    absent = {"train": ["a", "b"], "test": ["c", "d", "e"]}
    stream = io.StringIO()
    warn_absent(absent, 9, stream)
    assert stream.getvalue() == ("warning: 5 of 9 listed clips have no files and main.py skips them "
                                 "(train 2, test 3; e.g. a, b, c, …)\n")
    from simam2.adapters.ogm_ge.checks import check_dataset

    work = tmp_path / "work"
    (work / "data" / "CREMAD").mkdir(parents=True)
    for split in ("train", "test"):
        rows = _rows(prepared["out"] / "data" / "CREMAD" / f"{split}.csv") + [[f"1999_NOP_NEU_{split}", "NEU"]]
        with open(work / "data" / "CREMAD" / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    check_dataset(["--audio_path", str(prepared["out"] / "AudioWAV"), "--visual_path", str(prepared["out"])], work)
    assert "warning: 2 of 7 listed clips have no files and main.py skips them (train 1, test 1; " \
           "e.g. 1999_NOP_NEU_train, 1999_NOP_NEU_test)" in capsys.readouterr().err


def test_vggsound_is_prepared_as_mp4_to_wav_and_the_frame_step_make_it(tmp_path):
    pytest.importorskip("av", reason="VGGSound's audio is decoded by PyAV: pip install -e '.[prepare]'")
    import soundfile

    rows = [("aaa", "30", "dog", "train"), ("bbb", "10", "cat", "train"), ("ccc", "0", "dog", "test"),
            ("ddd", "5", "cat", "test"), ("eee", "7", "cat", "test")]
    raw = raw_clips.write_raw_vggsound(tmp_path / "raw", rows[:4], seconds=4.5, fps=8)
    with open(raw / "vggsound.csv", "a", newline="") as f:  # listed, never downloaded
        csv.writer(f).writerow(rows[4])
    result = prepare(raw, tmp_path / "out", dataset="VGGSound", jobs=2, stream=io.StringIO())
    out = tmp_path / "out"
    assert result.prepared == {"train": 2, "test": 2} and result.missing == {"train": 0, "test": 1}
    assert _rows(out / "data" / "VGGSound" / "vggsound.csv") == [list(r) for r in rows[:4]]
    frames = out / "test-videos" / "test-set-img" / "Image-01-FPS" / "ccc_0.mp4"
    assert sorted(p.name for p in frames.iterdir()) == ["00000.jpg", "00008.jpg", "00016.jpg", "00024.jpg", "00032.jpg"]
    info = soundfile.info(str(out / "train-audios" / "train-set" / "aaa_30.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 2, "PCM_16")
    assert abs(info.duration - 4.5) < 0.1
    samples, _ = soundfile.read(str(out / "train-audios" / "train-set" / "aaa_30.wav"))
    spectrum = np.abs(np.fft.rfft(samples[16000:32000, 0]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # the 440 Hz tone survives the resampling


def test_prepare_refuses_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert main(["prepare", "ogm-ge", str(tmp_path / "raw"), str(tmp_path / "out"), "--checkout", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not CREMA-D as downloaded: no AudioWAV/ folder" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert main(["prepare", "ogm-ge", str(tmp_path / "raw"), str(tmp_path / "raw" / "out")]) == 2
    assert "inside the raw dataset" in capsys.readouterr().err
