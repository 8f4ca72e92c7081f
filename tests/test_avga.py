"""AVGA adapter: the seam and patches against the pin, SimAM² wiring, the split head, input checks,
the labels rebuild, and supervised_main.py end to end for Table 2's four configurations.

Everything runs the upstream's own code from the patched checkout (``upstream_checkout``); end-to-end
runs train supervised_main.py for one epoch on a tiny synthetic AVE through its own entry point.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from simam2.adapters import AdapterError, RunConfig, installed, run_script
from simam2.adapters.ave.common import data_args
from simam2.adapters.ave.synth import EVAL_BATCH, rebuild_labels, write_synthetic_ave
from simam2.adapters.ave.avga import SPEC as ADAPTER
from simam2.core import ConcatFusion

from ave_runs import CONFIGS, run_each_config
from upstream_modules import load_module, pristine_module

pytestmark = pytest.mark.upstream
B = 3


@pytest.fixture(scope="module")
def checkout(upstream_checkout):
    return upstream_checkout("avga")


@pytest.fixture(scope="module")
def ave(checkout, tmp_path_factory):
    """A tiny synthetic AVE (8 train videos; val and test repeat 4 videos up to 402 entries)."""
    return write_synthetic_ave(tmp_path_factory.mktemp("ave"), n_train=8, n_val=4, n_test=4, checkout=checkout)


@pytest.fixture(scope="module")
def pristine_models(checkout, tmp_path_factory):
    """models.py exactly as at the pin (unpatched), as a module."""
    return pristine_module("avga", checkout, "models.py", tmp_path_factory.mktemp("pristine"))


def _inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.rand(B, 10, 128, generator=g)
    video = torch.rand(B, 10, 7, 7, 512, generator=g)
    return audio.to(device), video.to(device)


# -- regression: the patches and the adapter with SimAM² off change nothing --------------------------

def test_patched_att_net_matches_the_pin(checkout, pristine_models, monkeypatch):
    """Same weights, same inputs: the patched att_Net (seam + device fixes) gives the pin's output."""
    if not torch.cuda.is_available():  # the pin's forward hard-codes .cuda() on its LSTM states
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    patched = load_module(checkout / "models.py", "patched_avga_models")
    torch.manual_seed(0)
    new = patched.att_Net(128, 128, 512, 29)
    old = pristine_models.att_Net(128, 128, 512, 29)
    old.load_state_dict(new.state_dict())
    audio, video = _inputs(new.L1.weight.device)
    torch.testing.assert_close(new(audio, video), old(audio, video), rtol=0, atol=0)
    a, v = torch.rand(B, 10, 256), torch.rand(B, 10, 256)
    assert torch.equal(new.fuse(a, v), torch.cat((a, v), -1))


def test_adapter_off_gives_the_patched_upstream_output(checkout):
    patched = load_module(checkout / "models.py", "patched_avga_models")  # its own copy, never replaced
    with installed(ADAPTER, RunConfig(), checkout):
        import models

        adapted = models.att_Net
        assert adapted.__name__ == "AdaptedAttNet" and adapted.__mro__[2].__name__ == "att_Net"
        torch.manual_seed(0)
        new = adapted(128, 128, 512, 29)
        old = patched.att_Net(128, 128, 512, 29)
        old.load_state_dict(new.state_dict())
        assert new.simam2 is None
        audio, video = _inputs(new.L1.weight.device)
        torch.testing.assert_close(new(audio, video), old(audio, video), rtol=0, atol=0)


@pytest.mark.parametrize("zeta", ["fixed", "learnable"])
def test_simam2_fuses_each_segment_in_the_padded_concat_form(checkout, zeta):
    with installed(ADAPTER, RunConfig(simam2=True, zeta=zeta), checkout):
        import models

        torch.manual_seed(0)
        net = models.att_Net(128, 128, 512, 29)
        assert isinstance(net.simam2, ConcatFusion) and net.simam2.zeta_mode == zeta
        assert (net.simam2.x_channels, net.simam2.y_channels) == (256, 256)
        if zeta == "learnable":  # the gate exists before the script builds its optimizer
            assert any(p is net.simam2.gate.weight for p in net.parameters())
        a, v = torch.rand(B, 10, 256), torch.rand(B, 10, 256)
        net.eval()
        got = net.fuse(a, v)
        assert got.shape == (B, 10, 512)
        want = net.simam2(a.reshape(-1, 256), v.reshape(-1, 256)).view(B, 10, 512)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert not torch.allclose(got, torch.cat((a, v), -1))
        if zeta == "fixed":  # Eq. 8: sigmoid(E*) ⊙ U with U = half the concatenation
            ratio = got / (0.5 * torch.cat((a, v), -1))
            assert ratio.min() > 0 and ratio.max() < 1


def test_zero_grad_restores_training_mode(checkout):
    """val() leaves the model in eval mode for good; the training loop's zero_grad() undoes it."""
    with installed(ADAPTER, RunConfig(simam2=True, zeta="learnable"), checkout):
        import models

        net = models.att_Net(128, 128, 512, 29)
        net.eval()
        net.zero_grad()
        assert net.training and net.simam2.training


def test_encoder_groups_and_split_head(checkout):
    with installed(ADAPTER, RunConfig(), checkout):
        import models

        torch.manual_seed(0)
        net = models.att_Net(128, 128, 512, 29)
        groups = ADAPTER.groups(net)
        names = {id(p): n for n, p in net.named_parameters()}
        audio = {names[id(p)] for p in groups["audio"]}
        visual = {names[id(p)] for p in groups["visual"]}
        assert audio == {n for n in names.values() if n.startswith("lstm_audio.")}
        assert visual == {n for n in names.values() if n.startswith(("lstm_video.", "affine_video.", "affine_v.", "affine_h."))}
        assert not audio & visual
        assert not any(n.startswith(("affine_audio", "affine_g", "L1", "L2")) for n in audio | visual)

        # with zero biases, each modality's logits are the model's own head on [m ; 0] or [0 ; m]
        with torch.no_grad():
            net.L1.bias.zero_()
            net.L2.bias.zero_()
        a, v = torch.randn(B, 10, 256), torch.randn(B, 10, 256)
        out_a, out_v = ADAPTER.modality_logits(net, a, v)

        def head(x):
            return net.L2(net.relu(net.L1(net.relu(x))))

        zero = torch.zeros_like(a)
        torch.testing.assert_close(out_a, head(torch.cat((a, zero), -1)))
        torch.testing.assert_close(out_v, head(torch.cat((zero, v), -1)))


# -- data --------------------------------------------------------------------------------------------

def test_labels_rebuilt_from_annotations_agree_with_the_shipped_label_files(checkout):
    labels, names = rebuild_labels(checkout / "data" / "Annotations.txt")
    assert labels.shape == (4143, 10, 29) and names[0] == "Church bell"
    assert np.array_equal(labels.sum(-1), np.ones((4143, 10)))
    with h5py.File(checkout / "data" / "mil_labels.h5", "r") as hf:
        video_class = hf["avadataset"][:].argmax(-1)
    with h5py.File(checkout / "data" / "labels_closs.h5", "r") as hf:
        is_event = hf["avadataset"][:]
    assert np.array_equal(labels[:, :, :28].max(1).argmax(-1), video_class)
    assert np.array_equal((labels.argmax(-1) != 28).astype(np.float32), is_event)


def test_synthetic_ave_has_the_upstream_format_and_real_labels(checkout, ave):
    with h5py.File(ave / "audio_feature.h5", "r") as hf:
        audio = hf["avadataset"][:]
    with h5py.File(ave / "visual_feature.h5", "r") as hf:
        assert hf["avadataset"].shape == (16, 10, 7, 7, 512) and hf["avadataset"].dtype == np.float64
    assert audio.shape == (16, 10, 128) and audio.dtype == np.float64 and audio.min() >= 0
    with h5py.File(ave / "labels.h5", "r") as hf:
        labels = hf["avadataset"][:]
    with h5py.File(ave / "right_labels.h5", "r") as hf:
        assert np.array_equal(hf["avadataset"][:], labels)
    import json

    rows = json.loads((ave / "synth.json").read_text())["annotation_rows"]
    real, _ = rebuild_labels(checkout / "data" / "Annotations.txt")
    assert np.array_equal(labels, real[rows])
    orders = {}
    for split in ("train", "val", "test"):
        with h5py.File(ave / f"{split}_order.h5", "r") as hf:
            orders[split] = hf["order"][:]
            assert hf["order"].dtype == np.int64
    assert len(orders["train"]) == 8 and len(orders["val"]) == len(orders["test"]) == EVAL_BATCH
    assert not set(orders["train"]) & set(orders["val"]) and not set(orders["val"]) & set(orders["test"])
    # learnable signal: an event segment's audio carries its class prototype
    classes = labels.argmax(-1)
    event, background = audio[classes != 28].mean(), audio[classes == 28].mean()
    assert event > background * 1.2


# -- bad input ---------------------------------------------------------------------------------------

def _argv(data: Path, *extra) -> list[str]:
    return ["--train", "--nb_epoch", "1", "--batch_size", "4", *data_args(data, "--dir_labels", "labels.h5"), *extra]


def test_missing_feature_file_is_named_before_the_script_starts(checkout, ave, tmp_path):
    argv = _argv(ave) + ["--dir_video", str(tmp_path / "nowhere.h5")]
    with pytest.raises(AdapterError, match=r"--dir_video .*nowhere\.h5: no such file"):
        run_script(ADAPTER, argv, RunConfig(), checkout=checkout, cwd=tmp_path)
    assert not (tmp_path / "model").exists()


def test_missing_key_and_short_eval_order_are_named(checkout, ave, tmp_path):
    bad = tmp_path / "labels_badkey.h5"
    with h5py.File(bad, "w") as hf:
        hf.create_dataset("labels", data=np.zeros((16, 10, 29), np.float32))
    with pytest.raises(AdapterError, match=r"--dir_labels .*labels_badkey\.h5: no dataset 'avadataset' \(found: labels\)"):
        run_script(ADAPTER, _argv(ave, "--dir_labels", str(bad)), RunConfig(), checkout=checkout, cwd=tmp_path)
    short = tmp_path / "val_short.h5"
    with h5py.File(short, "w") as hf:
        hf.create_dataset("order", data=np.arange(4, dtype=np.int64))
    with pytest.raises(AdapterError, match=r"--dir_order_val .*val_short\.h5: 4 entries.*402"):
        run_script(ADAPTER, _argv(ave, "--dir_order_val", str(short)), RunConfig(), checkout=checkout, cwd=tmp_path)
    with pytest.raises(AdapterError, match="not inside the upstream checkout"):
        run_script(ADAPTER, _argv(ave), RunConfig(), checkout=checkout, cwd=checkout)
    with pytest.raises(AdapterError, match="test mode loads .*AV_att.pt"):
        run_script(ADAPTER, data_args(ave, "--dir_labels", "labels.h5"), RunConfig(), checkout=checkout,
                   cwd=tmp_path / "empty")


# -- end to end: supervised_main.py, Table 2's four configurations ------------------------------------

@pytest.fixture(scope="module")
def runs(checkout, ave, tmp_path_factory):
    """supervised_main.py --train, one epoch, once per configuration."""
    return run_each_config(ADAPTER, _argv(ave), checkout, tmp_path_factory)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_supervised_main_trains_saves_and_evaluates(runs, name):
    config = CONFIGS[name]
    ctx, printed, workdir = runs[name]
    records = ctx.recorder.read()
    steps = [r for r in records if r["event"] == "step"]
    evals = [r for r in records if r["event"] == "eval"]
    assert len(steps) == 2 and all(r["epoch"] == 0 for r in steps)  # 8 videos in batches of 4
    assert all(r["rho_decoupled"] > 0 for r in steps)
    # the recorded accuracy is the one val() prints, on all 402 entries
    assert [(e["split"], e["n"]) for e in evals] == [("val", EVAL_BATCH)]
    assert evals[0]["acc"] == pytest.approx(float(printed.strip().splitlines()[-1]), abs=1e-12)
    # each modality alone by mean ablation over the epoch's training inputs, and the split heads
    assert evals[0]["ablation_mean"] == "train"
    assert all(0 <= evals[0][k] <= 1 for k in ("acc_m1", "acc_m2", "acc_head_m1", "acc_head_m2"))
    assert (workdir / "model" / "AV_att.pt").is_file()
    model = ctx.models[0]
    if config.simam2:
        assert all(r["rho_df"] is not None and 0 < r["r"] <= 1 for r in steps)
        assert model.simam2.var_max.sum() > 0  # updated in training mode
    else:
        assert model.simam2 is None and all(r["rho_df"] is None for r in steps)
    if config.modulation == "none":
        assert all(r["k1"] is None for r in steps)
    else:  # OGM-GE's rule: one coefficient is 1, the other damped by tanh(α ρ)
        for r in steps:
            k = sorted([r["k1"], r["k2"]])
            rho = r["rho_df"] if config.modulation == "df" else r["rho_decoupled"]
            assert k[1] == 1.0 and k[0] == pytest.approx(1 - np.tanh(0.5 * max(rho, 1 / rho)), rel=1e-5)


def test_test_mode_loads_the_pickled_simam2_model(checkout, ave, runs):
    _, _, workdir = runs["simam2+df"]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ctx = run_script(ADAPTER, data_args(ave, "--dir_labels", "labels.h5"),
                         RunConfig(simam2=True, zeta="learnable"), checkout=checkout, cwd=workdir)
    evals = [r for r in ctx.recorder.read() if r["event"] == "eval"]
    assert [(e["split"], e["n"]) for e in evals] == [("test", EVAL_BATCH)]
    assert evals[0]["acc"] == pytest.approx(float(printed.getvalue().strip().splitlines()[-1]), abs=1e-12)
    # per-modality evaluation runs on the unpickled model: each modality alone by the test set's own mean
    assert evals[0]["ablation_mean"] == "eval" and 0 <= evals[0]["acc_m1"] <= 1 and 0 <= evals[0]["acc_m2"] <= 1


class _Planted:
    """A pickle that, loaded, would create a file: what a planted model/AV_att.pt could do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_planted_checkpoint_is_refused_not_run(checkout, ave, tmp_path):
    (tmp_path / "model").mkdir()
    opened = tmp_path / "pwned.txt"
    torch.save(_Planted(opened), tmp_path / "model" / "AV_att.pt")
    with pytest.raises(AdapterError, match="refused to load a checkpoint.*Unsupported global"):
        run_script(ADAPTER, data_args(ave, "--dir_labels", "labels.h5"), RunConfig(), checkout=checkout, cwd=tmp_path)
    assert not opened.exists()  # nothing of the pickle ran
