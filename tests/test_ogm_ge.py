"""OGM-GE adapter: patched upstream vs the pin, SimAM² fusions by hand, modulation, records, main.py end to end.

Everything here runs the upstream's own code from the patched checkout (``upstream_checkout``);
end-to-end runs train main.py for one epoch on a tiny synthetic CREMA-D through its own entry point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simam2.adapters import AdapterError, RunConfig, installed, run_script
from simam2.adapters.cli import main
from simam2.adapters.machinery import config_from_args
from simam2.adapters.ogm_ge.checks import check_dataset
from simam2.adapters.ogm_ge.layers import top1_and_map
from simam2.adapters.ogm_ge.spec import SPEC as ADAPTER
from simam2.adapters.ogm_ge.spec import split_logits as modality_logits
from simam2.adapters.ogm_ge.synth import write_cremad, write_vggsound
from simam2.core import ogm_coefficients

from cremad_sets import cremad_every_label
from upstream_modules import pristine_module

B = 5


@pytest.fixture(scope="module")
def checkout(upstream_checkout):
    return upstream_checkout("ogm-ge")


@pytest.fixture(scope="module")
def pristine_fusion(checkout, tmp_path_factory):
    """models/fusion_modules.py exactly as at the pin (unpatched), as a module."""
    return pristine_module("ogm-ge", checkout, "models/fusion_modules.py", tmp_path_factory.mktemp("pristine"))


def _inputs(seed=0, dim=512):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, dim, generator=g), torch.randn(B, dim, generator=g)


def _upstream_fusions(fm):
    """One instance of each upstream fusion class, seeded, as AVClassifier builds them (6 classes)."""
    torch.manual_seed(0)
    return {
        "sum": fm.SumFusion(output_dim=6),
        "concat": fm.ConcatFusion(output_dim=6),
        "film": fm.FiLM(output_dim=6, x_film=True),
        "film_y": fm.FiLM(output_dim=6, x_film=False),
        "gated": fm.GatedFusion(output_dim=6, x_gate=True),
    }


# -- regression: the patches change nothing the upstream computes ------------------------------------

def test_patched_fusions_match_the_pinned_upstream(checkout, pristine_fusion):
    with installed(ADAPTER, RunConfig(), checkout):  # simam2 off: the patched upstream's own classes
        import models.fusion_modules as patched

        x, y = _inputs()
        for name, new in _upstream_fusions(patched).items():
            old = _upstream_fusions(pristine_fusion)[name]
            old.load_state_dict(new.state_dict())
            for got, want in zip(new(x, y), old(x, y)):
                torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_per_modality_logits_add_up_to_the_fused_logits(checkout):
    """OGM-GE's split of the classifier (SPEC §6) is exact: out_audio + out_visual = out, for sum,
    concat and the patched FiLM's modality_logits."""
    with installed(ADAPTER, RunConfig(), checkout):
        import models.fusion_modules as fm

        x, y = _inputs(1)
        for name, fusion in _upstream_fusions(fm).items():
            split = modality_logits(fusion, fm, x, y)
            if name == "gated":
                assert split is None
                continue
            torch.testing.assert_close(split[0] + split[1], fusion(x, y)[2], msg=name)
            assert not torch.allclose(split[0], split[1])
        film = _upstream_fusions(fm)["film"]
        gamma, feature, beta = film.film_terms(x, y)
        assert feature is y  # x (audio) films y (visual): beta is audio's term
        torch.testing.assert_close(modality_logits(film, fm, x, y)[0], film.fc_out(beta) - film.fc_out.bias / 2)


# -- SimAM² fusions against Eq. 4-8 by hand --------------------------------------------------------

def _importance(x: np.ndarray, lam: float) -> np.ndarray:
    """SPEC §1 on a 2-D input: each sample's features are its neurons."""
    d = (x - x.mean(1, keepdims=True)) ** 2
    var = d.sum(1, keepdims=True) / (x.shape[1] - 1)
    return d / (4 * (var + lam)) + 0.5


def _simam2_by_hand(x1: torch.Tensor, x2: torch.Tensor, lam=1e-6) -> np.ndarray:
    """sigmoid(E*) ⊙ U with ζ = 0.5 (Eq. 4, 7, 8); ζ constant gives var_b = 0, r = tanh(λ / λ)."""
    x1, x2 = x1.detach().double().numpy(), x2.detach().double().numpy()
    u = 0.5 * x1 + 0.5 * x2
    r = np.tanh(1.0)
    e = _importance(u, lam) - 0.25 * _importance(x1, 0) - 0.25 * _importance(x2, 0) + (1 - r) * _importance(u, lam)
    return 1 / (1 + np.exp(-e)) * u


@pytest.mark.parametrize("zeta", ["fixed", "learnable"])
def test_simam2_fusions_are_eq_4_to_8_on_the_upstream_terms(checkout, zeta):
    """With ζ = 0.5 (fixed, or a learnable gate set to output 0.5) each SimAM² fusion is
    sigmoid(E*) ⊙ U on the upstream's own terms: U is half the vanilla sum (half fc_x(x) + fc_y(y),
    half the concatenation, half γ ⊙ y + β)."""
    with installed(ADAPTER, RunConfig(simam2=True, zeta=zeta), checkout):
        import models.basic_model as bm
        import models.fusion_modules as fm

        x, y = _inputs(2)
        vanilla = _upstream_fusions(fm)
        torch.manual_seed(0)
        fused = {"sum": bm.SumFusion(output_dim=6), "concat": bm.ConcatFusion(output_dim=6),
                 "film": bm.FiLM(output_dim=6, x_film=True)}
        for name, f in fused.items():
            assert isinstance(f, type(vanilla[name]))  # subclasses keep upstream's layers and names
            missing, unexpected = f.load_state_dict(vanilla[name].state_dict(), strict=False)
            assert not unexpected and all(k.startswith("simam2.") for k in missing)
            if zeta == "learnable":
                torch.nn.init.zeros_(f.simam2.gate.weight)
                torch.nn.init.zeros_(f.simam2.gate.bias)
            f.train()
            out = f(x, y)[2].detach().double().numpy()
            with torch.no_grad():
                if name == "sum":
                    want = _simam2_by_hand(f.fc_x(x), f.fc_y(y))
                elif name == "concat":
                    z = torch.zeros_like(x)
                    attended = _simam2_by_hand(torch.cat([x, z], 1), torch.cat([z, y], 1))
                    want = attended @ f.fc_out.weight.double().numpy().T + f.fc_out.bias.double().numpy()
                else:
                    gamma, feature, beta = f.film_terms(x, y)
                    attended = _simam2_by_hand(gamma * feature, beta)
                    want = attended @ f.fc_out.weight.double().numpy().T + f.fc_out.bias.double().numpy()
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5, err_msg=name)
            torch.testing.assert_close(f.simam2.zeta, torch.full_like(f.simam2.zeta, 0.5))


# -- install / uninstall -------------------------------------------------------------------------

def test_install_replaces_where_basic_model_looks_and_uninstall_restores(checkout):
    names = ("AVClassifier", "SumFusion", "ConcatFusion", "FiLM")
    with installed(ADAPTER, RunConfig(simam2=True), checkout) as ctx:
        import dataset.CramedDataset as cd
        import models.basic_model as bm
        import models.fusion_modules as fm

        replaced = {n: getattr(bm, n) for n in names}
        originals = {n: getattr(fm, n) for n in names[1:]}
        for n in names[1:]:
            assert replaced[n] is not originals[n] and issubclass(replaced[n], originals[n])
        assert bm.GatedFusion is fm.GatedFusion  # no SimAM² form: left alone
        with installed(ADAPTER, RunConfig(simam2=True), checkout) as again:  # twice is harmless
            assert again is ctx and all(getattr(bm, n) is replaced[n] for n in names)
        assert all(getattr(bm, n) is replaced[n] for n in names)
        dataset_cls = cd.CramedDataset
    assert all(getattr(bm, n) is originals[n] for n in names[1:])
    assert bm.AVClassifier.__module__ == "models.basic_model" and bm.AVClassifier is not replaced["AVClassifier"]
    assert cd.CramedDataset is not dataset_cls and cd.CramedDataset.__module__ == "dataset.CramedDataset"
    assert "models" not in sys.modules and str(checkout) not in sys.path


# -- decoupling-free modulation on the upstream model ----------------------------------------------

def _args(**kw):
    base = dict(dataset="CREMAD", fusion_method="sum", modulation="Normal", alpha=0.8,
                modulation_starts=0, modulation_ends=50, train=True)
    return argparse.Namespace(**{**base, **kw})


def _small_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(4, 1, 40, 40, generator=g)
    visual = torch.randn(4, 3, 1, 40, 40, generator=g)
    return audio, visual, torch.tensor([0, 1, 2, 3])


def test_decoupling_free_modulation_scales_the_encoders_conv_grads(checkout):
    """One training step of the upstream AVClassifier (small inputs): before optimizer.step() the
    4-D grads of audio_net / visual_net are scaled by OGM's k from Eq. 11's ρ (no GE noise), every
    other grad is untouched; the step's records hold Eq. 11's ρ and OGM-GE's decoupled ρ."""
    config = RunConfig(simam2=True, zeta="learnable", modulation="df", ge=False, alpha=0.8, seed=0)
    with installed(ADAPTER, config, checkout) as ctx:
        import models.basic_model as bm

        model = bm.AVClassifier(_args())
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        model.train()
        audio, visual, labels = _small_batch()
        a, v, out = model(audio, visual)
        torch.nn.CrossEntropyLoss()(out, labels).backward()
        before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        sums = model.fusion_module.simam2.weight_sums.clone()
        rho = sums[0] / sums[1]
        k_audio, k_visual = ogm_coefficients(rho, 0.8)
        assert min(k_audio, k_visual) < 1  # one modality is damped
        with torch.no_grad():
            scores = [torch.softmax(t, 1)[torch.arange(4), labels].sum()
                      for t in (model.fusion_module.fc_x(a), model.fusion_module.fc_y(v))]
        opt.step()
        for n, p in model.named_parameters():
            if n not in before:
                continue
            k = k_audio if n.startswith("audio_net") else k_visual if n.startswith("visual_net") else 1.0
            want = before[n] * k if p.dim() == 4 else before[n]
            torch.testing.assert_close(p.grad, want, msg=n)
        model.eval()  # flushes the epoch's step records
        steps = [r for r in ctx.recorder.read() if r["event"] == "step"]
    assert len(steps) == 1
    assert steps[0]["rho_df"] == pytest.approx(rho.item(), rel=1e-6)
    assert steps[0]["rho_decoupled"] == pytest.approx((scores[0] / scores[1]).item(), rel=1e-5)
    assert (steps[0]["k1"], steps[0]["k2"]) == pytest.approx((k_audio.item(), k_visual.item()))


def test_main_py_modulation_must_say_what_the_run_says_before_it_starts(checkout, tmp_path, capsys):
    from types import SimpleNamespace

    df = RunConfig(simam2=True, zeta="learnable", modulation="df", alpha=0.8)
    ours = ADAPTER.upstream_argv(df)
    assert ours[:2] == ["--modulation", "Normal"]
    for config, argv, refused in [
        (df, ours + ["--modulation", "OGM_GE"], "replaces main.py's own: --modulation df runs main.py with "
                                                "--modulation Normal, not OGM_GE"),  # the script's last one counts
        (RunConfig(), ["--alpha", "0.1"], "--modulation none runs main.py with --modulation Normal, not OGM_GE"),
        (RunConfig(modulation="ogm"), ["--modulation", "OGM_GE"], "--modulation ogm runs main.py with --modulation OGM,"),
        (df, ours + ["--alpha", "0.5"], "main.py's --alpha 0.5 differs from the run's --alpha 0.8"),
    ]:
        with pytest.raises(AdapterError, match=refused):
            ADAPTER.validate(SimpleNamespace(config=config), argv, tmp_path)
    # on the command line: refused before main.py starts
    assert main(["run", "ogm-ge", "--simam2", "--zeta", "learnable", "--modulation", "df", "--checkout", str(checkout),
                 "--workdir", str(tmp_path), "--", "--modulation", "OGM_GE"]) == 2
    assert "--modulation Normal, not OGM_GE" in capsys.readouterr().err


def test_decoupling_free_modulation_needs_a_learnable_zeta_and_simam2_a_fusion_it_has(checkout):
    with pytest.raises(ValueError, match="learnable"):
        RunConfig(simam2=True, zeta="fixed", modulation="df")
    with installed(ADAPTER, RunConfig(simam2=True), checkout):
        import models.basic_model as bm

        with pytest.raises(AdapterError, match="no SimAM² form"):
            bm.AVClassifier(_args(fusion_method="gated"))


# -- metrics ---------------------------------------------------------------------------------------

def test_top1_and_map_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.1, 0.8, 0.1], [0.55, 0.05, 0.4]])
    labels = np.array([0, 1, 1, 2])
    top1, m_ap = top1_and_map(probs, labels)
    assert top1 == 0.5
    # class 0: its positive ranked 1st -> AP 1; class 1: positives ranked 1st and 3rd -> (1 + 2/3) / 2;
    # class 2: positive ranked 1st -> 1
    assert m_ap == pytest.approx((1 + (1 + 2 / 3) / 2 + 1) / 3)
    with pytest.raises(ValueError, match="disagree"):
        top1_and_map(probs, labels[:3])


# -- synthetic data, read by the upstream's own loaders --------------------------------------------

def test_synthetic_cremad_is_read_by_the_upstream_loader(checkout, tmp_path, monkeypatch):
    root = write_cremad(tmp_path, n_train=6, n_test=6, frames=2, frame_size=64)
    monkeypatch.chdir(root)  # CramedDataset reads ./data/CREMAD/*.csv
    with installed(ADAPTER, RunConfig(), checkout):
        from dataset.CramedDataset import CramedDataset

        args = argparse.Namespace(dataset="CREMAD", audio_path=str(root / "AudioWAV"), visual_path=str(root), fps=1)
        train, test = CramedDataset(args, "train"), CramedDataset(args, "test")
        assert (len(train), len(test)) == (6, 6) and sorted(train.label) == list(range(6))
        spec, image, label = test[0]
        assert spec.shape == (257, 188) and tuple(image.shape) == (3, 1, 224, 224)
        # audio is informative: the loudest frequency bin tells the classes apart
        peaks = {test[i][2]: int(test[i][0].mean(1).argmax()) for i in range(6)}
        assert len(set(peaks.values())) == 6
    with pytest.raises(ValueError, match="at least 1 s"):
        write_cremad(tmp_path / "short", seconds=0.5)


def test_synthetic_vggsound_is_read_by_the_patched_loader(checkout, tmp_path, monkeypatch):
    root = write_vggsound(tmp_path, n_train=3, n_test=3, classes=3, frames=4, frame_size=32, seconds=1.0)
    monkeypatch.chdir(root)
    with installed(ADAPTER, RunConfig(), checkout):
        from dataset.VGGSoundDataset import VGGSound

        args = argparse.Namespace(audio_path=str(root), visual_path=str(root), fps=1, use_video_frames=3)
        train, test = VGGSound(args, "train"), VGGSound(args, "test")
        assert (len(train), len(test)) == (3, 3) and sorted(test.label) == [0, 1, 2]
        spec, image, _ = test[0]
        assert spec.shape == (129, 626) and tuple(image.shape) == (3, 3, 224, 224)


def test_validate_names_the_missing_lists(tmp_path):
    with pytest.raises(AdapterError, match="data/CREMAD/train.csv"):
        check_dataset(["--dataset", "CREMAD"], tmp_path)


# -- main.py end to end --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
    """12 training clips; a test list of 2 clips, each under all 6 labels (Top-1 = 1/6 for any model)."""
    return cremad_every_label(tmp_path_factory.mktemp("cremad"), n_train=12, n_test=2, frame_size=112)


UPSTREAM_MODULATION = {"none": "Normal", "df": "Normal", "ogm-ge": "OGM_GE"}
FAST = [("sum", "df", "learnable"), ("concat", "ogm-ge", "fixed"), ("film", "none", "learnable")]
GRID = [(f, m, "learnable") for f in ("sum", "concat", "film") for m in ("none", "ogm-ge", "df")]


def _main_py(checkout, data, out, fusion, modulation, zeta, simam2=True):
    argv = ["--dataset", "CREMAD", "--fusion_method", fusion, "--modulation", UPSTREAM_MODULATION[modulation],
            "--alpha", "0.8", "--batch_size", "6", "--audio_path", str(data / "AudioWAV"),
            "--visual_path", str(data)]
    config = RunConfig(simam2=simam2, zeta=zeta, modulation=modulation, alpha=0.8, seed=0, record=out / "train.jsonl")
    run_script(ADAPTER, argv + ["--train", "--epochs", "1", "--ckpt_path", str(out / "ckpt")], config, checkout, cwd=data)
    ckpts = list((out / "ckpt").glob("*.pth"))
    assert len(ckpts) == 1, "main.py wrote no checkpoint"
    config.record = out / "eval.jsonl"
    run_script(ADAPTER, argv + ["--ckpt_path", str(ckpts[0])], config, checkout, cwd=data)
    read = lambda name: [json.loads(line) for line in open(out / name)]  # noqa: E731
    return torch.load(ckpts[0], weights_only=True), read("train.jsonl"), read("eval.jsonl")


def _check_run(saved, train, evaluation, fusion, modulation, simam2=True):
    assert saved["fusion"] == fusion and saved["modulation"] == UPSTREAM_MODULATION[modulation]
    assert any(k.startswith("module.fusion_module.simam2.") for k in saved["model"]) == simam2
    steps = [r for r in train if r["event"] == "step"]
    assert [(r["epoch"], r["step"]) for r in steps] == [(0, 0), (0, 1)]  # 12 clips, batches of 6
    for r in steps:
        assert r["rho_decoupled"] > 0
        assert (r["rho_df"] is not None and r["rho_df"] > 0) == simam2
        if modulation == "none":
            assert r["k1"] is None and r["k2"] is None
        else:  # OGM's rule on the ratio that drives it: Eq. 11's for df, OGM-GE's own otherwise
            rho = r["rho_df"] if modulation == "df" else r["rho_decoupled"]
            assert (r["k1"], r["k2"]) == pytest.approx([k.item() for k in ogm_coefficients(rho, 0.8)])
    evals = [r for r in train if r["event"] == "eval"]
    assert len(evals) == 1 and evals[0]["n"] == 12
    assert evals[0]["top1"] == pytest.approx(saved["acc"]) == pytest.approx(1 / 6)  # upstream's own acc
    assert 0 < evals[0]["mAP"] <= 1
    # each modality alone (mean ablation; SPEC §8) and main.py's split heads, for any fusion
    for key in ("top1_m1", "top1_m2", "mAP_m1", "mAP_m2"):
        assert 0 <= evals[0][key] <= 1
    assert evals[0]["ablation_mean"] == "train"
    assert (evals[0].get("top1_head_m1") is not None) == (fusion in ("sum", "concat", "film"))
    loaded = [r for r in evaluation if r["event"] == "eval"]
    assert len(loaded) == 1 and loaded[0]["top1"] == pytest.approx(saved["acc"])
    assert loaded[0]["ablation_mean"] == "eval" and loaded[0]["top1_m1"] is not None  # no training: the test set's mean
    assert evaluation[0]["event"] == "start" and evaluation[0]["upstream_options"]["train"] is False


def _one_run(checkout, cremad, tmp_path, fusion, modulation, zeta, simam2=True):
    saved, train, evaluation = _main_py(checkout, cremad, tmp_path, fusion, modulation, zeta, simam2)
    _check_run(saved, train, evaluation, fusion, modulation, simam2)


@pytest.mark.parametrize("fusion,modulation,zeta", FAST)
def test_main_py_trains_saves_and_evaluates(checkout, cremad, tmp_path, fusion, modulation, zeta):
    _one_run(checkout, cremad, tmp_path, fusion, modulation, zeta)


@pytest.mark.slow
@pytest.mark.parametrize("fusion,modulation,zeta", [g for g in GRID if g not in FAST])
def test_main_py_full_grid(checkout, cremad, tmp_path, fusion, modulation, zeta):
    _one_run(checkout, cremad, tmp_path, fusion, modulation, zeta)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["sum", "concat", "film"])
def test_main_py_vanilla_baseline(checkout, cremad, tmp_path, fusion):
    _one_run(checkout, cremad, tmp_path, fusion, "ogm-ge", "fixed", simam2=False)


# -- CLI and Table 1 -------------------------------------------------------------------------------

def test_cli_run_passes_fusion_and_modulation_to_main_py(checkout, tmp_path, capsys):
    from simam2.adapters.cli import main, run_parser

    _, parser = run_parser("ogm-ge")
    ns = parser.parse_args(["--fusion", "film", "--simam2", "--zeta", "learnable", "--modulation", "ogm-ge",
                            "--no-ge", "--alpha", "0.3", "--modulation-end", "7"])
    config = config_from_args(ns)
    assert ADAPTER.upstream_argv(config, ns) == ["--fusion_method", "film", "--modulation", "OGM", "--alpha", "0.3",
                                         "--modulation_starts", "0", "--modulation_ends", "7"]
    assert (config.simam2, config.zeta, config.modulation, config.ge) == (True, "learnable", "ogm-ge", False)
    # a working directory without CREMA-D's lists stops the run before main.py starts, saying why
    assert main(["run", "ogm-ge", "--fusion", "sum", "--checkout", str(checkout), "--workdir", str(tmp_path), "--", "--train",
                 "--ckpt_path", str(tmp_path / "ckpt")]) == 2
    assert "data/CREMAD/train.csv" in capsys.readouterr().err


def test_table_rows_are_configured_as_the_papers_footnote_says(tmp_path):
    from simam2.adapters.machinery.grid import CellSeed, cell_name
    from simam2.adapters.ogm_ge.table import COLUMNS, METHODS

    configs = {m.label: m.run_config(CellSeed(m, COLUMNS[0], 3, tmp_path)) for m in METHODS}
    # learnable ζ only in the decoupling-free row; the other SimAM² rows fuse with ζ = 0.5
    assert {k: (c.simam2, c.zeta, c.modulation) for k, c in configs.items()} == {
        "Baseline": (False, "fixed", "none"), "+SimAM²": (True, "fixed", "none"),
        "+OGM-GE": (False, "fixed", "ogm-ge"), "+OGM-GE +SimAM²": (True, "fixed", "ogm-ge"),
        "+Decoupling-Free +SimAM²": (True, "learnable", "df")}
    assert all(c.seed == 3 and c.record == tmp_path / "records.jsonl" for c in configs.values())
    names = {cell_name(m, c) for m in METHODS for c in COLUMNS}
    assert len(names) == 15 and all(n.isascii() and "/" not in n for n in names)


@pytest.mark.slow
def test_run_table_runs_the_fifteen_cells(checkout, cremad, tmp_path):
    from simam2.adapters.ogm_ge.table import run_table

    lines = []
    table = run_table(tmp_path, data_dir=cremad, epochs=1, progress=lines.append, checkout=checkout, batch_size=6,
                      bar=False)
    assert (tmp_path / "table.txt").read_text() == table
    cells = json.loads((tmp_path / "table.json").read_text())["cells"]
    assert len(cells) == 15 and all(c["summary"]["top1"]["mean"] == pytest.approx(1 / 6) for c in cells)  # by design
    assert all("top1_m1" in c["summary"] for c in cells)
    assert len(list(tmp_path.glob("*/seed0/records.jsonl"))) == 15
    assert sum(c["decoupling_free"] for c in cells) == 3  # r needs 3 steps or more; these runs have 2
    # run again: every cell is complete, nothing runs
    lines.clear()
    assert run_table(tmp_path, data_dir=cremad, epochs=1, progress=lines.append, checkout=checkout, batch_size=6,
                     bar=False) == table
    assert lines == ["15 of 15 runs already complete in " + str(tmp_path) + ", not run again (--fresh reruns them)"]



def test_a_list_whose_clips_are_all_missing_is_named_before_main_py_starts(tmp_path):
    data = write_cremad(tmp_path / "cremad", n_train=6, n_test=6, frame_size=32)
    (data / "data" / "CREMAD" / "test.csv").write_text("")  # main.py would train one epoch, then divide by zero
    with pytest.raises(AdapterError, match="test.csv lists 0 clips"):
        check_dataset(["--audio_path", "AudioWAV", "--visual_path", "."], data)
    write_cremad(tmp_path / "whole", n_train=6, n_test=6, frame_size=32)
    check_dataset(["--audio_path", "AudioWAV", "--visual_path", "."], tmp_path / "whole")  # a whole set passes


# -- Table 1's recipes, data naming and checkpoints --------------------------------------------------

def test_the_paper_recipe_is_main_py_own(checkout):
    """The paper recipe equals main.py's argparse defaults and its optimiser line at the pin."""
    import re

    from simam2.adapters.ogm_ge.table import RECIPES

    source = (checkout / "main.py").read_text()

    def default(option):
        return re.search(rf"'--{option}', default=([^,]+),", source).group(1)

    paper = RECIPES["paper"]
    assert (int(default("batch_size")), int(default("epochs")), float(default("learning_rate"))) == \
        (paper.batch_size, paper.epochs, paper.learning_rate) == (64, 100, 1e-3)
    assert (int(default("lr_decay_step")), float(default("lr_decay_ratio"))) == (paper.lr_decay_step, paper.lr_decay_ratio)
    assert (int(default("modulation_starts")), int(default("modulation_ends"))) == (paper.modulation_start, paper.modulation_end)
    assert "optim.SGD(model.parameters(), lr=args.learning_rate, momentum=0.9, weight_decay=1e-4)" in source
    assert paper.alpha == RECIPES["quick"].alpha == 0.8  # OGM-GE's α for CREMA-D


def _one_cell(monkeypatch, tmp_path, data, **table_kwargs):
    """Run Table 1's first cell with main.py replaced by a stand-in that writes a checkpoint."""
    from simam2.adapters.machinery.grid import CellSeed
    from simam2.adapters.ogm_ge import table as table1

    seen = {}

    def fake_run_script(spec, argv, config, checkout=None, cwd=None):
        seen.update(argv=list(argv), config=config, cwd=cwd)
        ckpt = Path(argv[argv.index("--ckpt_path") + 1])
        ckpt.mkdir(parents=True)
        (ckpt / "best_model.pth").write_bytes(b"\0" * 1000)

    monkeypatch.setattr(table1, "run_script", fake_run_script)
    t = table1.table(data, 0, **table_kwargs)
    cs = CellSeed(table1.METHODS[2], table1.COLUMNS[1], 0, tmp_path / "cell" / "seed0")
    cs.folder.mkdir(parents=True)
    t.run_cell(cs)
    return t, seen, cs


def test_table_recipes_reach_main_py_and_checkpoints_go_once_evaluated(monkeypatch, tmp_path):
    from simam2.adapters.ogm_ge.table import recipe

    data = write_cremad(tmp_path / "syn", n_train=6, n_test=6, frame_size=16)
    quick, seen, cs = _one_cell(monkeypatch, tmp_path, data, how=recipe("quick"))
    argv = seen["argv"]

    def value(option):
        return argv[argv.index(option) + 1]

    # quick: today's defaults, so a table's numbers at a fixed seed stay what they were
    assert (value("--batch_size"), value("--learning_rate"), value("--epochs"), value("--alpha")) == ("8", "0.01", "2", "0.8")
    assert quick.options == {"epochs": 2, "data": str(data), "alpha": 0.8, "batch_size": 8, "learning_rate": 0.01}
    assert quick.title == "Table 1 on synthetic CREMA-D (2 epoch(s) per cell)" and "Synthetic data" in quick.note
    assert not (cs.folder / "ckpt").exists()

    paper, seen, cs = _one_cell(monkeypatch, tmp_path / "p", data, how=recipe("paper", alpha=0.5),
                                keep_checkpoints=True)
    argv = seen["argv"]
    assert (value("--batch_size"), value("--learning_rate"), value("--epochs"), value("--alpha"),
            value("--lr_decay_step"), value("--lr_decay_ratio"), value("--modulation_starts"),
            value("--modulation_ends")) == ("64", "0.001", "100", "0.5", "70", "0.1", "0", "50")
    assert paper.options["recipe"] == "paper"
    assert paper.note.startswith("recipe paper: batch 64, 100 epoch(s), SGD lr 0.001 (momentum 0.9, weight decay 1e-4), "
                                 "StepLR every 70 epochs × 0.1, modulation epochs 0–50, α 0.5")
    assert (cs.folder / "ckpt" / "best_model.pth").is_file()


def test_a_table_names_its_data_as_what_it_is(monkeypatch, tmp_path):
    from simam2.adapters.machinery.provenance import SYNTHETIC_MARKER

    data = write_cremad(tmp_path / "mine", n_train=6, n_test=6, frame_size=16)
    (data / SYNTHETIC_MARKER).unlink()  # a folder simam2 synth did not write
    t, _, _ = _one_cell(monkeypatch, tmp_path, data)
    assert t.title == f"Table 1 on your CREMA-D at {data} (0 epoch(s) per cell)" and "Synthetic" not in t.note
    (data / ".simam2-prepared").write_text('{"raw": "/datasets/CREMA-D"}')
    t, _, _ = _one_cell(monkeypatch, tmp_path / "again", data)
    assert t.title.startswith("Table 1 on CREMA-D prepared from /datasets/CREMA-D")


def test_table_recipe_options_are_table_one_s(tmp_path, capsys):
    assert main(["table", "fop", "--recipe", "paper", "--out", str(tmp_path / "t")]) == 2
    assert "are Table 1's (ogm-ge)" in capsys.readouterr().err and not (tmp_path / "t").exists()
    assert main(["table", "ogm-ge", "--data", str(tmp_path), "--out", str(tmp_path / "t")]) == 2
    assert "is not a CREMA-D in main.py's layout" in capsys.readouterr().err and not (tmp_path / "t").exists()
