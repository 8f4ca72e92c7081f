"""BalanceMM (GeWu-Lab/BalanceBenchmark): patches, synthetic CREMA-D, the module entry point, its logs.

The end-to-end runs of ``python -m balancemm`` take a minute or more each on two cores and are
marked ``slow``; the rest loads single upstream files, never the whole package (which imports
lightning, transformers and every trainer at load).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simam2.adapters.balancemm import synth
from simam2.adapters.balancemm.seam import FUSIONS, Overrides, read_training_log

from upstream_modules import load_module, pristine_module

pytestmark = pytest.mark.upstream
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkout(upstream_checkout):
    return upstream_checkout("balancemm")


# -- synthetic CREMA-D -----------------------------------------------------------------------------

def test_synthetic_cremad_is_read_by_the_upstream_loader(checkout, tmp_path):
    data = synth.write_cremad(tmp_path / "cremad", n_train=7, n_test=6, audio_shape=(20, 12), frame_size=16, frames=3)
    loader = load_module(checkout / "balancemm" / "datasets" / "cremad_dataset.py", "bmm_cremad_dataset")
    args = {"fps": synth.FPS, **synth.dataset_paths(data)}
    train = loader.CREMADDataset({**args, "mode": "train"})
    test = loader.CREMADDataset({**args, "mode": "test"})
    assert (len(train), len(test)) == (7, 6)
    # every class once in the six test clips, in CREMADDataset's class order
    assert sorted(test.label) == list(range(6))
    item = test[0]
    assert item["audio"].shape == (1, 20, 12)  # the (T, F) tensor, unsqueezed by the loader
    assert item["visual"].shape == (3, synth.FPS, 224, 224)
    # the class band carries the signal: its mean is ~audio_snr above the rest
    band = 12 // 6
    label = test.label[0]
    audio = item["audio"][0]
    inside = audio[:, label * band:(label + 1) * band].mean()
    outside = torch.cat([audio[:, :label * band], audio[:, (label + 1) * band:]], 1).mean()
    assert inside - outside > 0.5


def test_synthetic_cremad_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="at least fps"):
        synth.write_cremad(tmp_path, frames=1)
    with pytest.raises(ValueError, match="audio_shape"):
        synth.write_cremad(tmp_path, audio_shape=(10, 5))
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_dataset_paths_end_with_a_slash(tmp_path):
    # CREMADDataset concatenates audio_path + clip + '.pt' and visual_path + clip
    paths = synth.dataset_paths(tmp_path)
    assert paths["audio_path"].endswith("/audio/") and paths["visual_path"].endswith("/visual/")


# -- patches ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fusion_arch(checkout):
    return load_module(checkout / "balancemm" / "models" / "fusion_arch.py", "bmm_fusion_arch")


@pytest.mark.parametrize("name", ["SumFusion", "FiLM"])
def test_sum_and_film_modality_logits_add_up_to_the_fused_logits(fusion_arch, name):
    torch.manual_seed(0)
    module = getattr(fusion_arch, name)(output_dim=6)
    x, y = torch.randn(5, 512), torch.randn(5, 512)
    a, v = module.modality_logits(x, y)
    torch.testing.assert_close(a + v, module(x, y)[-1], rtol=0, atol=1e-5)


def test_film_modality_logits_are_the_shift_and_the_filmed_term(fusion_arch):
    torch.manual_seed(1)
    film = fusion_arch.FiLM(output_dim=6, x_film=True)
    x, y = torch.randn(3, 512), torch.randn(3, 512)
    gamma, beta = torch.split(film.fc(x), 512, 1)
    shift, filmed = film.modality_logits(x, y)
    torch.testing.assert_close(shift, beta @ film.fc_out.weight.T + film.fc_out.bias / 2)
    torch.testing.assert_close(filmed, (gamma * y) @ film.fc_out.weight.T + film.fc_out.bias / 2)


def test_the_pinned_fusions_cannot_take_the_dict_forward_passes(checkout, tmp_path):
    # the pin's BaseClassifierModel.forward calls fusion_module(encoder_result) with a dict
    pristine = pristine_module("balancemm", checkout, "balancemm/models/fusion_arch.py", tmp_path)
    features = {"audio": torch.randn(2, 512), "visual": torch.randn(2, 512)}
    for module in (pristine.SumFusion(output_dim=6), pristine.FiLM(output_dim=6), pristine.GatedFusion(output_dim=6)):
        with pytest.raises(TypeError):
            module(features)
    assert not hasattr(pristine.SumFusion, "modality_logits")


# -- the entry point's config seam and its log ----------------------------------------------------

def _config(device="cpu"):
    return {"out_dir": "/checkout/experiments/x", "Main_config": {"device": device},
            "dataset": {"name": "CREMAD", "fps": 2, "audio_path": "None", "visual_path": "None"},
            "trainer": {"base_para": {"max_epochs": 30}}, "train": {"parameter": {"total_epoch": 30}},
            "dataloader": {"eff_batch_size": 32, "num_workers": 32, "pin_memory": True},
            "model": {"fusion": "concat"}}


def test_overrides_set_the_resolved_config(tmp_path):
    config = Overrides(out_dir=tmp_path / "run", data=tmp_path / "data", epochs=2, batch_size=4, workers=0,
                       fusion="film").apply(_config())
    assert config["out_dir"] == str(tmp_path / "run")
    assert config["dataset"]["train_txt"] == str(tmp_path / "data" / "train.csv")
    assert config["dataset"]["audio_path"] == str(tmp_path / "data" / "audio") + "/"
    assert config["trainer"]["base_para"]["max_epochs"] == 2
    assert config["dataloader"] == {"eff_batch_size": 32, "batch_size": 4, "num_workers": 0, "pin_memory": False}
    assert config["model"]["fusion"] == "film"


def test_overrides_leave_unset_values_alone(tmp_path):
    config = Overrides(out_dir=tmp_path).apply(_config(device="0"))
    assert config["trainer"]["base_para"]["max_epochs"] == 30
    assert config["dataloader"] == {"eff_batch_size": 32, "num_workers": 32, "pin_memory": True}
    assert config["dataset"]["audio_path"] == "None"


@pytest.mark.parametrize("kwargs, message", [({"fusion": "mean"}, "fusion must be one of"),
                                              ({"epochs": 0}, "epochs must be at least 1"),
                                              ({"workers": -1}, "workers must be non-negative")])
def test_overrides_reject_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Overrides(out_dir=tmp_path, **kwargs)


LOG = """\
2026-11-26 18:52:39,828 - balancemm.train - INFO - epoch: 0  
2026-11-26 18:52:39,856 - balancemm.train - INFO - train_acc: 0.16666666666666666, train_f1: 0.15, , acc_audio: 0.08333333333333333, acc_visual: 0.16666666666666666, f1_audio: 0.041666666666666664, f1_visual: 0.15
2026-11-26 18:52:41,855 - balancemm.train - INFO - valid_acc: 0.3333333333333333, valid_f1: 0.22222222222222224, valid_loss: 1.658739686012268, acc_audio: 0.5, acc_visual: 0.25, f1_audio: 0.1, f1_visual: 0.05
2026-11-26 18:53:05,341 - balancemm.train - INFO - defaultdict(<class 'float'>, {'audio': np.float64(0.08333333333333333), 'visual': np.float64(-0.25)})
2026-11-26 18:53:11,086 - balancemm.train - INFO - test_acc: 0.75, test_f1: 0.7, , acc_audio: 0.5, acc_visual: 0.25, f1_audio: 0.4, f1_visual: 0.2
"""


def test_read_training_log(tmp_path):
    path = tmp_path / "training.log"
    path.write_text(LOG)
    log = read_training_log(path)
    assert log["train"] == [{"train_acc": 0.16666666666666666, "train_f1": 0.15, "acc_audio": 0.08333333333333333,
                             "acc_visual": 0.16666666666666666, "f1_audio": 0.041666666666666664, "f1_visual": 0.15}]
    assert log["valid"][0]["valid_loss"] == 1.658739686012268
    assert log["shapley"] == {"audio": 0.08333333333333333, "visual": -0.25}
    assert log["test"] == {"test_acc": 0.75, "test_f1": 0.7, "acc_audio": 0.5, "acc_visual": 0.25,
                           "f1_audio": 0.4, "f1_visual": 0.2}


# -- SimAM² in BalanceMM's fusion modules ----------------------------------------------------------

from simam2.adapters.balancemm.layers import ogm_groups, simam2_fusion_classes, x1_modality  # noqa: E402
from simam2.core import ConcatFusion as CoreConcat  # noqa: E402
from simam2.core import FiLMFusion as CoreFiLM  # noqa: E402
from simam2.core import Summation  # noqa: E402


@pytest.mark.parametrize("name, args", [("ConcatFusion_N", (1024, 6)), ("SumFusion", (512, 6)), ("FiLM", (512, 512, 6))])
def test_simam2_fusions_keep_the_upstreams_layers_and_initialisation(fusion_arch, name, args):
    torch.manual_seed(3)
    vanilla = getattr(fusion_arch, name)(*args)
    torch.manual_seed(3)
    ours = simam2_fusion_classes(fusion_arch)[name](*args)
    theirs = dict(vanilla.named_parameters())
    for key, value in theirs.items():
        torch.testing.assert_close(dict(ours.named_parameters())[key], value, rtol=0, atol=0)
    assert isinstance(ours, getattr(fusion_arch, name))


@pytest.mark.parametrize("zeta", ["fixed", "learnable"])
def test_simam2_fusions_are_the_core_forms_on_the_upstream_terms(fusion_arch, zeta):
    torch.manual_seed(4)
    classes = simam2_fusion_classes(fusion_arch, zeta_mode=zeta)
    a, v = torch.randn(5, 512), torch.randn(5, 512)
    concat = classes["ConcatFusion_N"](1024, 6)
    assert isinstance(concat.simam2, CoreConcat)
    torch.testing.assert_close(concat({"audio": a, "visual": v}), concat.fc_out(concat.simam2(a, v)))
    # fixed ζ: the superposition is half the padded concatenation, then the attention
    summ = classes["SumFusion"](512, 6)
    assert isinstance(summ.simam2, Summation)
    torch.testing.assert_close(summ(a, v)[-1], summ.simam2(summ.fc_x(a), summ.fc_y(v)))
    film = classes["FiLM"](512, 512, 6)
    gamma, beta = torch.split(film.fc(a), 512, 1)
    torch.testing.assert_close(film(a, v)[-1], film.fc_out(film.simam2(gamma, v, beta)))
    assert isinstance(film.simam2, CoreFiLM)


def test_simam2_fusion_refuses_a_given_zeta(fusion_arch):
    with pytest.raises(ValueError, match="no gate of its own"):
        simam2_fusion_classes(fusion_arch, zeta_mode="given")


def test_df_groups_are_the_ogm_trainers_and_film_weighs_the_filmed_stream(fusion_arch):
    class Model(torch.nn.Module):
        def __init__(self, fusion):
            super().__init__()
            self.modality_encoder = torch.nn.ModuleDict({"audio": torch.nn.Conv2d(1, 2, 3), "visual": torch.nn.Conv2d(3, 2, 3)})
            self.fusion_module = fusion

    classes = simam2_fusion_classes(fusion_arch, zeta_mode="learnable")
    model = Model(classes["FiLM"](512, 512, 6))
    groups = ogm_groups(model, ["audio", "visual"])
    # conv weights only: OGMTrainer skips 1-D (bias) gradients
    assert [p.shape for p in groups["audio"]] == [(2, 1, 3, 3)]
    assert [p.shape for p in groups["visual"]] == [(2, 3, 3, 3)]
    assert x1_modality(model.fusion_module, ["audio", "visual"]) == "visual"
    assert x1_modality(classes["SumFusion"](512, 6), ["audio", "visual"]) == "audio"


# -- the spec ---------------------------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from simam2.adapters.balancemm import table as bmm_table  # noqa: E402
from simam2.adapters.balancemm.layers import closure_first  # noqa: E402
from simam2.adapters.balancemm.spec import SPEC  # noqa: E402
from simam2.adapters.machinery import AdapterError, RunConfig  # noqa: E402


def _run(**config):
    # no --data and no readable dataset_config.yaml: the data check has nothing to say
    return SimpleNamespace(config=RunConfig(**config), options={}, checkout=Path("/nonexistent"))


@pytest.mark.parametrize("config, argv, message", [
    ({"simam2": True, "zeta": "learnable", "modulation": "df"}, ["--trainer", "OGMTrainer"], "runs with --trainer OGMTrainerDF"),
    ({}, ["--trainer", "OGMTrainerDF"], "modulates only with --modulation df"),
    ({"modulation": "ogm-ge"}, ["--trainer", "AGMTrainer"], "their own --trainer OGMTrainer"),
    ({"modulation": "ogm-ge", "ge": False}, ["--trainer", "OGMTrainer"], "KeyError at the pin"),
    ({"modulation": "ogm"}, ["--trainer", "OGMTrainer"], "KeyError at the pin"),
])
def test_validate_refuses_a_trainer_that_contradicts_the_modulation(tmp_path, config, argv, message):
    with pytest.raises(AdapterError, match=message):
        SPEC.validate(_run(**config), argv, tmp_path)


def test_validate_names_a_missing_dataset(checkout, tmp_path):
    pytest.importorskip("yaml", reason="PyYAML comes with the balancemm extra (pip install -e '.[balancemm]')")
    run = SimpleNamespace(config=RunConfig(), options={"data": tmp_path / "none"}, checkout=checkout)
    with pytest.raises(AdapterError, match="not a CREMA-D in BalanceMM's layout: no .*train.csv"):
        SPEC.validate(run, [], tmp_path)
    run.options = {}
    with pytest.raises(AdapterError, match="give --data DIR"):
        SPEC.validate(run, [], tmp_path)


def test_upstream_argv_chooses_the_trainer_and_later_arguments_win():
    df = RunConfig(simam2=True, zeta="learnable", modulation="df", alpha=0.7)
    argv = SPEC.upstream_argv(df)
    assert argv[argv.index("--trainer") + 1] == "OGMTrainerDF" and argv[argv.index("--alpha") + 1] == "0.7"
    assert "--alpha" not in SPEC.upstream_argv(RunConfig())
    assert SPEC.upstream_argv(RunConfig(modulation="ogm-ge"))[-3] == "OGMTrainer"


def test_simam2_run_options_reach_the_run_explicitly_and_the_spec_keeps_no_state(checkout, tmp_path):
    from simam2.adapters.run import prepare_run

    before = dict(vars(SPEC))
    run = prepare_run("balancemm", ["--checkout", str(checkout), "--workdir", str(tmp_path / "w"), "--data",
                                    str(tmp_path / "d"), "--epochs", "2", "--batch-size", "4"])
    assert run.options == {"data": tmp_path / "d", "epochs": 2, "batch_size": 4, "workers": 0, "fusion": None,
                           "keep_checkpoint": False}
    assert vars(SPEC) == before  # nothing of this run was left on the module-level spec


def test_closure_first_steps_like_the_optimizer_and_hooks_see_this_steps_gradients():
    """The trainers pass forward and backward as step's closure: evaluated first, the step pre-hooks
    (modulator, recorder) see the current step's gradients, and the update is bitwise the same."""
    def make():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(3))
        return w, torch.optim.AdamW([w], lr=0.1)

    x = torch.tensor([1.0, 2.0, 3.0])
    w_ref, opt_ref = make()
    for _ in range(3):
        opt_ref.step(lambda: ((w_ref * x).sum() ** 2).backward())
        opt_ref.zero_grad()
    w, _ = make()
    opt = closure_first(lambda params, *a: torch.optim.AdamW(params, lr=0.1))([w])
    seen = []
    handle = opt.register_step_pre_hook(lambda o, a, k: seen.append(None if w.grad is None else w.grad.clone()))
    for _ in range(3):
        expected = 2 * (w.detach() * x).sum() * x  # d/dw (w·x)², at this step's w
        opt.step(lambda: ((w * x).sum() ** 2).backward())
        torch.testing.assert_close(seen[-1], expected)
        opt.zero_grad()
    handle.remove()
    assert torch.equal(w.detach(), w_ref.detach())


RECORDS = [
    {"event": "start", "modalities": ["visual", "audio"]},
    {"event": "eval", "split": "val", "acc": 0.1, "f1": 0.1},
    {"event": "eval", "split": "test", "acc": 0.5, "f1": 0.4, "acc_head_m1": 0.25, "f1_head_m1": 0.2,
     "acc_head_m2": 0.75, "f1_head_m2": 0.7, "shapley_m1": -0.125, "shapley_m2": 0.5},
]


def test_table_reads_the_final_test_evaluation(tmp_path):
    from simam2.adapters.machinery.grid import pick_evaluation

    t = bmm_table.table(tmp_path)
    picked = pick_evaluation(RECORDS, t.split, t.pick, "acc", True)
    assert {k: picked[k] for k in ("acc", "f1", "acc_head_m1", "f1_head_m1", "acc_head_m2", "f1_head_m2")} == {
        "acc": 0.5, "f1": 0.4, "acc_head_m1": 0.25, "f1_head_m1": 0.2, "acc_head_m2": 0.75, "f1_head_m2": 0.7}
    assert pick_evaluation(RECORDS[:2], t.split, t.pick, "acc", True) is None  # no test evaluation: no number


class BalanceCells:
    """The BalanceMM table's ``run_cell`` replaced: writes each cell-seed's records as BalanceMM's
    would (two val evaluations, then the final test one) with made-up numbers."""

    TEST = {("Baseline", 0): (0.5, 0.75), ("Baseline", 1): (0.7, 0.25), ("+SimAM²", 0): (0.6, 0.5),
            ("+SimAM²", 1): (0.8, 0.5)}

    def __call__(self, cs):
        from simam2.adapters.machinery.records import RecordWriter

        acc, audio = self.TEST[(cs.row.label, cs.seed)]
        w = RecordWriter(cs.records)
        w.start(upstream="balancemm", script="balancemm", modalities=["visual", "audio"], metrics=["acc", "f1"],
                config={"seed": cs.seed})
        w.write("eval", epoch=0, split="val", acc=0.1, f1=0.1)
        w.write("eval", epoch=1, split="test", acc=acc, f1=acc - 0.1, acc_head_m1=0.25, acc_head_m2=audio,
                f1_head_m1=0.2, f1_head_m2=audio - 0.05)
        w.end()


def test_table_is_one_engine_table_mean_std_and_difference_over_seeds(tmp_path):
    from simam2.adapters.machinery import grid

    t = bmm_table.table(tmp_path / "data", rows=("+SimAM²",))
    assert [r.label for r in t.rows] == ["Baseline", "+SimAM²"]  # the Baseline always: differences pair with it
    t.run_cell = BalanceCells()
    result = grid.run_table(t, tmp_path / "out", seeds=2, progress=False, say=lambda s: None)
    base, simam2 = result.cell("Baseline", "cremad"), result.cell("+SimAM²", "cremad")
    assert base.summary["acc"].mean == pytest.approx(0.6) and base.summary["acc"].std == pytest.approx(0.1414, abs=1e-4)
    assert base.summary["acc_head_m2"].mean == pytest.approx(0.5)  # audio head 0.75, 0.25
    assert simam2.diff.mean == pytest.approx(0.1)  # +0.1 at both seeds: constant, no p (stats.py)
    text = (tmp_path / "out" / "table.txt").read_text()
    assert "60.0 ± 14.1" in text and "Not run: Greedy" in text
    assert (tmp_path / "out" / "table.csv").is_file() and (tmp_path / "out" / "table.md").is_file()
    again = grid.run_table(t, tmp_path / "out", seeds=2, progress=False, say=lambda s: None)  # resumes: nothing reruns
    assert again.cell("+SimAM²", "cremad").summary["acc"].mean == pytest.approx(0.7)


def test_table_refuses_an_unknown_row(tmp_path):
    with pytest.raises(ValueError, match="unknown rows"):
        bmm_table.table(tmp_path, rows=("Baseline", "Nope"))


def test_cli_run_balancemm_needs_a_workdir(capsys):
    from simam2.adapters import cli

    assert cli.main(["run", "balancemm", "--", "--trainer", "baselineTrainer"]) == 2
    assert "needs --workdir" in capsys.readouterr().err


# -- end to end through python -m balancemm (slow) -------------------------------------------------

def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _simam2_run(workdir, data, *options, argv=("--trainer", "baselineTrainer"), **kwargs):
    """`simam2 run balancemm` in a subprocess (the installed console script's module)."""
    cmd = [sys.executable, "-m", "simam2.adapters.cli", "run", "balancemm", "--workdir", str(workdir),
           "--data", str(data), "--epochs", str(kwargs.get("epochs", 1)), "--batch-size", "4", *options, "--", *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_training_log(Path(workdir) / "training.log")


@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
    return synth.write_cremad(tmp_path_factory.mktemp("bmm") / "cremad", n_train=8, n_test=6)


def _own_configs(copy: Path, data: Path) -> None:
    """The upstream's own way to point a run at data and size it: edit its YAML files."""
    import yaml

    def edit(name, fn):
        path = copy / "configs" / name
        settings = yaml.safe_load(path.read_text())
        fn(settings)
        path.write_text(yaml.safe_dump(settings, sort_keys=False))

    edit("dataset_config.yaml", lambda s: s["dataset"]["CREMAD"].update(synth.dataset_paths(data)))
    edit("trainer_config.yaml", lambda s: s["trainer_para"]["base"].update(max_epochs=1))
    edit("global_config.yaml", lambda s: s["dataloader"].update(eff_batch_size=4, num_workers=0, pin_memory=False))


ARGV = ("--trainer", "OGMTrainer", "--dataset", "CREMAD", "--model", "BaseClassifier", "--device", "cpu", "--alpha", "0.5")


@pytest.mark.slow
def test_adapter_off_reproduces_the_upstreams_own_run_bitwise(checkout, cremad, tmp_path):
    """The same run two ways: `python -m balancemm` in a copy of the checkout whose YAML files were
    edited (the upstream's own mechanism), and `simam2 run balancemm` (SimAM² off, records on) on
    the cache with the same settings through the config seam: every logged number equal."""
    import shutil

    copy = tmp_path / "own"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git", "experiments"))
    _own_configs(copy, cremad)
    proc = subprocess.run([sys.executable, "-m", "balancemm", *ARGV], cwd=copy, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (own_log,) = (copy / "experiments").rglob("training.log")
    own = read_training_log(own_log)
    ours = _simam2_run(tmp_path / "ours", cremad, "--record", str(tmp_path / "r.jsonl"), argv=ARGV)
    assert own["test"] and own["shapley"] and len(own["valid"]) == 1
    assert ours == own  # every float, parsed from the full repr the upstream logs


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["sum", "film", "gated"])
def test_fusions_the_pin_cannot_run_train_validate_and_test(checkout, cremad, tmp_path, fusion):
    log = _simam2_run(tmp_path / fusion, cremad, "--fusion", fusion)
    assert set(log["test"]) == {"test_acc", "test_f1", "acc_audio", "acc_visual", "f1_audio", "f1_visual"}
    assert set(log["shapley"]) == {"audio", "visual"}
    assert not (tmp_path / fusion / "checkpoints").exists()  # 257 MB, removed after the test used it


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_simam2_and_the_df_trainer_through_python_m_balancemm(checkout, cremad, tmp_path, fusion):
    from simam2.adapters.machinery import read_records

    record = tmp_path / "df.jsonl"
    _simam2_run(tmp_path / "df", cremad, "--simam2", "--zeta", "learnable", "--modulation", "df", "--alpha", "0.5",
                "--modulation-start", "1", "--modulation-end", "1", "--seed", "0", "--record", str(record),
                "--fusion", fusion, argv=(), epochs=2)
    records = read_records(record)
    start = records[0]
    assert start["modalities"] == (["visual", "audio"] if fusion == "film" else ["audio", "visual"])
    steps = [r for r in records if r["event"] == "step"]
    # 8 clips, batch 4: two steps per epoch; the window is epoch 1 only
    assert [(s["epoch"], s["k1"] is not None) for s in steps] == [(0, False), (0, False), (1, True), (1, True)]
    for s in steps:
        assert s["loss"] > 0 and s["rho_df"] > 0 and 0 < s["zeta_mean"] < 1
    for s in steps[2:]:
        k = sorted([s["k1"], s["k2"]])
        assert k[1] == 1.0 and 0 < k[0] < 1  # OGM-GE's rule on Eq. 11's ρ: the stronger modality slowed
        assert (s["k1"] < 1) == (s["rho_df"] > 1)
    evals = [r for r in records if r["event"] == "eval"]
    assert [e["split"] for e in evals] == ["val", "val", "test"]
    assert {"acc", "f1", "acc_head_m1", "f1_head_m2", "shapley_m1", "shapley_m2"} <= set(evals[-1])
    assert not any("acc_m1" in e for e in evals)  # no mean ablation, and the records say why:
    assert [r["why"] for r in records if r["event"] == "note" and r["what"] == "per_modality_skipped"] == [
        "BalanceMM's val_loop scores the whole evaluation set inside the upstream and returns only its accuracy "
        "and macro-F1, so the outputs and labels that a metric of each modality alone (mean ablation) would be "
        "scored from never reach the adapter; its own per-modality heads are recorded instead (acc_head_m1/_m2, "
        "f1_head_m1/_m2)"]
    assert records[-1]["event"] == "end" and records[-1]["status"] == "completed"


@pytest.mark.slow
def test_table_runs_a_baseline_and_the_df_row(checkout, tmp_path):
    result = bmm_table.run_result(tmp_path / "table", epochs=1, seeds=1, n_train=8, n_test=8, bar=False,
                                  rows=("Baseline", "+Decoupling-Free +SimAM²"), progress=lambda _: None)
    assert not result.failed
    for label in ("Baseline", "+Decoupling-Free +SimAM²"):  # every cell has its numbers
        cell = result.cell(label, "cremad")
        assert cell.summary["acc"].n == 1 and cell.summary["f1"].n == 1 and cell.summary["acc_head_m1"].n == 1
