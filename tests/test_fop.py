"""FOP adapter: patched fusions vs the pin, SimAM² gated fusion by hand, the upstream's EER/AUC vs an
independent computation, input validation, and main.py + test.py end to end.

Everything runs the upstream's own code from the patched checkout (``upstream_checkout``); the
end-to-end runs train FOP's main.py for one epoch on a tiny synthetic set and evaluate the
checkpoint with its test.py, with and without SimAM².
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from simam2.adapters import AdapterError, RunConfig, installed, run_script
from simam2.adapters.cli import main as cli_main
from simam2.adapters.fop.checks import prepare_workdir
from simam2.adapters.fop.evaluate import best_checkpoint, evaluate_checkpoint, parse_test_output
from simam2.adapters.fop.spec import SPEC as ADAPTER
from simam2.adapters.fop.table import run_table
from simam2.adapters.fop.synth import FACE_DIM, VOICE_DIM, list_files, write_fop

from upstream_modules import pristine_module

B, C = 6, 16
LAM, S = 1e-6, 2.5
TRAIN = ["--batch_size", "16", "--max_num_epoch", "2", "--lr", "1e-3", "--seed", "0"]


@pytest.fixture(scope="module")
def checkout(upstream_checkout):
    return upstream_checkout("fop")


@pytest.fixture(scope="module")
def pristine(checkout, tmp_path_factory):
    """retrieval_model.py exactly as at the pin (unpatched), as a module."""
    return pristine_module("fop", checkout, "retrieval_model.py", tmp_path_factory.mktemp("pristine"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small synthetic set: 8 training identities x 8 samples, 40 pairs per list."""
    return write_fop(tmp_path_factory.mktemp("fopdata"), seed=0, train_ids=8, samples_per_id=8, test_ids=8, pairs=40)


def _embeddings(seed=0, b=B, c=C):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g), torch.randn(b, c, generator=g)


def _importance(x, lam):
    """SPEC §1 over the C features of each sample (2-D input), written out."""
    d = (x - x.mean(1, keepdim=True)) ** 2
    var = d.sum(1, keepdim=True) / (x.shape[1] - 1)
    return d / (4 * (var + lam)) + 0.5


def _simam2_by_hand(x1, x2, zeta, var_max):
    """Eq. 4–8 with r from Eq. 6, all by hand (SPEC §2–3)."""
    u = zeta * x1 + (1 - zeta) * x2
    var_b = zeta.var(0, unbiased=False)
    r = math.tanh((S * var_b.sum().item() + LAM) / max(var_max.sum().item() + LAM, 1e-12))
    e = _importance(u, LAM) - zeta ** 2 * _importance(x1, 0) - (1 - zeta) ** 2 * _importance(x2, 0) \
        + (1 - r) * _importance(u, LAM)
    return torch.sigmoid(e) * u, r


# -- fusions: adapter off equals the pin; adapter on equals the equations ---------------------------

def test_adapter_off_fusions_equal_the_pin(checkout, pristine):
    face, voice = _embeddings()
    with installed(ADAPTER, RunConfig(simam2=False), checkout):
        import retrieval_model as rm

        assert rm.GatedFusion.__name__ == "RecordedGatedFusion"  # records FOP's gate, computes FOP's
        torch.manual_seed(0)
        ours = rm.GatedFusion(FACE_DIM, VOICE_DIM, C, 8, C)
        pin = pristine.GatedFusion(FACE_DIM, VOICE_DIM, C, 8, C)
        pin.load_state_dict(ours.state_dict())
        assert ours.state_dict().keys() == pin.state_dict().keys()
        for mode in (True, False):
            ours.train(mode), pin.train(mode)
            for a, b in zip(ours(face, voice), pin(face, voice)):
                assert torch.equal(a, b)
        ours.train()
        ours(face, voice)
        gate = torch.sigmoid(ours.attention(torch.cat((face, voice), 1))).detach()
        torch.testing.assert_close(ours.gate_sums, torch.stack([gate.sum(), (1 - gate).sum()]))
        # the pinned LinearWeightedAvg allocates on CUDA; give it the same two weights by hand
        lin = rm.LinearWeightedAvg(C, C)
        pin_lin = pristine.LinearWeightedAvg.__new__(pristine.LinearWeightedAvg)
        torch.nn.Module.__init__(pin_lin)
        pin_lin.weight1, pin_lin.weight2 = torch.nn.Parameter(lin.weight1.clone()), torch.nn.Parameter(lin.weight2.clone())
        for a, b in zip(lin(face, voice), pin_lin(face, voice)):
            assert torch.equal(a, b)


def test_simam2_gated_fusion_uses_fops_gate_as_zeta(checkout):
    face, voice = _embeddings(1)
    with installed(ADAPTER, RunConfig(simam2=True, zeta="given"), checkout):
        import retrieval_model as rm

        torch.manual_seed(0)
        fusion = rm.GatedFusion(FACE_DIM, VOICE_DIM, C, 8, C).train()
        assert isinstance(fusion, rm.GatedFusion.__mro__[2])  # the upstream class, after the init shim
        out, face_trans, voice_trans = fusion(face, voice)
        # FOP's own gate, from its own layers; the embeddings the evaluation reads stay tanh(·)
        with torch.no_grad():
            gate = torch.sigmoid(fusion.attention(torch.cat((face, voice), 1)))
        assert torch.equal(face_trans, torch.tanh(face)) and torch.equal(voice_trans, torch.tanh(voice))
        expected, r = _simam2_by_hand(torch.tanh(face), torch.tanh(voice), gate, gate.var(0, unbiased=False))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fusion.simam2.zeta, gate)
        assert abs(fusion.simam2.r.item() - r) < 1e-6 and r > 0.5  # var_max = this batch's variance: tanh(s)
        # the gate trains through SimAM² (Eq. 4 and Eq. 7 both depend on ζ)
        out.square().sum().backward()
        grads = [p.grad for p in fusion.attention.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum().item() for g in grads) > 0
        # and differs from FOP's gated sum
        assert not torch.allclose(out, gate * torch.tanh(face) + (1 - gate) * torch.tanh(voice), atol=1e-3)


def test_simam2_linear_fusion_fixed_zeta_by_hand(checkout):
    face, voice = _embeddings(2)
    with installed(ADAPTER, RunConfig(simam2=True, zeta="fixed"), checkout):
        import retrieval_model as rm

        fusion = rm.LinearWeightedAvg(C, C).eval()
        out, f, v = fusion(face, voice)
        assert f is face and v is voice
        half = torch.full((B, C), 0.5)
        expected, r = _simam2_by_hand(fusion.weight1.detach() * face, fusion.weight2.detach() * voice, half,
                                      torch.zeros(C))
        assert abs(r - math.tanh(1.0)) < 1e-9  # fixed ζ: var_b = 0, r = tanh(λ / λ)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    with installed(ADAPTER, RunConfig(simam2=True, zeta="given"), checkout):
        import retrieval_model as rm

        with pytest.raises(AdapterError, match="no gate"):
            rm.LinearWeightedAvg(C, C)


def test_installing_restores_the_upstream_classes(checkout):
    with installed(ADAPTER, RunConfig(simam2=True, zeta="given"), checkout):
        import retrieval_model as rm

        replaced = rm.GatedFusion
        original = replaced.__mro__[2]
        assert replaced is not original and rm.FOP.__name__ == "RecordedFOP"
    assert original.__name__ == "GatedFusion" and "retrieval_model" not in __import__("sys").modules


# -- the upstream's EER and AUC against an independent computation ---------------------------------

class _GivenEmbeddings(torch.nn.Module):
    """Stands in for FOP in online_evaluation.test: returns the face and voice rows it is given."""

    def forward(self, face, voice):
        return None, face, voice


def test_upstream_eer_auc_match_an_independent_computation(checkout):
    rng = np.random.default_rng(0)
    n = 400  # pairs; a multiple of 20, so FOP's 10 folds hold equal numbers of both kinds
    dist = np.where(np.arange(n) % 2 == 0, rng.uniform(0.0, 2.5, n), rng.uniform(1.0, 3.9, n))
    face = torch.zeros(n, 2, dtype=torch.float64)
    face[:, 0] = torch.from_numpy(np.sqrt(dist))
    voice = torch.zeros(n, 2, dtype=torch.float64)  # squared distance of pair i = dist[i]
    with installed(ADAPTER, RunConfig(), checkout):
        import online_evaluation

        eer, auc = online_evaluation.test(argparse.Namespace(cuda=False), _GivenEmbeddings(), face, voice)
    pos, neg = dist[0::2], dist[1::2]  # FOP: even pairs match, odd pairs do not
    # AUC: the probability that a non-matching pair lies farther apart than a matching one
    auc_exact = stats.mannwhitneyu(neg, pos).statistic / (len(pos) * len(neg))
    # EER: where the false accept rate meets the false reject rate, over every threshold
    t = np.sort(dist)
    far = (neg[None, :] < t[:, None]).mean(1)
    frr = (pos[None, :] >= t[:, None]).mean(1)
    i = np.argmin(np.abs(far - frr))
    eer_exact = (far[i] + frr[i]) / 2
    assert 0.05 < eer_exact < 0.45
    assert abs(auc - auc_exact) < 0.01, (auc, auc_exact)
    assert abs(eer - eer_exact) < 0.01, (eer, eer_exact)
    # on FOP's own grid of thresholds the pooled ROC and its trapezoid area are exactly FOP's
    grid = np.arange(0, 4, 0.01)
    tpr = (pos[None, :] < grid[:, None]).mean(1)
    fpr = (neg[None, :] < grid[:, None]).mean(1)
    assert auc == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)
    assert eer == pytest.approx(fpr[np.argmin(np.abs((1 - tpr) - fpr))], abs=1e-12)


def test_parse_test_output_reads_what_test_py_prints():
    text = "Accuracy: 0.740+-0.086\nArea Under Curve (AUC): 0.789\nEqual Error Rate (EER): 0.280\n\n"
    assert parse_test_output(text) == {"eer": 0.28, "auc": 0.789, "accuracy": 0.74}
    with pytest.raises(AdapterError, match="printed no eer"):
        parse_test_output("Area Under Curve (AUC): 0.5\nAccuracy: 0.5+-0.1")


# -- bad input is refused before the upstream reads it ------------------------------------------------

def test_synthetic_set_has_the_upstream_layout(data):
    features = data / "features"
    def shape(name):
        rows = (features / name).read_text().splitlines()
        return len(rows), len(rows[0].split(","))
    assert shape("faceTrain.csv") == (64, FACE_DIM + 1) and shape("voiceTrain.csv") == (64, VOICE_DIM + 1)
    for split in ("unseenunheard", "seenheard"):
        face_list, voice_list = list_files(split)
        assert shape(face_list) == (40, FACE_DIM + 1) and shape(voice_list) == (40, VOICE_DIM + 1)
        face_ids = np.loadtxt(features / face_list, delimiter=",", usecols=[FACE_DIM])
        voice_ids = np.loadtxt(features / voice_list, delimiter=",", usecols=[VOICE_DIM])
        assert np.array_equal(face_ids[0::2], voice_ids[0::2]) and np.all(face_ids[1::2] != voice_ids[1::2])
        train_ids = set(np.loadtxt(features / "faceTrain.csv", delimiter=",", usecols=[FACE_DIM]))
        assert set(face_ids) <= train_ids if split == "seenheard" else not set(face_ids) & train_ids
    assert (data / "output").is_dir()


def test_cli_synth_writes_a_working_directory(tmp_path, capsys):
    assert cli_main(["synth", "fop", str(tmp_path / "d"), "--seed", "3"]) == 0
    assert "wrote a synthetic fop dataset" in capsys.readouterr().out
    names = {p.name for p in (tmp_path / "d" / "features").iterdir()}
    assert names == {"faceTrain.csv", "voiceTrain.csv", *list_files("unseenunheard"), *list_files("seenheard")}
    with pytest.raises(ValueError, match="even number"):
        write_fop(tmp_path / "e", pairs=21)


def test_bad_inputs_get_clear_errors(checkout, data, tmp_path):
    work = prepare_workdir(data, tmp_path / "w")
    bad = tmp_path / "bad"
    (bad / "features").mkdir(parents=True)
    for p in (data / "features").iterdir():
        (bad / "features" / p.name).write_bytes(p.read_bytes())
    (bad / "output").mkdir()
    # a face training file of the wrong width
    rows = (bad / "features" / "faceTrain.csv").read_text().splitlines()
    (bad / "features" / "faceTrain.csv").write_text("\n".join(",".join(r.split(",")[100:]) for r in rows) + "\n")
    with pytest.raises(AdapterError, match=r"faceTrain\.csv has 3997 columns; FOP needs exactly 4097"):
        run_script(ADAPTER, TRAIN, RunConfig(), checkout, cwd=bad)
    # a missing verification list
    (bad / "features" / "faceTrain.csv").write_bytes((data / "features" / "faceTrain.csv").read_bytes())
    (bad / "features" / "voice_veriflist_test_random_unseenunheard.csv").unlink()
    with pytest.raises(AdapterError, match=r"voice_veriflist_test_random_unseenunheard\.csv, which does not exist"):
        run_script(ADAPTER, TRAIN, RunConfig(), checkout, cwd=bad)
    with pytest.raises(AdapterError, match="lacks .*voice_veriflist_test_random_unseenunheard.csv"):
        prepare_workdir(bad, tmp_path / "w2")
    # main.py's option traps
    with pytest.raises(AdapterError, match="BatchNorm1d"):
        run_script(ADAPTER, ["--max_num_epoch", "2"], RunConfig(), checkout, cwd=work)
    with pytest.raises(AdapterError, match="at least 2"):
        run_script(ADAPTER, ["--batch_size", "16", "--max_num_epoch", "1"], RunConfig(), checkout, cwd=work)
    with pytest.raises(AdapterError, match="splits its value into characters"):
        run_script(ADAPTER, TRAIN + ["--alpha_list", "1"], RunConfig(), checkout, cwd=work)
    with pytest.raises(AdapterError, match="--ckpt .*does not exist"):
        run_script(ADAPTER, ["--ckpt", "nothing.pth.tar"], RunConfig(), checkout, cwd=work, script="test.py")
    with pytest.raises(AdapterError, match="decoupled ratio"):
        run_script(ADAPTER, TRAIN, RunConfig(simam2=True, zeta="given", modulation="ogm-ge"), checkout, cwd=work)


def test_missing_script_dependencies_are_named_at_once(checkout, data, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tqdm", "matplotlib") else find_spec(name, *a))
    with pytest.raises(AdapterError, match=r"imports matplotlib, tqdm, not installed: pip install matplotlib tqdm"):
        run_script(ADAPTER, TRAIN, RunConfig(), checkout, cwd=prepare_workdir(data, tmp_path / "w"))


# -- end to end through FOP's own main.py and test.py --------------------------------------------------

def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _untracked(checkout):
    out = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=all"],
                         check=True, capture_output=True, text=True).stdout
    return {line[3:] for line in out.splitlines() if line.startswith("??") and "__pycache__" not in line}


def test_main_and_test_py_end_to_end_with_and_without_simam2(checkout, data, tmp_path, capsys):
    before = _untracked(checkout)
    # FOP as it is, through run_script
    vanilla = prepare_workdir(data, tmp_path / "vanilla")
    ctx = run_script(ADAPTER, TRAIN, RunConfig(seed=0), checkout, cwd=vanilla)
    evals = [e for e in ctx.recorder.read() if e["event"] == "eval"]
    assert len(evals) == 1 and 0.0 < evals[0]["eer"] < 0.45 and evals[0]["auc"] > 0.55  # off 50 %
    steps = [e for e in ctx.recorder.read() if e["event"] == "step"]
    assert len(steps) == 4 and all(s["rho_df"] > 0 and s["r"] is None and s["k1"] is None for s in steps)
    assert (vanilla / "output" / "gated_ce_opl_002_1.00.txt").is_file()
    ckpt_vanilla = best_checkpoint(vanilla)
    assert "fusion_layer.simam2.var_max" not in torch.load(ckpt_vanilla)["state_dict"]

    # SimAM² with FOP's gate as ζ and decoupling-free modulation, through the CLI
    record = tmp_path / "simam2.jsonl"
    simam2 = tmp_path / "simam2"
    rc = cli_main(["run", "fop", "--simam2", "--modulation", "df", "--alpha", "0.5", "--seed", "0",
                   "--record", str(record), "--data", str(data), "--workdir", str(simam2), "--", *TRAIN])
    assert rc == 0
    recs = _records(record)
    start = next(e for e in recs if e["event"] == "start")
    assert start["config"]["simam2"] and start["config"]["zeta"] == "given" and start["config"]["modulation"] == "df"
    steps = [e for e in recs if e["event"] == "step"]
    assert len(steps) == 4  # 64 rows / batch 16
    for s in steps:  # Eq. 11 and OGM-GE's rule on FOP's gate
        k_expected = 1 - math.tanh(0.5 * (s["rho_df"] if s["rho_df"] > 1 else 1 / s["rho_df"]))
        k_weaker = s["k1"] if s["rho_df"] > 1 else s["k2"]
        assert abs(k_weaker - k_expected) < 1e-5 and 1.0 in (s["k1"], s["k2"])
        assert 0 < s["r"] <= 1
    eval_simam2 = next(e for e in recs if e["event"] == "eval")
    assert 0.0 < eval_simam2["eer"] < 0.5
    state = torch.load(best_checkpoint(simam2))["state_dict"]
    assert state["fusion_layer.simam2.var_max"].max() > 0  # grew in training, saved with the model
    vanilla_state = torch.load(ckpt_vanilla)["state_dict"]
    assert not torch.equal(state["logits_layer.weight"], vanilla_state["logits_layer.weight"])

    # test.py on each checkpoint reproduces main.py's online evaluation (same list, same model)
    got = evaluate_checkpoint(ckpt_vanilla, data, tmp_path / "eval_vanilla", checkout=checkout)
    assert got["eer"] == pytest.approx(evals[0]["eer"], abs=5e-4) and got["auc"] == pytest.approx(evals[0]["auc"], abs=5e-4)
    got = evaluate_checkpoint(best_checkpoint(simam2), data, tmp_path / "eval_simam2", checkout=checkout,
                              config=RunConfig(simam2=True, zeta="given"))
    assert got["eer"] == pytest.approx(eval_simam2["eer"], abs=5e-4)
    # the other split, through the CLI: test.py reads the Seen-Heard list under the name it knows
    capsys.readouterr()
    rc = cli_main(["run", "fop", "--evaluate", "--data", str(data), "--split", "seenheard",
                   "--workdir", str(tmp_path / "eval_seen"), "--", "--ckpt", str(ckpt_vanilla), "--fusion", "gated"])
    seen = parse_test_output(capsys.readouterr().out)
    assert rc == 0 and (seen["eer"], seen["auc"]) != (round(evals[0]["eer"], 3), round(evals[0]["auc"], 3))
    face_list = tmp_path / "eval_seen" / "features" / list_files("unseenunheard")[0]
    assert face_list.resolve() == (data / "features" / list_files("seenheard")[0]).resolve()
    assert _untracked(checkout) == before  # nothing written into the checkout


def test_linear_fusion_with_learnable_zeta_trains_its_gate(checkout, data, tmp_path):
    work = prepare_workdir(data, tmp_path / "linear")
    ctx = run_script(ADAPTER, TRAIN + ["--fusion", "linear"], RunConfig(simam2=True, zeta="learnable", seed=0),
                     checkout, cwd=work)
    recs = ctx.recorder.read()
    added = [e for e in recs if e["event"] == "note" and e["what"] == "param_group_added"]
    # SPEC §2's gate, Linear(2C, C) with C = 128, joins main.py's Adam once, before its first step
    assert added == [{"event": "note", "what": "param_group_added", "params": 2 * 128 * 128 + 128}]
    gate = ctx.models[0].fusion_layer.simam2.gate
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0
    zetas = [e["rho_df"] for e in recs if e["event"] == "step"]
    assert len(zetas) == 4 and len(set(zetas)) == 4  # an input-dependent ζ, not 0.5


# -- Table 3 ---------------------------------------------------------------------------------------

def test_table3_rows_columns_and_papers_numbers(tmp_path):
    from simam2.adapters.fop.table import COLUMNS, METHODS, table
    from simam2.adapters.machinery.grid import CellSeed

    t = table(tmp_path, epochs=6)
    configs = [m.run_config(CellSeed(m, COLUMNS[0], 1, tmp_path)) for m in METHODS]
    assert [(c.simam2, c.zeta) for c in configs] == [(False, "fixed"), (True, "given")]  # FOP's gate as ζ
    assert t.paper[("FOP + SimAM²", "unseenunheard")] == {"eer": 24.6, "auc": 83.7}
    assert [c.split for c in t.columns] == ["seenheard", "unseenunheard"] and t.columns[1].shares == "seenheard"


@pytest.mark.slow
def test_run_table_trains_and_evaluates_every_cell(checkout, data, tmp_path):
    lines = []
    text = run_table(tmp_path, data_dir=data, epochs=1, seeds=(0,), batch_size=16, checkout=checkout,
                     progress=lines.append, bar=False)
    assert (tmp_path / "table.txt").read_text() == text
    cells = json.loads((tmp_path / "table.json").read_text())["cells"]
    assert {(c["row"], c["column"]) for c in cells} == {(r, s) for r in ("FOP", "FOP + SimAM²")
                                                       for s in ("seenheard", "unseenunheard")}
    assert all(0 <= c["summary"]["eer"]["mean"] <= 1 and 0 <= c["summary"]["auc"]["mean"] <= 1 for c in cells)
    for cell in ("seenheard__fop", "seenheard__fop_simam2"):
        recs = _records(tmp_path / cell / "seed0" / "records.jsonl")
        # main.py's online evaluation, then test.py's two lists appended as a second run
        assert [(e["split"]) for e in recs if e["event"] == "eval"][-2:] == ["seenheard", "unseenunheard"]
        assert [e["script"] for e in recs if e["event"] == "start"] == ["main.py", "test.py"]



def test_a_working_directory_with_files_of_its_own_is_never_overwritten(data, tmp_path):
    mine = tmp_path / "mine"
    write_fop(mine, seed=1)  # a dataset folder of the user's: real CSVs under features/
    before = {p.name: p.read_bytes() for p in (mine / "features").iterdir()}
    with pytest.raises(AdapterError, match="holds files of its own"):
        prepare_workdir(data, mine)
    assert {p.name: p.read_bytes() for p in (mine / "features").iterdir()} == before
    assert not any(p.is_symlink() for p in (mine / "features").iterdir())
    # a folder prepared before (links only) is prepared again, from another dataset
    work = prepare_workdir(mine, tmp_path / "work")
    again = prepare_workdir(data, work)
    assert all(p.resolve().parent == (data / "features").resolve() for p in (again / "features").iterdir())


def test_nan_training_data_marks_the_run_and_the_exit_status(checkout, data, tmp_path):
    import csv as _csv

    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    train = bad / "features" / "faceTrain.csv"
    rows = list(_csv.reader(open(train)))
    rows[0][0] = "nan"
    with open(train, "w", newline="") as f:
        _csv.writer(f).writerows(rows)
    record = tmp_path / "nan.jsonl"
    rc = cli_main(["run", "fop", "--record", str(record), "--data", str(bad), "--workdir", str(tmp_path / "w"),
                   "--", *TRAIN])
    end = _records(record)[-1]
    assert end["event"] == "end" and end["nonfinite"] is True and rc == 3
    assert any(r.get("loss") is None for r in _records(record) if r["event"] == "step")
