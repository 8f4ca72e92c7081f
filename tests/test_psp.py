"""PSP adapter: patches against the pin, SimAM² on PSP's summation at run time, the split head, input
checks, and fully_supervised_main.py end to end for Table 2's four configurations.

Everything runs the upstream's own code from the patched checkout (``upstream_checkout``); end-to-end
runs train fully_supervised_main.py for two epochs on a tiny synthetic AVE through its own entry
point, and test it after the second (``--check_epoch 1``).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from simam2.adapters import AdapterError, RunConfig, installed, run_script
from simam2.adapters.ave.common import data_args
from simam2.adapters.ave.synth import EVAL_BATCH, write_synthetic_ave
from simam2.adapters.ave.psp import SPEC as ADAPTER
from simam2.core import LateFusion

from ave_runs import CONFIGS, run_each_config
from upstream_modules import load_module, pristine_module

pytestmark = pytest.mark.upstream
B = 3


@pytest.fixture(scope="module")
def checkout(upstream_checkout):
    return upstream_checkout("psp")


@pytest.fixture(scope="module")
def ave(upstream_checkout, tmp_path_factory):
    """A tiny synthetic AVE (8 train videos; val and test repeat 4 videos up to 402 entries), with
    real AVE labels when the AVE-ECCV18 checkout is at hand."""
    try:
        avga = upstream_checkout("avga")
    except pytest.skip.Exception:
        avga = None
    return write_synthetic_ave(tmp_path_factory.mktemp("ave"), n_train=8, n_val=4, n_test=4, checkout=avga)


@pytest.fixture(scope="module")
def pristine_model(checkout, tmp_path_factory):
    """fully_model.py exactly as at the pin (unpatched), as a module."""
    return pristine_module("psp", checkout, "fully_model.py", tmp_path_factory.mktemp("pristine"))


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 10, 128, generator=g), torch.rand(B, 10, 7, 7, 512, generator=g)


def _streams(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 10, 256, generator=g), torch.randn(B, 10, 256, generator=g)


# -- regression: the patches and the adapter with SimAM² off change nothing --------------------------

def test_patched_psp_net_matches_the_pin(checkout, pristine_model, monkeypatch):
    if not torch.cuda.is_available():  # the pin hard-codes .cuda() on constants and LSTM states
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    patched = load_module(checkout / "fully_model.py", "patched_psp_fully_model")
    torch.manual_seed(0)
    new, old = patched.psp_net(128, 512, 128, 29).eval(), pristine_model.psp_net(128, 512, 128, 29).eval()
    old.load_state_dict(new.state_dict())
    audio, video = _inputs()
    for got, want in zip(new(audio, video, 0.099), old(audio, video, 0.099)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_adapter_off_gives_the_patched_upstream_output(checkout):
    patched = load_module(checkout / "fully_model.py", "patched_psp_fully_model")  # its own copy, never replaced
    with installed(ADAPTER, RunConfig(), checkout):
        import fully_model

        assert fully_model.psp_net.__name__ == "AdaptedPspNet" and fully_model.PSP.__name__ == "AdaptedPSP"
        torch.manual_seed(0)
        new = fully_model.psp_net(128, 512, 128, 29).eval()
        old = patched.psp_net(128, 512, 128, 29).eval()
        old.load_state_dict(new.state_dict())
        assert type(new.psp).__name__ == "AdaptedPSP" and new.psp.simam2 is None
        audio, video = _inputs()
        for got, want in zip(new(audio, video, 0.099), old(audio, video, 0.099)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "fully_model" not in sys.modules  # uninstalled: the checkout's modules are purged


@pytest.mark.parametrize("zeta", ["fixed", "learnable"])
def test_simam2_replaces_the_averaged_sum_of_the_two_streams(checkout, zeta):
    with installed(ADAPTER, RunConfig(simam2=True, zeta=zeta), checkout):
        import fully_model

        torch.manual_seed(0)
        net = fully_model.psp_net(128, 512, 128, 29).eval()
        fusion = ADAPTER.fusion(net)
        assert isinstance(fusion, LateFusion) and fusion.channels == 256 and fusion.zeta_mode == zeta
        if zeta == "learnable":  # the gate exists before the script builds its optimizer
            assert any(p is fusion.gate.weight for p in net.parameters())
        a, v = _streams()
        fused, v_psp, a_psp = net.psp(a, v, 0.099)
        upstream_sum = torch.mul(v_psp + a_psp, 0.5)
        torch.testing.assert_close(fused, fusion(a_psp, v_psp), rtol=0, atol=0)
        assert fusion.zeta.shape == (B * 10, 256)
        if zeta == "fixed":  # Eq. 8 on U = the upstream's a_v_fuse: a sigmoid gate in (0, 1)
            gate = fused / upstream_sum
            assert gate.min() > 0 and gate.max() < 1


def test_encoder_groups_and_split_head(checkout):
    with installed(ADAPTER, RunConfig(), checkout):
        import fully_model

        torch.manual_seed(0)
        net = fully_model.psp_net(128, 512, 128, 29)
        groups = ADAPTER.groups(net)
        names = {id(p): n for n, p in net.named_parameters()}
        audio = {names[id(p)] for p in groups["audio"]}
        visual = {names[id(p)] for p in groups["visual"]}
        assert audio == {n for n in names.values() if n.startswith(("fa.", "lstm_a_v.lstm_audio."))}
        assert "fv.0.weight" in visual and "attention.affine_video.weight" in visual
        assert not audio & visual
        assert not any(n.startswith(("psp.", "attention.affine_audio", "attention.affine_g", "L1", "L2"))
                       for n in audio | visual)
        # each modality's logits are the fused logits with the other modality's term taken out
        a, v = _streams()
        out_a, out_v = ADAPTER.modality_logits(net, a, v)
        zero = torch.zeros_like(a)

        def head_on_sum(x, y):
            return net.L2(torch.relu(net.L1(torch.mul(x + y, 0.5))))

        torch.testing.assert_close(out_a, head_on_sum(a, zero), rtol=0, atol=0)
        torch.testing.assert_close(out_v, head_on_sum(zero, v), rtol=0, atol=0)
        assert out_a.shape == (B, 10, 29)


# -- bad input ---------------------------------------------------------------------------------------

def _argv(data: Path, *extra) -> list[str]:
    return ["--model_name", "PSP", "--threshold=0.099", "--train", "--nb_epoch", "2", "--batch_size", "4",
            "--save_epoch", "99", "--check_epoch", "1", *data_args(data, "--dir_labels", "right_labels.h5"), *extra]


def test_missing_file_and_key_are_named_before_the_script_starts(checkout, ave, tmp_path):
    with pytest.raises(AdapterError, match=r"--dir_audio .*nowhere\.h5: no such file"):
        run_script(ADAPTER, _argv(ave, "--dir_audio", str(tmp_path / "nowhere.h5")), RunConfig(),
                   checkout=checkout, cwd=tmp_path)
    bad = tmp_path / "order_badkey.h5"
    with h5py.File(bad, "w") as hf:
        hf.create_dataset("idx", data=np.arange(8, dtype=np.int64))
    with pytest.raises(AdapterError, match=r"--dir_order_train .*order_badkey\.h5: no dataset 'order' \(found: idx\)"):
        run_script(ADAPTER, _argv(ave, "--dir_order_train", str(bad)), RunConfig(), checkout=checkout, cwd=tmp_path)
    # default label file name (PSP reads right_labels.h5) resolved against the working directory
    argv = [a for a in _argv(ave)]
    i = argv.index("--dir_labels")
    del argv[i:i + 2]
    with pytest.raises(AdapterError, match=r"--dir_labels .*data/right_labels\.h5: no such file"):
        run_script(ADAPTER, argv, RunConfig(), checkout=checkout, cwd=tmp_path)
    assert list(tmp_path.glob("*.pt")) == []


def test_more_batches_than_batch_size_is_refused(checkout, ave, tmp_path):
    """The epoch summary scores nb_batch videos of the last batch: nb_batch > batch_size would fail."""
    with pytest.raises(AdapterError, match=r"8 videos in batches of 2 give 4 batches"):
        run_script(ADAPTER, _argv(ave, "--batch_size", "2"), RunConfig(), checkout=checkout, cwd=tmp_path)


# -- end to end: fully_supervised_main.py, Table 2's four configurations ------------------------------

@pytest.fixture(scope="module")
def runs(checkout, ave, tmp_path_factory):
    """fully_supervised_main.py --train, two epochs, once per configuration."""
    return run_each_config(ADAPTER, _argv(ave), checkout, tmp_path_factory)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fully_supervised_main_trains_tests_and_saves(runs, name):
    config = CONFIGS[name]
    ctx, printed, workdir = runs[name]
    records = ctx.recorder.read()
    steps = [r for r in records if r["event"] == "step"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [(r["epoch"], r["step"]) for r in steps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(r["rho_decoupled"] > 0 for r in steps)
    # one test() after the second epoch, the accuracy the script prints, on all 402 entries
    assert [(e["split"], e["epoch"], e["n"]) for e in evals] == [("test", 1, EVAL_BATCH)]
    assert evals[0]["acc"] == pytest.approx(float(re.search(r"\[test\]acc:\s+(\S+)", printed).group(1)), abs=1e-12)
    assert (workdir / "PSP_1_fully.pt").is_file()
    fusion = ADAPTER.fusion(ctx.models[0])
    if config.simam2:
        assert all(r["rho_df"] is not None and 0 < r["r"] <= 1 for r in steps)
        assert fusion.var_max.sum() > 0
    else:
        assert fusion is None and all(r["rho_df"] is None for r in steps)
    if config.modulation == "none":
        assert all(r["k1"] is None for r in steps)
    else:  # OGM-GE's rule: one coefficient is 1, the other damped by tanh(α ρ)
        for r in steps:
            k = sorted([r["k1"], r["k2"]])
            rho = r["rho_df"] if config.modulation == "df" else r["rho_decoupled"]
            assert k[1] == 1.0 and k[0] == pytest.approx(1 - np.tanh(0.5 * max(rho, 1 / rho)), rel=1e-5)


def test_test_mode_loads_the_pickled_simam2_model(checkout, ave, runs):
    _, _, workdir = runs["simam2+df"]
    argv = ["--model_name", "PSP", "--threshold=0.099", "--trained_model_path", str(workdir / "PSP_1_fully.pt"),
            *data_args(ave, "--dir_labels", "right_labels.h5")]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ctx = run_script(ADAPTER, argv, RunConfig(simam2=True, zeta="learnable"), checkout=checkout, cwd=workdir)
    evals = [r for r in ctx.recorder.read() if r["event"] == "eval"]
    trained = [r for r in runs["simam2+df"][0].recorder.read() if r["event"] == "eval"]
    assert [(e["split"], e["n"]) for e in evals] == [("test", EVAL_BATCH)]
    assert evals[0]["acc"] == pytest.approx(float(re.search(r"\[test\]acc:\s+(\S+)", printed.getvalue()).group(1)))
    assert evals[0]["acc"] == trained[0]["acc"]  # the saved model is the one tested after epoch 1
