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
    (["--simam2", "--alpha", "-1"], "--alpha must be a number >= 0"),
    (["--simam2", "--zeta", "learnable", "--modulation", "df", "--lam", "nan"], "--lam must be a number >= 0"),
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
