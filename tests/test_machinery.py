"""The shared machinery on a fake fifth upstream declared by a spec alone: install, run, restore,
record, modulate; and the record layer, the run options, the import graph."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simam2.adapters import AdapterError, ConfigError, Replacement, RunConfig, current_context, installed, run_script
from simam2.adapters.machinery import RecordsError, RecordWriter, Spec, read_records, runs
from simam2.adapters.machinery.records import is_complete
from simam2.core import ogm_coefficients

from fake_upstream import SPEC, write_fake_upstream

ADAPTERS_DIR = Path(__file__).resolve().parents[1] / "adapters"


@pytest.fixture
def fake(tmp_path):
    return write_fake_upstream(tmp_path / "upstream")


def _run(fake, tmp_path, config, argv=("--epochs", "2")):
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ctx = run_script(SPEC, list(argv), config, fake, cwd=tmp_path)
    return ctx, printed.getvalue()


# -- install / uninstall -------------------------------------------------------------------------

def test_install_replaces_and_uninstall_restores(fake):
    with installed(SPEC, RunConfig(), fake) as ctx:
        import models.net

        replaced = models.net.Net
        assert replaced.__name__ == "RecordedNet" and models.net.SumFusion.__name__ == "Fusion"
        assert current_context() is ctx
        with installed(SPEC, RunConfig(), fake) as again:  # the same config again: the same run
            assert again is ctx and models.net.Net is replaced
        with pytest.raises(AdapterError, match="another configuration"):
            with installed(SPEC, RunConfig(seed=1), fake):
                pass
        net = models.net
    assert net.Net.__name__ == "Net" and net.SumFusion.__name__ == "SumFusion"  # restored
    assert "models" not in sys.modules and str(fake) not in sys.path
    assert current_context() is None


def test_same_named_modules_elsewhere_are_set_aside_and_restored(fake):
    sentinel = type(sys)("models")
    sys.modules["models"] = sentinel
    try:
        with installed(SPEC, RunConfig(), fake):
            import models

            assert models is not sentinel
        assert sys.modules["models"] is sentinel
    finally:
        sys.modules.pop("models", None)


def test_a_failing_replacement_restores_what_was_done(fake):
    class Broken(type(SPEC)):
        def replacements(self, run):
            return super().replacements(run) + [Replacement("models.nowhere", "x", 1)]

    with pytest.raises(AdapterError, match="models.nowhere"):
        with installed(Broken(), RunConfig(), fake):
            pass
    sys.path.insert(0, str(fake))
    try:
        import models.net

        assert models.net.Net.__name__ == "Net"
    finally:
        sys.path.remove(str(fake))
        for k in [k for k in sys.modules if k.split(".")[0] == "models"]:
            del sys.modules[k]


def test_a_checkout_of_another_upstream_is_one_line(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "main.py").write_text("print('other')\n")
    with pytest.raises(AdapterError, match="is not a fake checkout"):
        with installed(SPEC, RunConfig(), other):
            pass


def test_a_namespace_package_after_a_same_named_module_keeps_inspect_working(tmp_path):
    """One upstream's models.py seen by inspect, then another's namespace package ``models``: Python
    3.11's inspect.getmodule raised TypeError on the stale name→file entry (librosa calls it)."""
    import inspect

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    (first / "models.py").write_text("X = 1\n")
    (second / "models").mkdir(parents=True)
    (second / "models" / "sub.py").write_text("Y = 1\n")

    class Plain(Spec):
        name = "plain"

    code = compile("1", str(tmp_path / "elsewhere.py"), "exec")
    with installed(Plain(), RunConfig(), first):
        import models  # noqa: F401

        inspect.getmodule(code, code.co_filename)  # records models -> first/models.py
    with installed(Plain(), RunConfig(), second):
        import models.sub  # noqa: F401

        inspect.getmodule(code, code.co_filename)


# -- the fake fifth upstream, end to end, from its spec alone ----------------------------------------

def test_adapter_off_prints_what_the_upstream_prints(fake, tmp_path):
    plain = subprocess.run([sys.executable, "main.py", "--epochs", "2"], cwd=fake, capture_output=True, text=True,
                           check=True).stdout
    ctx, printed = _run(fake, tmp_path, RunConfig(record=tmp_path / "off.jsonl"))
    assert printed == plain  # installed, SimAM² off: the same losses and accuracies to the last digit
    records = read_records(tmp_path / "off.jsonl")
    assert [r["event"] for r in records].count("step") == 6 and records[-1]["status"] == "completed"
    assert all(r["rho_df"] is None and r["k1"] is None and r["rho_decoupled"] > 0 for r in records if r["event"] == "step")
    assert not list(fake.rglob("__pycache__"))  # the checkout is a shared cache: left clean


def test_simam2_and_decoupling_free_modulation_end_to_end(fake, tmp_path):
    record = tmp_path / "df.jsonl"
    config = RunConfig(simam2=True, zeta="learnable", modulation="df", ge=False, alpha=0.5, seed=0, record=record)
    ctx, printed = _run(fake, tmp_path, config, ["--epochs", "3"])
    assert printed.count("epoch") == 3
    model = ctx.models[0]
    assert model.fusion.simam2 is not None and float(model.fusion.simam2.var_max.max()) > 0
    records = read_records(record)
    start, end = records[0], records[-1]
    assert start["event"] == "start" and start["modalities"] == ["a", "b"] and start["config"]["modulation"] == "df"
    assert end == {**end, "event": "end", "status": "completed", "nonfinite": False, "steps": 9, "evaluations": 3}
    steps = [r for r in records if r["event"] == "step"]
    assert [(r["epoch"], r["step"]) for r in steps] == [(e, s) for e in range(3) for s in range(3)]
    for r in steps:  # OGM's rule (no GE noise) on Eq. 11's ratio, as applied at the step
        k1, k2 = ogm_coefficients(torch.tensor(r["rho_df"]), 0.5)
        assert (r["k1"], r["k2"]) == pytest.approx((k1.item(), k2.item()), rel=1e-5)
        assert r["zeta_mean"] == pytest.approx(r["rho_df"] / (1 + r["rho_df"]), rel=1e-5)
        assert 0 < r["r"] <= 1 and math.isfinite(r["loss"]) and r["rho_decoupled"] > 0
    assert len({r["rho_df"] for r in steps}) == 9  # a learnable, input-dependent ζ
    zetas = [r for r in records if r["event"] == "zeta"]
    assert [z["epoch"] for z in zetas] == [0, 1, 2] and all(sum(z["counts"]) == 16 * 3 for z in zetas)
    evals = [r for r in records if r["event"] == "eval"]
    printed_acc = [float(line.split()[-1]) for line in printed.splitlines()]
    assert [e["acc"] for e in evals] == pytest.approx(printed_acc, abs=1e-6)


def test_the_modulated_gradient_is_k_times_the_plain_one(fake):
    """One step by hand on the spec's model: each encoder's gradient is scaled by its k, the head's not."""
    config = RunConfig(simam2=True, zeta="learnable", modulation="df", ge=False, alpha=0.5, seed=0)
    with installed(SPEC, config, fake) as ctx:
        import models.net as net

        model = net.Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        model.train()
        a, b, y = torch.randn(8, 4), torch.randn(8, 6), torch.arange(8) % 3
        torch.nn.CrossEntropyLoss()(model(a, b)[2], y).backward()
        before = {n: p.grad.clone() for n, p in model.named_parameters()}
        sums = model.fusion.simam2.weight_sums
        k1, k2 = ogm_coefficients(sums[0] / sums[1], 0.5)
        opt.step()
        for n, p in model.named_parameters():
            k = k1 if n.startswith("enc_a") else k2 if n.startswith("enc_b") else 1.0
            torch.testing.assert_close(p.grad, before[n] * k, msg=n)
        assert ctx.probe.modulator.last["applied"]


def test_a_failing_script_ends_its_records_failed(fake, tmp_path):
    record = tmp_path / "fail.jsonl"
    with pytest.raises(AdapterError, match="exited with status 3"):
        run_script(SPEC, ["--fail"], RunConfig(record=record), fake, cwd=tmp_path)
    end = read_records(record)[-1]
    assert end["event"] == "end" and end["status"] == "failed" and "status 3" in end["error"]
    assert "models" not in sys.modules


def test_an_interrupted_run_ends_its_records_interrupted(fake, tmp_path):
    record = tmp_path / "int.jsonl"
    with pytest.raises(KeyboardInterrupt):
        with installed(SPEC, RunConfig(record=record), fake):
            raise KeyboardInterrupt
    assert read_records(record)[-1]["status"] == "interrupted"


def test_a_run_never_appends_to_earlier_records_silently(fake, tmp_path):
    record = tmp_path / "r.jsonl"
    _run(fake, tmp_path, RunConfig(record=record), ["--epochs", "1"])
    with pytest.raises(RecordsError, match="already holds records"):
        _run(fake, tmp_path, RunConfig(record=record), ["--epochs", "1"])
    _run(fake, tmp_path, RunConfig(record=record, append=True), ["--epochs", "1"])
    split = runs(read_records(record))
    assert len(split) == 2 and all(is_complete(run) for run in split)
    with pytest.raises(RecordsError, match="is a folder"):
        RecordWriter(tmp_path)


def test_running_inside_the_checkout_is_refused(fake):
    with pytest.raises(AdapterError, match="not inside the upstream checkout"):
        run_script(SPEC, [], RunConfig(), fake, cwd=fake / "models")


# -- the record layer ------------------------------------------------------------------------------

def test_records_are_plain_json_and_mark_nonfinite_metrics(tmp_path):
    w = RecordWriter(tmp_path / "r" / "records.jsonl")
    w.start(upstream="x", script="s.py", modalities=["a", "b"], metrics=["acc"])
    w.write("step", rho_df=torch.tensor(1.5), k=[1, 2], loss=float("nan"))
    assert not w.nonfinite  # a step value that does not exist is null, not a bad metric
    w.write("eval", acc=0.5, acc_m1=float("inf"))
    w.end()
    rows = read_records(tmp_path / "r" / "records.jsonl")
    assert rows[1] == {"event": "step", "rho_df": 1.5, "k": [1, 2], "loss": None}
    assert rows[2]["acc_m1"] is None and rows[-1]["nonfinite"] is True and rows[-1]["evaluations"] == 1


def test_a_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"event": "start"}\n{"event": "step", "lo')
    assert read_records(path) == [{"event": "start"}]
    assert not is_complete(read_records(path))


# -- run options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(simam2=True, modulation="df", zeta="fixed"), "needs a learnable"),
    (dict(simam2=False, modulation="df", zeta="learnable"), "add --simam2"),
    (dict(modulation="ogm_ge"), "must be one of"),
    (dict(zeta="learnable"), "needs --simam2|add --simam2"),
    (dict(alpha=-1.0), "--alpha must be a finite number >= 0"),
    (dict(alpha=float("nan")), "--alpha must be a finite number >= 0"),
    (dict(lam=-1e-3), "--lam"),
    (dict(s=-2.5), "--s"),
    (dict(modulation_start=5, modulation_end=2), "before --modulation-start"),
])
def test_run_config_rejects_what_cannot_work(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**kwargs)


def test_cli_options_come_from_run_config_fields():
    import argparse
    import dataclasses

    from simam2.adapters.machinery import add_run_options, config_from_args

    p = argparse.ArgumentParser()
    add_run_options(p)
    flags = {a.dest for a in p._actions} - {"help"}
    assert flags == {f.name for f in dataclasses.fields(RunConfig)}
    ns = p.parse_args(["--simam2", "--modulation", "df", "--no-ge", "--alpha", "0.3"])
    config = config_from_args(ns, default_zeta="given")  # an upstream whose own gate is ζ
    assert (config.zeta, config.ge, config.alpha) == ("given", False, 0.3)
    assert config_from_args(p.parse_args([]), default_zeta="given").zeta == "fixed"  # no SimAM², no ζ


@pytest.mark.parametrize("argv, modulation, ge, ratio, noise", [
    ([], "none", True, None, False),
    (["--modulation", "ogm-ge"], "ogm-ge", True, "decoupled", True),
    (["--modulation", "ogm-ge", "--no-ge"], "ogm-ge", False, "decoupled", False),
    (["--modulation", "ogm"], "ogm-ge", False, "decoupled", False),  # ogm is ogm-ge --no-ge, recorded so
    (["--modulation", "ogm", "--no-ge"], "ogm-ge", False, "decoupled", False),
    (["--simam2", "--zeta", "learnable", "--modulation", "df"], "df", True, "zeta", True),
    (["--simam2", "--zeta", "learnable", "--modulation", "df", "--no-ge"], "df", False, "zeta", False),
])
def test_each_modulation_spelling_is_one_modulation(argv, modulation, ge, ratio, noise):
    import argparse

    from simam2.adapters.machinery import Modulation, add_run_options, config_from_args

    p = argparse.ArgumentParser()
    add_run_options(p)
    config = config_from_args(p.parse_args(argv))
    assert (config.modulation, config.ge) == (modulation, ge)
    assert config.plain()["modulation"] == modulation  # what the records' start.config holds
    assert Modulation.of(config) == Modulation(ratio, noise)
    assert Modulation.named(Modulation.of(config).name, ge) == Modulation.of(config)


def test_zeta_choices_is_the_cores_zeta_modes_under_a_deprecated_name():
    from simam2.adapters.machinery import config
    from simam2.core.fusion import ZETA_MODES

    with pytest.warns(DeprecationWarning, match="ZETA_CHOICES is deprecated: use ZETA_MODES"):
        assert config.ZETA_CHOICES is ZETA_MODES


def test_a_spec_declaring_zeta_sources_gets_zeta_modes_and_a_warning():
    with pytest.warns(DeprecationWarning, match="Old.zeta_sources is deprecated: declare zeta_modes"):
        class Old(Spec):
            zeta_sources = ("fixed", "given")
    assert Old.zeta_modes == ("fixed", "given")


# -- the import graph --------------------------------------------------------------------------------

def _module_names() -> list[str]:
    names = []
    for path in sorted(ADAPTERS_DIR.rglob("*.py")):
        rel = path.relative_to(ADAPTERS_DIR).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        names.append(".".join(["simam2", "adapters", *parts]))
    return names


_IMPORT_EACH_FRESH = """
import os, sys, traceback
import numpy, scipy, torch  # third-party only: what these cost need not be paid per module
names = sys.argv[1:]
assert not any(m.startswith("simam2.adapters") for m in sys.modules)
for name in names:
    pid = os.fork()
    if pid == 0:  # the child imports one module of ours first, with nothing of ours imported before it
        try:
            __import__(name)
        except BaseException:
            print(name, traceback.format_exc().strip().splitlines()[-1])
            sys.stdout.flush()
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_every_adapters_module_imports_alone_in_a_fresh_interpreter():
    """An import circle or an import-order dependency fails here: each module is the first module of
    ``simam2.adapters`` its (forked, otherwise fresh) interpreter imports."""
    names = _module_names()
    assert "simam2.adapters.machinery.probe" in names and len(names) > 20
    done = subprocess.run([sys.executable, "-c", _IMPORT_EACH_FRESH, *names], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""  # each line printed is a module that failed, and why


# -- records under races and a full disk --------------------------------------------------------

def test_two_runs_started_together_onto_one_records_file_cannot_both_write(fake, tmp_path):
    """The first run holds the file (opened and locked when its writer is made, before it writes a
    line); the second, which passed the emptiness check too, is refused and writes nothing."""
    record = tmp_path / "same.jsonl"
    first = RecordWriter(record)  # a run that started a moment earlier: nothing written yet
    assert record.stat().st_size == 0
    with pytest.raises(RecordsError, match=r"is being written by another run right now"):
        _run(fake, tmp_path, RunConfig(record=record, seed=0), ["--epochs", "1"])
    with pytest.raises(RecordsError, match="being written by another run"):
        RecordWriter(record, append=True)  # appending waits its turn too: lines never interleave
    first.start(upstream="fake", script="train.py", modalities=["a", "b"])
    first.end()
    assert [r["event"] for r in read_records(record)] == ["start", "end"]
    with pytest.raises(RecordsError, match="already holds records"):  # checked under the lock
        RecordWriter(record)


def test_a_file_with_two_interleaved_runs_is_refused_by_the_reader(tmp_path):
    path = tmp_path / "same.jsonl"
    rows = [{"event": "start"}, {"event": "start"}, {"event": "step", "epoch": 0, "step": 0},
            {"event": "step", "epoch": 0, "step": 0}, {"event": "end", "status": "completed"},
            {"event": "end", "status": "completed"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=rf"^{path}: record 6 \(a 'end' record\) follows its run's end: two runs"):
        read_records(path)  # was: runs() = [[start], [start, step, step, end, end]], is_complete True
    ok = [{"event": "start"}, {"event": "step"}, {"event": "start"}, {"event": "end", "status": "completed"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in ok))  # a killed run, then an appended one
    assert len(runs(read_records(path))) == 2


def test_a_full_disk_leaves_whole_lines_and_one_error_line(fake, tmp_path, monkeypatch):
    """The disk fills in the middle of a line: the line is taken back, the error is one line, and
    nothing more is written (the end record would not fit either)."""
    from simam2.adapters.machinery import records as records_module

    record = tmp_path / "full.jsonl"
    real_write, budget = records_module.os.write, [700]

    def write(fd, data):
        if budget[0] <= 0:
            raise OSError(28, "No space left on device")
        n = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= n
        return n

    monkeypatch.setattr(records_module.os, "write", write)
    with pytest.raises(RecordsError) as caught:
        _run(fake, tmp_path, RunConfig(record=record, seed=0), ["--epochs", "2"])
    message = str(caught.value)
    assert message.startswith(f"cannot write records to {record}: No space left on device") and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    text = record.read_text()
    assert 0 < len(text) <= 700 and text.endswith("\n")  # was: cut mid-line
    assert [json.loads(line)["event"] for line in text.splitlines()][0] == "start"


def test_an_upstream_without_mean_ablation_says_why_once_in_its_records(fake, tmp_path):
    """BalanceMM's evaluation is scored inside the upstream: no acc_m1/acc_m2, and a note saying why
    (before: nothing said). Off with --no-per-modality, where nothing was asked for."""
    from simam2.adapters.balancemm.spec import SPEC as BALANCEMM

    class NoHead(type(SPEC)):
        head = Spec.head
        no_mean_ablation = BALANCEMM.no_mean_ablation

    record = tmp_path / "r.jsonl"
    run_script(NoHead(), ["--epochs", "2"], RunConfig(record=record), fake, cwd=tmp_path)
    records = read_records(record)
    notes = [r for r in records if r["event"] == "note"]
    assert notes == [{"event": "note", "what": "per_modality_skipped", "why": BALANCEMM.no_mean_ablation}]
    evals = [r for r in records if r["event"] == "eval"]
    assert len(evals) == 2 and records.index(notes[0]) < records.index(evals[0])
    assert not any("acc_m1" in e for e in evals)
    off = tmp_path / "off.jsonl"
    run_script(NoHead(), ["--epochs", "1"], RunConfig(record=off, per_modality=False), fake, cwd=tmp_path)
    assert not [r for r in read_records(off) if r["event"] == "note"]


def test_a_records_line_that_is_no_object_or_no_json_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"event": "start"}\n[1, 2]\n{"event": "end", "status": "completed"}\n')
    with pytest.raises(ValueError, match=rf"^{path} line 2: a JSON list, where a record is an object$"):
        read_records(path)  # was: [1, 2] returned, and is_complete() an AttributeError on it
    path.write_text('{"event": "start"}\nnot json\n{"event": "end", "status": "completed"}\n')
    with pytest.raises(ValueError, match=rf"^{path} line 2: not JSON \(Expecting value\)"):
        read_records(path)  # was: "Expecting value: line 1 column 1 (char 0)", naming no file
    path.write_text('{"event": "start"}\n{"event": "st')  # a torn last line is still dropped
    assert read_records(path) == [{"event": "start"}]


def test_a_records_file_removed_between_open_and_lock_is_opened_again(tmp_path, monkeypatch):
    """A run refused before it began removes the file it created; a second run that had opened that
    file already must not write into the removed one (its records would vanish)."""
    from simam2.adapters.machinery import records as records_module

    record = tmp_path / "r.jsonl"
    real_flock, calls = records_module.fcntl.flock, []

    def flock(fd, op):
        if not calls:  # the other run's refusal: the file goes away after this run opened it
            record.unlink()
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr(records_module.fcntl, "flock", flock)
    writer = RecordWriter(record)
    writer.start(upstream="fake", script="train.py", modalities=["a", "b"])
    writer.end()
    assert len(calls) == 2 and [r["event"] for r in read_records(record)] == ["start", "end"]  # was: no file


def test_a_full_disk_that_the_script_swallowed_still_fails_the_run(fake, tmp_path, monkeypatch, capsys):
    """A script that catches every exception goes on after the records' write error: the run still
    ends in one error line (its records stop where the disk filled), not in exit status 0."""
    import argparse

    from simam2.adapters.cli import PreparedRun, run_prepared
    from simam2.adapters.machinery import records as records_module

    real, written = records_module.RecordWriter._write_line, []

    def write_line(self, line):
        if len(written) >= 2:
            self.broken = "No space left on device"  # raised, and caught by the script
            return
        written.append(line)
        real(self, line)

    monkeypatch.setattr(records_module.RecordWriter, "_write_line", write_line)
    record = tmp_path / "r.jsonl"
    run = PreparedRun(SPEC, argparse.Namespace(), RunConfig(record=record), fake, ["--epochs", "2"], tmp_path,
                      SPEC.script)
    with pytest.raises(RecordsError, match=rf"^cannot write records to {record}: No space left on device; the run "
                                           "finished, but its records stop where the disk filled"):
        run_prepared(run)  # was: exit status 0
    assert len(read_records(record)) == 2
