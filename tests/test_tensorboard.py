"""The TensorBoard sink writes what the records say: read its event file back and compare."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from simam2.adapters.machinery import tensorboard as tb  # noqa: E402
from simam2.adapters.machinery.records import RecordWriter, read_records  # noqa: E402

from fake_records import write_run  # noqa: E402


def _events(logdir):
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_steps_evals_and_zeta_histograms_read_back(tmp_path):
    sink = tb.TensorBoardSink(tmp_path / "tb")
    w = write_run(None, epochs=2, steps=3, sinks=[sink])
    assert sink.closed  # the writer's end() closed the sink
    rows = w.read()
    acc = _events(tmp_path / "tb")
    steps = [r for r in rows if r["event"] == "step"]

    for name in tb.STEP_FIELDS:
        got = acc.Scalars(f"step/{name}")
        assert [e.step for e in got] == list(range(len(steps)))
        np.testing.assert_allclose([e.value for e in got], [r[name] for r in steps], rtol=1e-6)

    evals = [r for r in rows if r["event"] == "eval"]
    for key, tag in (("top1", "test/top1"), ("mAP_m1", "test/mAP_audio"), ("top1_m2", "test/top1_visual"),
                     ("top1_head_m1", "test/top1_head_audio"), ("mAP_head_m2", "test/mAP_head_visual")):
        got = acc.Scalars(tag)
        assert [e.step for e in got] == [r["epoch"] for r in evals]
        np.testing.assert_allclose([e.value for e in got], [r[key] for r in evals], rtol=1e-6)
    assert not any(t.startswith("test/n") or t.endswith("/epoch") for t in acc.Tags()["scalars"])

    hists = acc.Histograms("zeta")
    zetas = [r for r in rows if r["event"] == "zeta"]
    assert [h.step for h in hists] == [z["epoch"] for z in zetas]
    for h, z in zip(hists, zetas):
        assert h.histogram_value.bucket == z["counts"]
        np.testing.assert_allclose(h.histogram_value.bucket_limit, z["edges"][1:])
        assert h.histogram_value.num == sum(z["counts"])


def test_null_fields_write_nothing(tmp_path):
    sink = tb.TensorBoardSink(tmp_path / "tb")
    w = RecordWriter(None, sinks=[sink])
    w.start(upstream="x", script=None, modalities=["face", "voice"], metrics=["eer"])
    w.write("step", epoch=0, step=0, loss=0.7, rho_df=None, rho_decoupled=None, k1=None, k2=None, r=None,
            zeta_mean=None)
    w.write("step", epoch=0, step=1, loss=float("nan"), rho_df=1.5)
    w.write("eval", epoch=0, evaluation=0, split="val", n=4, eer=0.25, eer_m1=None, eer_m2=0.4)
    w.end()
    acc = _events(tmp_path / "tb")
    scalars = set(acc.Tags()["scalars"])
    assert scalars == {"step/loss", "step/rho_df", "val/eer", "val/eer_voice"}
    assert [(e.step, e.value) for e in acc.Scalars("step/loss")] == [(0, pytest.approx(0.7))]
    assert [(e.step, e.value) for e in acc.Scalars("step/rho_df")] == [(1, 1.5)]


def test_missing_tensorboard_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(tb.TensorBoardError, match="pip install tensorboard"):
        tb.TensorBoardSink(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_a_file_as_logdir_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(tb.TensorBoardError, match="is a file"):
        tb.TensorBoardSink(tmp_path / "f")


def test_a_run_with_tensorboard_writes_its_records_as_curves(tmp_path):
    from fake_upstream import SPEC, write_fake_upstream

    from simam2.adapters import RunConfig, run_script

    upstream = write_fake_upstream(tmp_path / "upstream")
    (tmp_path / "work").mkdir()
    config = RunConfig(simam2=True, zeta="learnable", modulation="df", seed=0, record=tmp_path / "r.jsonl",
                       tensorboard=tmp_path / "tb")
    run_script(SPEC, ["--epochs", "2"], config, upstream, cwd=tmp_path / "work")
    rows = read_records(tmp_path / "r.jsonl")
    acc = _events(tmp_path / "tb")
    steps = [r for r in rows if r["event"] == "step"]
    np.testing.assert_allclose([e.value for e in acc.Scalars("step/rho_df")], [r["rho_df"] for r in steps], rtol=1e-6)
    evals = [r for r in rows if r["event"] == "eval"]
    np.testing.assert_allclose([e.value for e in acc.Scalars("test/acc_a")], [r["acc_m1"] for r in evals], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("test/acc_head_b")], [r["acc_head_m2"] for r in evals],
                               rtol=1e-6)
    assert len(acc.Histograms("zeta")) == 2
