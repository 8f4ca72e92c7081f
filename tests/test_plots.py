"""`simam2 plot`: the plotted series are the records' values; missing data is skipped and said."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from simam2.adapters.machinery import plots  # noqa: E402
from simam2.adapters.machinery.records import RecordWriter, read_records  # noqa: E402
from simam2.adapters.machinery.stats import ratio_correlation  # noqa: E402

from fake_records import write_run  # noqa: E402


def _lines(plot):
    """gid -> (x, y) of every line drawn in ``plot``'s figure."""
    out = {}
    for ax in plot.fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out[line.get_gid()] = (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
    return out


def _nan(values):
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


@pytest.fixture
def three(tmp_path):
    paths = [tmp_path / "base.jsonl", tmp_path / "simam2.jsonl", tmp_path / "df.jsonl"]
    write_run(paths[0], simam2=False, modulation="none", seed=1, epochs=3, steps=4)
    write_run(paths[1], modulation="none", seed=2, epochs=3, steps=4, skill=0.05)
    write_run(paths[2], modulation="df", seed=3, epochs=3, steps=4, skill=0.1)
    return paths


def test_step_plots_draw_the_records(three):
    runs = plots.load(three, ["Baseline", "+SimAM²", "+DF"])
    records = {r.label: read_records(p) for r, p in zip(runs, three)}
    steps = {k: [r for r in v if r["event"] == "step"] for k, v in records.items()}

    ratios = plots.plot_ratios(runs)
    lines = _lines(ratios)
    assert "Baseline|rho_df" not in lines  # no SimAM²: no Eq. 11 ratio
    assert ratios.notes == ["Baseline: no rho_df (no SimAM²)"]
    for label in ("+SimAM²", "+DF"):
        for name in ("rho_df", "rho_decoupled"):
            x, y = lines[f"{label}|{name}"]
            np.testing.assert_array_equal(x, np.arange(12))
            np.testing.assert_array_equal(y, [r[name] for r in steps[label]])
        r, n = ratio_correlation(records[label])
        assert n == 12 and f"{label} {r:.3f} (12 steps)" in ratios.fig._suptitle.get_text().splitlines()
    np.testing.assert_array_equal(lines["Baseline|rho_decoupled"][1], [r["rho_decoupled"] for r in steps["Baseline"]])
    assert "Baseline n/a (no rho_df)" in ratios.fig._suptitle.get_text()

    coef = _lines(plots.plot_coefficients(runs))
    assert set(coef) == {"+DF|k1", "+DF|k2"}
    np.testing.assert_array_equal(coef["+DF|k1"][1], [r["k1"] for r in steps["+DF"]])

    loss = _lines(plots.plot_loss(runs))
    for label in records:
        np.testing.assert_array_equal(loss[f"{label}|loss"][1], [r["loss"] for r in steps[label]])


def test_metric_and_zeta_plots_draw_the_records(three):
    runs = plots.load(three, ["Baseline", "+SimAM²", "+DF"])
    evals = [r for r in read_records(three[2]) if r["event"] == "eval"]
    lines = _lines(plots.plot_metric(runs, "mAP"))
    for suffix in ("", "_m1", "_m2", "_head_m1", "_head_m2"):
        x, y = lines[f"+DF|test|mAP{suffix}"]
        np.testing.assert_array_equal(x, [e["epoch"] for e in evals])
        np.testing.assert_array_equal(y, [e["mAP" + suffix] for e in evals])

    zeta = plots.plot_zeta(runs)
    assert zeta.notes == ["Baseline: no zeta records (no SimAM²)"]
    zetas = [r for r in read_records(three[2]) if r["event"] == "zeta"]
    image = next(im for ax in zeta.fig.axes for im in ax.get_images() if im.get_gid() == "+DF|zeta")
    counts = np.asarray([z["counts"] for z in zetas], float)
    np.testing.assert_allclose(image.get_array(), (counts / counts.sum(1, keepdims=True)).T)
    # its mean: the zeta_mean of each epoch's last step (the step the histogram is of)
    steps = [r for r in read_records(three[2]) if r["event"] == "step"]
    _, mean = _lines(zeta)["+DF|zeta_mean"]
    np.testing.assert_array_equal(mean, [[r for r in steps if r["epoch"] == z["epoch"]][-1]["zeta_mean"] for z in zetas])


def test_nulls_are_gaps_and_runs_without_events_are_skipped_with_reasons(tmp_path):
    w = RecordWriter(tmp_path / "evals_only.jsonl")
    w.start(upstream="fop", script="main.py", modalities=["face", "voice"], metrics=["eer", "auc"],
            higher_is_better=False)
    w.write("step", epoch=0, step=0, loss=0.9, rho_df=None)
    w.write("step", epoch=0, step=1, loss=None, rho_df=None)
    w.write("step", epoch=0, step=2, loss=0.7, rho_df=None)
    w.write("eval", epoch=0, evaluation=0, split="test", n=8, eer=0.3, auc=None)
    w.write("eval", epoch=1, evaluation=1, split="test", n=8, eer=0.25, auc=0.8)
    w.end()
    said = []
    written = plots.write_plots([tmp_path / "evals_only.jsonl"], tmp_path / "out", say=said.append)
    assert sorted(p.name for p in written) == ["loss.png", "metric_auc.png", "metric_eer.png"]
    assert "skipped ratios.png: no run recorded rho_df or rho_decoupled (no SimAM², no split heads)" in said
    assert "skipped coefficients.png: no run recorded k1 or k2 (no modulation)" in said
    assert "skipped zeta.png: no zeta records (no SimAM², or ζ not recorded)" in said
    runs = plots.load([tmp_path / "evals_only.jsonl"])
    _, y = _lines(plots.plot_loss(runs))["evals_only|loss"]
    np.testing.assert_array_equal(y, [0.9, np.nan, 0.7])
    _, auc = _lines(plots.plot_metric(runs, "auc"))["evals_only|test|auc"]
    np.testing.assert_array_equal(auc, [np.nan, 0.8])
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_main_writes_pngs_and_refuses_bad_input_with_exit_2(three, tmp_path, capsys):
    out = tmp_path / "png"
    assert plots.main([*map(str, three), "--out", str(out), "--labels", "a", "b", "c"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["coefficients.png", "loss.png", "metric_mAP.png", "metric_top1.png", "ratios.png", "zeta.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in out.iterdir())

    assert plots.main([str(three[0]), "--out", str(out), "--labels", "a", "b"]) == 2
    assert "--labels gives 2 label(s) for 1 records file(s)" in capsys.readouterr().err
    assert plots.main([str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 2
    assert "no records file" in capsys.readouterr().err
    (tmp_path / "junk.jsonl").write_text("not json\n{}\n")
    assert plots.main([str(tmp_path / "junk.jsonl"), "--out", str(out)]) == 2
    assert "is not a records file" in capsys.readouterr().err


def test_labels_default_to_a_table_cells_folders_and_runs_of_one_file_are_numbered(tmp_path):
    cell = tmp_path / "concat__simam2" / "seed1" / "records.jsonl"
    write_run(cell, epochs=1, steps=2)
    both = tmp_path / "both.jsonl"
    write_run(both, epochs=1, steps=2)
    with open(both, "a") as f:  # a second run appended to the same file
        f.writelines(json.dumps(r) + "\n" for r in read_records(cell))
    labels = [r.label for r in plots.load([cell, both])]
    assert labels == ["concat__simam2/seed1", "both [run 1]", "both [run 2]"]
    assert not math.isnan(plots.load([both])[1].step_series("rho_df")[0])


def test_simam2_plot_and_table_options_through_the_cli(three, tmp_path, capsys):
    from simam2.adapters.cli import main

    assert main(["plot", str(three[0]), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "loss.png").is_file()
    assert main(["plot", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "cli")]) == 2
    assert main(["table", "ogm-ge", "--seeds", "0", "--out", str(tmp_path / "t")]) == 2
    assert "--seeds must be at least 1, got 0" in capsys.readouterr().err


def test_files_of_the_same_name_are_told_apart_by_their_folders():
    from pathlib import Path

    from simam2.adapters.machinery.plots import _distinct_labels

    assert _distinct_labels([Path("/r/sum/baseline/seed0.jsonl"), Path("/r/sum/simam2/seed0.jsonl"),
                             Path("/r/other.jsonl")]) == ["baseline/seed0", "simam2/seed0", "other"]
    assert _distinct_labels([Path("/t/c1/seed0/records.jsonl"), Path("/t/c2/seed0/records.jsonl")]) == \
        ["c1/seed0", "c2/seed0"]


# -- bad records: one line each, naming file, line and field; the rest still plotted -------------

def _rewrite(path, change):
    """Apply ``change(index, record) -> line or None`` to each line of ``path`` (None: unchanged)."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        new = change(i, json.loads(line))
        out.append(line if new is None else new)
    path.write_text("\n".join(out) + "\n")


def test_every_bad_record_is_one_line_and_the_rest_of_the_file_is_plotted(tmp_path, capsys):
    path, other = tmp_path / "bad.jsonl", tmp_path / "metrics.jsonl"
    write_run(path, epochs=3, steps=4)
    records = read_records(path)
    index = {}
    for i, r in enumerate(records):
        index.setdefault(r["event"], []).append(i)
    steps, zetas, evals = index["step"], index["zeta"], index["eval"]

    def change(i, r):
        if i == steps[1]:
            return json.dumps({**r, "rho_df": True})  # A2
        if i == steps[2]:
            return json.dumps({**r, "rho_decoupled": "0.5"})
        if i == zetas[0]:
            return json.dumps({k: v for k, v in r.items() if k != "edges"})  # A3
        if i == zetas[1]:
            return json.dumps({**r, "counts": r["counts"][:19]})  # A4
        if i == evals[0]:
            return json.dumps({**r, "epoch": None})  # A5
        if i == 0:
            return json.dumps(r) + "\n[1, 2]"  # A1: valid JSON, not an object (line 2)
        return None

    _rewrite(path, change)
    write_run(other, epochs=2, steps=3)
    _rewrite(other, lambda i, r: json.dumps({**r, "metrics": "top1"}) if i == 0 else None)  # A6
    out = tmp_path / "png"
    assert plots.main([str(path), str(other), "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    line = lambda i: i + 2 if i > 0 else 1  # noqa: E731  (the extra line after the start)
    expected = sorted([
        (2, "is a JSON list, not an object; left out"),
        (line(steps[1]), "field 'rho_df' must be a number or null, got True; that value left out"),
        (line(steps[2]), "field 'rho_decoupled' must be a number or null, got '0.5'; that value left out"),
        (line(zetas[0]), "field 'edges' must be 21 finite numbers, got None; left out"),
        (line(zetas[1]), "field 'counts' must be 20 counts >= 0, got 19 values; left out"),
        (line(evals[0]), "field 'epoch' must be an epoch (int >= 0), got None; left out"),
    ])
    assert err == [f"simam2 plot: {path} line {n}: {text}" for n, text in expected] + [
        f"simam2 plot: {other} line 1: field 'metrics' must be a list of names, got 'top1'; that value left out"]
    assert (out / "metric_top1.png").is_file() and not (out / "metric_t.png").exists()  # was: t, o, p, 1
    runs_ = plots.load([path, other], warn=lambda line: None)
    lines = _lines(plots.plot_metric(runs_, "top1"))
    np.testing.assert_array_equal(lines["bad|test|top1"][0], [1, 2])  # the two good evaluations
    assert len(lines["metrics|test|top1"][0]) == 2  # its evaluations still drawn, beside bad.jsonl's
    ratios = _lines(plots.plot_ratios(runs_))
    assert len(ratios["bad|rho_df"][1]) == 12 and np.isnan(ratios["bad|rho_df"][1][1])
    assert np.isfinite(ratios["bad|rho_df"][1][[0, 2, 3]]).all()
    zeta = plots.plot_zeta(runs_)
    images = [im for ax in zeta.fig.axes for im in ax.get_images() if im.get_gid() == "bad|zeta"]
    assert images[0].get_array().shape == (20, 1)  # the one good zeta record of three


@pytest.mark.parametrize("errno_, text", [(30, "Read-only file system"), (28, "No space left on device")])
def test_an_out_folder_that_cannot_be_written_is_one_line(three, tmp_path, capsys, monkeypatch, errno_, text):
    from matplotlib.figure import Figure

    def refuse(self, *args, **kwargs):
        raise OSError(errno_, text)

    monkeypatch.setattr(Figure, "savefig", refuse)
    out = tmp_path / "png"
    assert plots.main([str(three[0]), "--out", str(out)]) == 2  # was: an OSError traceback
    err = capsys.readouterr().err
    assert err == f"simam2 plot: error: cannot write {out / 'ratios.png'}: {text}\n"
    assert not any(out.iterdir())  # no temporary file left


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_out_folder_is_one_line(three, tmp_path, capsys):
    out = tmp_path / "png"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert plots.main([str(three[0]), "--out", str(out)]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        out.chmod(0o755)
