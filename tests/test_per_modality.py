"""Per-modality evaluation in an upstream run: measured beside the fused metric, never changing it."""

from __future__ import annotations

import json

import pytest
import torch

from simam2.adapters import RunConfig, run_script
from simam2.adapters.ogm_ge.spec import SPEC
from simam2.adapters.ogm_ge.synth import write_cremad


@pytest.fixture(scope="module")
def checkout(upstream_checkout):
    return upstream_checkout("ogm-ge")


@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
    return write_cremad(tmp_path_factory.mktemp("cremad"), n_train=12, n_test=6, frame_size=112)


def _train(checkout, data, out, per_modality, fusion="concat"):
    config = RunConfig(simam2=True, zeta="learnable", modulation="df", alpha=0.8, seed=0,
                       record=out / "records.jsonl", per_modality=per_modality)
    argv = ["--dataset", "CREMAD", "--train", "--epochs", "2", "--fusion_method", fusion, "--modulation", "Normal",
            "--alpha", "0.8", "--batch_size", "6", "--learning_rate", "0.01", "--random_seed", "0",
            "--audio_path", str(data / "AudioWAV"), "--visual_path", str(data), "--ckpt_path", str(out / "ckpt")]
    run_script(SPEC, argv, config, checkout, cwd=data)
    records = [json.loads(line) for line in open(out / "records.jsonl")]
    ckpt = sorted((out / "ckpt").glob("*.pth"))
    return records, (torch.load(ckpt[-1], weights_only=True)["model"] if ckpt else None)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_the_fused_run_is_bitwise_the_same_with_per_modality_evaluation_on(checkout, cremad, tmp_path, fusion):
    on, model_on = _train(checkout, cremad, tmp_path / "on", True, fusion)
    off, model_off = _train(checkout, cremad, tmp_path / "off", False, fusion)
    evals_on = [r for r in on if r["event"] == "eval"]
    evals_off = [r for r in off if r["event"] == "eval"]
    assert len(evals_on) == len(evals_off) == 2
    for a, b in zip(evals_on, evals_off):
        assert (a["top1"], a["mAP"]) == (b["top1"], b["mAP"])  # exactly: same floats
        assert a["top1_m1"] is not None and "top1_m1" not in b
    steps = lambda rs: [{k: v for k, v in r.items()} for r in rs if r["event"] == "step"]  # noqa: E731
    assert steps(on) == steps(off)  # every ratio, coefficient, r and loss of every step
    assert [r for r in on if r["event"] == "zeta"] == [r for r in off if r["event"] == "zeta"]
    if model_on is not None:
        assert model_on.keys() == model_off.keys()
        assert all(torch.equal(model_on[k], model_off[k]) for k in model_on)


# -- the fake fifth upstream (a spec alone): fast ------------------------------------------------

@pytest.fixture
def fake(tmp_path):
    from fake_upstream import write_fake_upstream

    return write_fake_upstream(tmp_path / "upstream")


def _fake_run(fake, out, per_modality, simam2=True):
    from fake_upstream import SPEC as FAKE

    config = RunConfig(simam2=simam2, zeta="learnable" if simam2 else "fixed", modulation="df" if simam2 else "none",
                       seed=0, record=out, per_modality=per_modality)
    out.parent.joinpath("work").mkdir(exist_ok=True)
    run_script(FAKE, ["--epochs", "3"], config, fake, cwd=out.parent / "work")
    return [json.loads(line) for line in open(out)]


@pytest.mark.parametrize("simam2", [True, False])
def test_fake_upstream_fused_records_are_bitwise_unchanged(fake, tmp_path, simam2):
    on = _fake_run(fake, tmp_path / "on.jsonl", True, simam2)
    off = _fake_run(fake, tmp_path / "off.jsonl", False, simam2)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time" and not k.startswith("acc_")  # noqa: E731
                         and k != "ablation_mean" and k != "config"} for r in rs]
    assert strip(on) == strip(off)
    evals = [r for r in on if r["event"] == "eval"]
    assert len(evals) == 3
    for e in evals:
        assert e["ablation_mean"] == "train"
        assert {"acc_m1", "acc_m2", "acc_head_m1", "acc_head_m2"} <= e.keys()
        assert all(0 <= e[k] <= 1 for k in ("acc_m1", "acc_m2", "acc_head_m1", "acc_head_m2"))
    # modality a carries most of the signal in the fake data (1.5 vs 0.5 class offsets)
    assert evals[-1]["acc_m1"] > evals[-1]["acc_m2"]
    assert not any("acc_m1" in r for r in off)


def test_the_head_runs_on_the_model_that_evaluates(tmp_path):
    """A script that tests a checkpoint it unpickles (AVGA's and PSP's test modes) evaluates a model
    that is not the run's: the per-modality head must run on that one."""
    from types import SimpleNamespace

    from torch import nn

    from simam2.adapters.machinery import RecordWriter, Spec
    from simam2.adapters.machinery.probe import RunProbe

    class Scale(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

    class OneSpec(Spec):
        name, metrics = "one", ("out",)

        def head(self, model, x1, x2):
            return model.k * (x1 + x2)

    run = SimpleNamespace(spec=OneSpec(), config=RunConfig(), recorder=RecordWriter(None), script=None,
                          add_cleanup=lambda fn: None, start_extra={})
    probe = RunProbe(run)
    built, loaded = Scale(1.0), Scale(10.0)
    probe.on_model(built)
    probe.set_eval_model(loaded)
    probe.on_eval_fusion_inputs(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [2.0]]))
    fields = probe.modality_metrics(lambda out: {"out": out[:, 0].tolist()})
    # evaluation-set means: x1 2, x2 1; modality 1 alone = 10 · (x1 + 1), modality 2 alone = 10 · (2 + x2)
    assert fields == {"out_m1": [20.0, 40.0], "out_m2": [20.0, 40.0], "ablation_mean": "eval"}
