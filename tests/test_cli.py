"""The command line's answers to bad input: one line naming the option and the fix, exit 2, nothing created."""

from __future__ import annotations

import pytest

from simam2.adapters.cli import main


def test_synth_refuses_a_folder_with_files_and_a_file(tmp_path, capsys):
    target = tmp_path / "data"
    target.mkdir()
    (target / "labels.h5").write_bytes(b"mine")
    assert main(["synth", "fop", str(target)]) == 2
    assert "already holds files" in capsys.readouterr().err and (target / "labels.h5").read_bytes() == b"mine"
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["synth", "fop", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1


@pytest.mark.parametrize("options,message", [
    (["--zeta", "learnable"], "add --simam2"),
    (["--simam2", "--alpha", "-1"], "--alpha must be a finite number >= 0"),
    (["--simam2", "--zeta", "learnable", "--modulation", "df", "--lam", "nan"], "--lam must be a finite number >= 0"),
])
def test_run_options_that_cannot_work_are_one_line(options, message, capsys):
    assert main(["run", "ogm-ge", *options, "--", "--train"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_record_naming_a_folder_is_one_line(upstream_checkout, tmp_path, capsys):
    checkout = upstream_checkout("ogm-ge")
    assert main(["run", "ogm-ge", "--checkout", str(checkout), "--record", str(tmp_path), "--workdir", str(tmp_path),
                 "--", "--train"]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and err.count("\n") == 1


def test_a_workdir_inside_the_checkout_is_refused_before_anything_is_created(upstream_checkout, capsys):
    checkout = upstream_checkout("avga")
    inside = checkout / "runs-here"
    assert main(["run", "avga", "--workdir", str(inside), "--", "--train"]) == 2
    assert "inside the upstream checkout" in capsys.readouterr().err and not inside.exists()


@pytest.mark.parametrize("options,message", [
    (["--simam2", "--alpha", "inf"], "--alpha must be a finite number >= 0, got inf"),
    (["--modulation-start", "-3", "--modulation-end", "-1"], "--modulation-start must be an epoch >= 0"),
    (["--modulation-end", "-1"], "--modulation-end must be an epoch >= 0"),
])
def test_an_infinite_alpha_and_a_window_that_never_opens_are_refused(options, message, tmp_path, capsys):
    rc = main(["run", "ogm-ge", *options, "--record", str(tmp_path / "r.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err  # was: accepted, passed to main.py
    assert not any(tmp_path.iterdir())


def test_a_run_refused_before_its_script_began_leaves_no_records_and_no_workdir(upstream_checkout, tmp_path, capsys):
    """Refused by the spec's checks (FOP's --batch_size 1) or by the script's own parser (main.py
    without --ckpt_path): no records file, no TensorBoard folder, no working directory the command
    made, and an appended-to file cut back; the corrected rerun is not refused as holding records."""
    fop, ogm = upstream_checkout("fop"), upstream_checkout("ogm-ge")
    assert main(["synth", "fop", str(tmp_path / "fop-data")]) == 0
    assert main(["synth", "ogm-ge", str(tmp_path / "cremad")]) == 0
    capsys.readouterr()
    record, workdir, board = tmp_path / "r.jsonl", tmp_path / "w", tmp_path / "tb"
    rc = main(["run", "fop", "--checkout", str(fop), "--data", str(tmp_path / "fop-data"), "--workdir", str(workdir),
               "--record", str(record), "--tensorboard", str(board), "--", "--batch_size", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "need at least 2 samples per batch" in err and err.count("\n") == 1, err
    assert not record.exists() and not workdir.exists() and not board.exists()  # was: start + failed, w/
    rc = main(["run", "ogm-ge", "--checkout", str(ogm), "--workdir", str(tmp_path / "cremad"), "--record", str(record),
               "--", "--audio_path", "AudioWAV", "--visual_path", "."])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines()[-1] == ("simam2 run: error: ogm-ge: main.py refused its arguments: "
                                                        "the following arguments are required: --ckpt_path"), err
    assert not record.exists()
    record.write_text('{"event": "start"}\n{"event": "end", "status": "completed"}\n')
    before = record.read_bytes()
    rc = main(["run", "ogm-ge", "--checkout", str(ogm), "--workdir", str(tmp_path / "cremad"), "--record", str(record),
               "--append", "--", "--audio_path", "AudioWAV", "--visual_path", "."])
    assert rc == 2 and record.read_bytes() == before


def test_synth_and_record_paths_through_a_file_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["synth", "fop", str(blocker / "sub")]) == 2  # was: a NotADirectoryError traceback
    err = capsys.readouterr().err
    assert err.startswith(f"simam2 synth: error: synth: cannot write {blocker / 'sub'}") and err.count("\n") == 1, err
    assert "Not a directory" in err
    rc = main(["run", "ogm-ge", "--record", str(blocker / "r.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and err == (f"simam2 run: error: cannot write records to {blocker / 'r.jsonl'}: {blocker} is a file, "
                               "not a folder\n")  # was: "File exists"


def test_a_run_refused_for_its_records_file_leaves_no_workdir(upstream_checkout, tmp_path, capsys):
    """The records file is refused after the command line made FOP's working directory (a second run
    started onto a file another holds, or one that holds records): the folder is taken back."""
    fop = upstream_checkout("fop")
    assert main(["synth", "fop", str(tmp_path / "fop-data")]) == 0
    record = tmp_path / "r.jsonl"
    record.write_text('{"event": "start"}\n')
    rc = main(["run", "fop", "--checkout", str(fop), "--data", str(tmp_path / "fop-data"), "--workdir",
               str(tmp_path / "w"), "--record", str(record), "--", "--batch_size", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds records" in err.strip().splitlines()[-1], err
    assert not (tmp_path / "w").exists()  # was: left behind, prepared


def test_a_refused_run_writes_no_records_and_no_workdir(upstream_checkout, tmp_path, capsys):
    """A run refused before its script starts leaves nothing that would block the corrected rerun."""
    checkout = upstream_checkout("ogm-ge")
    record, workdir = tmp_path / "runs" / "df.jsonl", tmp_path / "not-yet"
    argv = ["run", "ogm-ge", "--checkout", str(checkout), "--record", str(record), "--workdir", str(workdir),
            "--", "--alpha", "0.8", "--ckpt_path", "ckpt", "--train"]
    assert main(argv) == 2
    assert "lacks data/CREMAD/train.csv" in capsys.readouterr().err
    assert not record.exists() and not record.parent.exists() and not workdir.exists()


def test_run_balancemm_checks_its_workdir_before_any_fetch(monkeypatch, capsys):
    import vendor_fetch

    def no_fetch(*args, **kwargs):
        raise AssertionError("fetched before the command line was checked")

    monkeypatch.setattr(vendor_fetch, "fetch", no_fetch)
    assert main(["run", "balancemm", "--", "--trainer", "baselineTrainer"]) == 2
    assert "needs --workdir" in capsys.readouterr().err
