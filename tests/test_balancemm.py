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

from simam2.adapters import balancemm_synth as synth
from simam2.adapters.balancemm_entry import FUSIONS, Overrides, read_training_log

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


# -- end to end through python -m balancemm (slow) -------------------------------------------------

RUN_ENTRY = """
import json, sys
from pathlib import Path
from simam2.adapters.balancemm_entry import Overrides, run_module
checkout, spec, argv = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
run_module(checkout, argv, Overrides(**spec))
"""
ARGV = ["--trainer", "OGMTrainer", "--dataset", "CREMAD", "--model", "BaseClassifier", "--device", "cpu",
        "--alpha", "0.5"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _entry(checkout, out_dir, data, argv=ARGV, **overrides):
    spec = {"out_dir": str(out_dir), "data": str(data), "epochs": 1, "batch_size": 4, "workers": 0, **overrides}
    proc = subprocess.run([sys.executable, "-c", RUN_ENTRY, str(checkout), json.dumps(spec), *argv],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_training_log(Path(out_dir) / "training.log")


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


@pytest.mark.slow
def test_adapter_off_reproduces_the_upstreams_own_run_bitwise(checkout, cremad, tmp_path):
    """The same run two ways: `python -m balancemm` in a copy of the checkout whose YAML files were
    edited (the upstream's own mechanism), and through run_module's config seam on the cache."""
    import shutil

    copy = tmp_path / "own"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git", "experiments"))
    _own_configs(copy, cremad)
    proc = subprocess.run([sys.executable, "-m", "balancemm", *ARGV], cwd=copy, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (own_log,) = (copy / "experiments").rglob("training.log")
    own = read_training_log(own_log)
    ours = _entry(checkout, tmp_path / "ours", cremad)
    assert own["test"] and own["shapley"] and len(own["valid"]) == 1
    assert ours == own  # every float, parsed from the full repr the upstream logs


@pytest.mark.slow
@pytest.mark.parametrize("fusion", [f for f in FUSIONS if f != "shared"])
def test_each_fusion_trains_validates_and_tests(checkout, cremad, tmp_path, fusion):
    log = _entry(checkout, tmp_path / fusion, cremad, fusion=fusion)
    assert set(log["test"]) == {"test_acc", "test_f1", "acc_audio", "acc_visual", "f1_audio", "f1_visual"}
    assert set(log["shapley"]) == {"audio", "visual"}
    assert not (tmp_path / fusion / "checkpoints").exists()  # 257 MB, removed after the test used it


# -- SimAM² in BalanceMM's fusion modules ----------------------------------------------------------

from simam2.adapters.balancemm_layers import ogm_groups, simam2_fusion_classes, x1_modality  # noqa: E402
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
    classes = simam2_fusion_classes(fusion_arch, zeta=zeta)
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
        simam2_fusion_classes(fusion_arch, zeta="given")


def test_df_groups_are_the_ogm_trainers_and_film_weighs_the_filmed_stream(fusion_arch):
    class Model(torch.nn.Module):
        def __init__(self, fusion):
            super().__init__()
            self.modality_encoder = torch.nn.ModuleDict({"audio": torch.nn.Conv2d(1, 2, 3), "visual": torch.nn.Conv2d(3, 2, 3)})
            self.fusion_module = fusion

    classes = simam2_fusion_classes(fusion_arch, zeta="learnable")
    model = Model(classes["FiLM"](512, 512, 6))
    groups = ogm_groups(model, ["audio", "visual"])
    # conv weights only: OGMTrainer skips 1-D (bias) gradients
    assert [p.shape for p in groups["audio"]] == [(2, 1, 3, 3)]
    assert [p.shape for p in groups["visual"]] == [(2, 3, 3, 3)]
    assert x1_modality(model.fusion_module, ["audio", "visual"]) == "visual"
    assert x1_modality(classes["SumFusion"](512, 6), ["audio", "visual"]) == "audio"


RUN_DF = """
import functools, json, sys
from simam2.adapters.balancemm_entry import Overrides, run_module
from simam2.adapters.balancemm_layers import installed
checkout, spec, fusion = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
history = []
def context():
    cm = installed(simam2=True, zeta="learnable")
    class Keep:
        def __enter__(self):
            history.append(cm.__enter__()["trainer"])
        def __exit__(self, *exc):
            return cm.__exit__(*exc)
    return Keep()
argv = ["--trainer", "OGMTrainerDF", "--dataset", "CREMAD", "--model", "BaseClassifier", "--device", "cpu", "--alpha", "0.5"]
run_module(checkout, argv, Overrides(**spec), context=context)
print("HISTORY" + json.dumps(history[0].history))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_simam2_and_the_df_trainer_through_python_m_balancemm(checkout, cremad, tmp_path, fusion):
    spec = {"out_dir": str(tmp_path / "df"), "data": str(cremad), "epochs": 2, "batch_size": 4, "workers": 0,
            "fusion": fusion, "trainer": {"modulation_starts": 1, "modulation_ends": 1}}
    proc = subprocess.run([sys.executable, "-c", RUN_DF, str(checkout), json.dumps(spec), fusion],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads(proc.stdout.split("HISTORY", 1)[1])
    log = read_training_log(tmp_path / "df" / "training.log")
    assert len(log["valid"]) == 2 and log["test"] and set(log["shapley"]) == {"audio", "visual"}
    # two batches of 4 from 8 clips per epoch; the window is epoch 1 only
    assert [h["epoch"] for h in history] == [0, 0, 1, 1]
    assert [h["applied"] for h in history] == [False, False, True, True]
    for h in history[2:]:
        rho = h["rho_zeta"]
        assert rho > 0 and min(h["k1"], h["k2"]) < 1 <= max(h["k1"], h["k2"])  # OGM-GE's rule on Eq. 11's ρ
