"""The shared adapter machinery on a tiny fake upstream: replace, run, restore."""

import sys
import textwrap

import pytest

from simam2.adapters import AdapterError, Replacement, RunConfig, current_context, installed, run_script
from simam2.adapters.base import Adapter


@pytest.fixture
def fake_upstream(tmp_path):
    root = tmp_path / "upstream"
    (root / "models").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "fusion.py").write_text("def fuse(a, b):\n    return a + b\n")
    (root / "models" / "net.py").write_text("from .fusion import fuse\n\ndef run(a, b):\n    return fuse(a, b)\n")
    (root / "main.py").write_text(textwrap.dedent("""
        import sys
        from models.net import run
        if sys.argv[1] == "fail":
            sys.exit(3)
        with open(sys.argv[1], "w") as f:
            f.write(str(run(2, 3)))
    """))
    return root


def times(a, b):
    return a * b


class FakeAdapter(Adapter):
    name = "fake"
    upstream = "fake"
    script = "main.py"

    def replacements(self, config):
        return [Replacement("models.net", "fuse", times), Replacement("models.net", "added", 1)]

    def on_start(self, ctx):
        ctx.recorder.write("start", simam2=ctx.config.simam2)


def test_install_replaces_and_uninstall_restores(fake_upstream):
    adapter = FakeAdapter()
    with installed(adapter, RunConfig(), fake_upstream) as ctx:
        import models.net

        assert models.net.fuse is times and models.net.run(2, 3) == 6
        assert current_context() is ctx
        with installed(adapter, RunConfig(), fake_upstream) as again:  # twice is harmless
            assert again is ctx and models.net.fuse is times
        assert models.net.fuse is times
        net = models.net
    assert net.run(2, 3) == 5 and not hasattr(net, "added")  # restored, and the added attribute gone
    assert "models" not in sys.modules and str(fake_upstream) not in sys.path
    assert current_context() is None


def test_run_script_runs_the_upstream_entry_point(fake_upstream, tmp_path):
    out = tmp_path / "out.txt"
    ctx = run_script(FakeAdapter(), [out.name], RunConfig(), fake_upstream, cwd=tmp_path)
    assert out.read_text() == "6"
    assert not list(fake_upstream.rglob("__pycache__"))  # the checkout is a shared cache: left clean
    assert ctx.recorder.read() == [{"event": "start", "simam2": False}]
    with pytest.raises(AdapterError, match="exited with status 3"):
        run_script(FakeAdapter(), ["fail"], RunConfig(), fake_upstream, cwd=tmp_path)
    assert "models" not in sys.modules


def test_same_named_modules_elsewhere_are_set_aside_and_restored(fake_upstream):
    sentinel = type(sys)("models")
    sys.modules["models"] = sentinel
    try:
        with installed(FakeAdapter(), RunConfig(), fake_upstream):
            import models

            assert models is not sentinel
        assert sys.modules["models"] is sentinel
    finally:
        sys.modules.pop("models", None)


def test_a_failing_replacement_restores_what_was_done(fake_upstream):
    class Broken(FakeAdapter):
        def replacements(self, config):
            return [Replacement("models.net", "fuse", times), Replacement("models.nowhere", "x", 1)]

    with pytest.raises(AdapterError, match="models.nowhere"):
        with installed(Broken(), RunConfig(), fake_upstream):
            pass
    sys.path.insert(0, str(fake_upstream))
    try:
        import models.net

        assert models.net.run(2, 3) == 5
    finally:
        sys.path.remove(str(fake_upstream))
        for k in [k for k in sys.modules if k.split(".")[0] == "models"]:
            del sys.modules[k]


def test_run_config_rejects_what_cannot_work():
    with pytest.raises(ValueError, match="learnable"):
        RunConfig(simam2=True, modulation="df", zeta="fixed")
    with pytest.raises(ValueError, match="simam2 on"):
        RunConfig(simam2=False, modulation="df", zeta="learnable")
    with pytest.raises(ValueError, match="modulation must be one of"):
        RunConfig(modulation="ogm_ge")


def test_recorder_writes_json_lines(tmp_path):
    import torch

    from simam2.adapters import Recorder

    rec = Recorder(tmp_path / "r" / "records.jsonl")
    rec.write("step", rho=torch.tensor(1.5), k=[1, 2], bad=float("nan"))
    rec.close()
    assert rec.read() == [{"event": "step", "rho": 1.5, "k": [1, 2], "bad": None}]


def test_a_namespace_package_after_a_same_named_module_keeps_inspect_working(tmp_path):
    """One upstream's models.py seen by inspect, then another's namespace package ``models``: Python
    3.11's inspect.getmodule raised TypeError on the stale name→file entry (librosa calls it)."""
    import inspect

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    (first / "models.py").write_text("X = 1\n")
    (second / "models").mkdir(parents=True)
    (second / "models" / "sub.py").write_text("Y = 1\n")

    class Plain(Adapter):
        name = "plain"

    code = compile("1", str(tmp_path / "elsewhere.py"), "exec")
    with installed(Plain(), RunConfig(), first):
        import models  # noqa: F401

        inspect.getmodule(code, code.co_filename)  # records models -> first/models.py
    with installed(Plain(), RunConfig(), second):
        import models.sub  # noqa: F401

        inspect.getmodule(code, code.co_filename)
