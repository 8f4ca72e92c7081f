"""``simam2 run NAME --nproc-per-node N``: OGM-GE's own main.py under torchrun (2 gloo processes on
loopback), against one process on the same samples; a port in use; a rank that dies; the layer's
pieces (reversible patching, atomic checkpoints, the sharded loader) on their own.

The end-to-end runs go through the real command line; inside each rank, tests/ddp_capture (put on
PYTHONPATH, as sitecustomize) keeps the model's state and inputs at the first training step and its
state at exit, through torch's global module hooks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from simam2.adapters import RunConfig, cli, installed, run_script
from simam2.adapters.machinery import Replacement
from simam2.adapters.machinery.distributed import Rank, _loader_class, atomic_save
from simam2.adapters.machinery.install import patched
from simam2.adapters.machinery.records import read_records
from simam2.adapters.ogm_ge.spec import SPEC as OGM_GE

from cremad_sets import cremad_every_label

CAPTURE = Path(__file__).parent / "ddp_capture"
TIMEOUT = 240  # no process of a test outlives it


@pytest.fixture(scope="module")
def checkout(upstream_checkout):
    return upstream_checkout("ogm-ge")


@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
    """8 training clips; one test clip listed under all 6 labels (Top-1 = 1/6 for any model)."""
    return cremad_every_label(tmp_path_factory.mktemp("cremad"), n_train=8, n_test=1, frame_size=32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _main_py_args(data: Path, ckpt: Path, train: bool = True) -> list[str]:
    args = ["--dataset", "CREMAD", "--batch_size", "4", "--audio_path", str(data / "AudioWAV"),
            "--visual_path", str(data), "--ckpt_path", str(ckpt)]
    return args + (["--train", "--epochs", "1"] if train else [])


OPTIONS = ["--simam2", "--zeta", "learnable", "--modulation", "df", "--seed", "0"]


def _launch(checkout, data, out: Path, env: dict | None = None, interrupt: int | None = None):
    """``simam2 run ogm-ge --nproc-per-node 2`` with c10d rendezvous on loopback at a free port;
    (exit status, stderr, seconds). With ``interrupt``, that signal to simam2 once rank 0 has
    started its records. Every process is killed if the run outlives TIMEOUT."""
    capture = out / "capture"
    capture.mkdir(parents=True)
    cmd = [sys.executable, "-m", "simam2.adapters.cli", "run", "ogm-ge", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
           "--checkout", str(checkout), "--workdir", str(data), *OPTIONS, "--record", str(out / "run.jsonl"),
           "--", *_main_py_args(data, out / "ckpt")]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "SIMAM2_TEST_CAPTURE": str(capture),
                "PYTHONPATH": os.pathsep.join([str(CAPTURE), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        if interrupt is not None:
            records = out / "run.jsonl"
            while proc.poll() is None and not (records.exists() and records.stat().st_size > 0):
                if time.monotonic() - start > TIMEOUT:
                    raise subprocess.TimeoutExpired(cmd, TIMEOUT)
                time.sleep(0.2)
            proc.send_signal(interrupt)
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_groups([proc.pid, *_rank_pids(capture)])
        proc.communicate()
        pytest.fail(f"the distributed run outlived {TIMEOUT} s")
    # simam2 killed outright waits for nothing: give the orphans it leaves time to unwind and end
    _check_groups_gone([proc.pid, *_rank_pids(capture)], seconds=60 if interrupt == signal.SIGKILL else 10)
    return proc.returncode, err, time.monotonic() - start


def _rank_pids(capture: Path) -> list[int]:
    """The ranks' and torchrun's process ids (each leads a session of its own)."""
    return sorted({int(pid) for p in capture.glob("pid*") for pid in p.read_text().split()})


def _kill_groups(groups: list[int]) -> None:
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _check_groups_gone(groups: list[int], seconds: float = 10) -> None:
    """Every process of the job has ended: the launcher's group (simam2, torchrun) and each rank's
    (the rank and its loader workers); else they are killed and the test fails."""
    deadline = time.monotonic() + seconds
    alive = list(groups)
    while alive and time.monotonic() < deadline:
        still = []
        for g in alive:
            try:
                os.killpg(g, 0)
                still.append(g)
            except ProcessLookupError:
                pass
        alive = still
        if alive:
            time.sleep(0.1)
    if alive:
        _kill_groups(alive)
        pytest.fail(f"processes of the distributed run outlived it (process groups {alive})")


def _ghost_batchnorm(model: nn.Module, chunks: int) -> None:
    """BatchNorm over each rank's samples apart, as DDP (like nn.DataParallel's replicas) normalises them."""
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.forward = (lambda m: lambda x: torch.cat([
                nn.functional.batch_norm(c, None, None, m.weight, m.bias, True, 0.0, m.eps)
                for c in x.chunk(chunks)]))(bn)


def _union_loss(checkout, captured: list[dict], ghost: bool = True) -> torch.Tensor:
    """One process, the union of the ranks' first batches (rank 0's samples first), the ranks' shared
    initial state: main.py's fused cross-entropy, the mean over the union (BatchNorm per rank's
    samples with ``ghost``, else over the union)."""
    import argparse

    config = RunConfig(simam2=True, zeta="learnable", modulation="df", seed=0)
    with installed(OGM_GE, config, checkout):
        import models.basic_model as basic_model

        args = argparse.Namespace(dataset="CREMAD", fusion_method="sum", modulation="Normal", alpha=0.1,
                                  modulation_starts=0, modulation_ends=50, train=True)
        model = basic_model.AVClassifier(args)
        model.load_state_dict(captured[0]["initial"])
        model.train()
        if ghost:
            _ghost_batchnorm(model, len(captured))
        audio, visual = (torch.cat([c["inputs"][i] for c in captured]) for i in range(2))
        labels = torch.cat([c["labels"] for c in captured])
        with torch.no_grad():
            _, _, out = model(audio, visual)
        return nn.functional.cross_entropy(out, labels)


def test_two_ranks_train_as_one_process_on_the_union(checkout, cremad, tmp_path):
    rc, err, seconds = _launch(checkout, cremad, tmp_path)
    assert rc == 0, err[-3000:]
    print(f"2-rank run: {seconds:.1f} s")
    r0, r1 = (torch.load(tmp_path / "capture" / f"rank{i}.pt", weights_only=True) for i in range(2))

    # the sampler gave the ranks different samples; DDP and the core kept them identical
    assert not torch.equal(r0["labels"], r1["labels"]) or not torch.equal(r0["inputs"][0], r1["inputs"][0])
    for name in r0["initial"]:
        torch.testing.assert_close(r0["initial"][name], r1["initial"][name], rtol=0, atol=0, msg=name)
    assert set(r0["params"]) == set(r1["params"]) and any("simam2.gate" in n for n in r0["params"])
    for name, p in r0["params"].items():
        torch.testing.assert_close(p, r1["params"][name], rtol=0, atol=0, msg=name)
        if p.requires_grad:
            assert not torch.equal(p, r0["initial"][name]), f"{name} did not train"
    var_max = "fusion_module.simam2.var_max"
    assert torch.count_nonzero(r0["final"][var_max]) > 0
    torch.testing.assert_close(r0["final"][var_max], r1["final"][var_max], rtol=0, atol=0)

    # one records file, rank 0's, complete; its step loss is the mean over the union
    assert sorted(p.name for p in tmp_path.rglob("*.jsonl")) == ["run.jsonl"]
    records = read_records(tmp_path / "run.jsonl")
    start, end = records[0], records[-1]
    assert start["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert end["status"] == "completed" and end["steps"] == 2  # 8 clips, 4 per step over 2 ranks
    step0 = next(r for r in records if r["event"] == "step")
    assert r0["labels"].numel() == r1["labels"].numel() == 2
    union = _union_loss(checkout, [r0, r1])
    torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, union, rtol=1e-5, atol=1e-6)
    assert step0["loss"] == pytest.approx(union.item(), rel=1e-5)
    # the comparison is sharp: BatchNorm over the union instead of per rank gives another loss
    assert abs(_union_loss(checkout, [r0, r1], ghost=False) - union) > 1e-3

    # one checkpoint, whole, from rank 0; one process evaluating it gets the run's numbers
    ckpts = list((tmp_path / "ckpt").iterdir())
    assert len(ckpts) == 1 and ckpts[0].suffix == ".pth", [p.name for p in ckpts]
    saved = torch.load(ckpts[0], weights_only=False)
    for name, p in r0["params"].items():
        torch.testing.assert_close(saved["model"]["module." + name], p, rtol=0, atol=0)
    config = RunConfig(simam2=True, zeta="learnable", modulation="df", seed=0, record=tmp_path / "eval.jsonl")
    run_script(OGM_GE, OGM_GE.upstream_argv(config) + ["--fusion_method", "sum"]
               + _main_py_args(cremad, ckpts[0], train=False), config, checkout, cwd=cremad)
    ddp_eval = next(r for r in records if r["event"] == "eval")
    one_eval = next(r for r in read_records(tmp_path / "eval.jsonl") if r["event"] == "eval")
    assert ddp_eval["n"] == one_eval["n"] == 6
    assert (ddp_eval["top1"], ddp_eval["mAP"]) == pytest.approx((one_eval["top1"], one_eval["mAP"]), abs=1e-9)


@pytest.mark.slow  # a second 2-rank launch: about 45 s on a loaded 2-core machine
def test_a_rank_that_dies_ends_every_process_and_leaves_nothing_half_written(checkout, cremad, tmp_path):
    rc, err, seconds = _launch(checkout, cremad, tmp_path, env={"SIMAM2_TEST_FAIL_RANK": "1"})
    print(f"failing run: {seconds:.1f} s")
    assert rc == 2
    assert "rank 1 fails on purpose" in err  # the dying rank's own error shows
    assert err.strip().splitlines()[-1].startswith("simam2 run: error: the run under torchrun failed")
    records = read_records(tmp_path / "run.jsonl")
    assert records[-1]["event"] == "end" and records[-1]["status"] in ("failed", "interrupted"), records[-1]
    ckpt = tmp_path / "ckpt"
    assert not ckpt.exists() or not any(ckpt.iterdir())


@pytest.mark.slow  # a 2-rank launch: about 35 s on a loaded 2-core machine
def test_a_killed_run_stops_every_rank_and_the_records_end_interrupted(checkout, cremad, tmp_path):
    """SIGTERM to simam2 (a scheduler's kill; Ctrl-C goes the same way as SIGINT) reaches torchrun
    once and every rank as SIGTERM, which unwinds each rank's run."""
    rc, err, seconds = _launch(checkout, cremad, tmp_path, interrupt=signal.SIGTERM)
    print(f"killed run: {seconds:.1f} s")
    assert rc == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "simam2 run: interrupted (SIGTERM); every rank was stopped"
    records = read_records(tmp_path / "run.jsonl")
    assert records[0]["event"] == "start"
    assert records[-1]["event"] == "end" and records[-1]["status"] == "interrupted", records[-1]
    ckpt = tmp_path / "ckpt"
    assert not ckpt.exists() or all(p.suffix == ".pth" for p in ckpt.iterdir())  # no temporary file left


@pytest.mark.slow  # a 2-rank launch: about 35 s on a loaded 2-core machine
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_a_launcher_killed_outright_or_hung_up_takes_every_rank_with_it(checkout, cremad, tmp_path, how):
    """kill -9 of simam2 forwards nothing: torchrun's parent-death signal (SIGTERM) stops it, and it
    stops the ranks, which unwind. A hang-up is forwarded like SIGTERM. Before: torchrun and both
    ranks ran on (children of init) and wrote ``end: completed``; a hang-up orphaned them."""
    rc, err, seconds = _launch(checkout, cremad, tmp_path, interrupt=how)
    print(f"{how.name}: {seconds:.1f} s")
    if how == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:
        assert rc == 130, err[-3000:]
        assert err.strip().splitlines()[-1] == "simam2 run: interrupted (SIGHUP); every rank was stopped"
    records = read_records(tmp_path / "run.jsonl")  # _launch checked that every process has ended
    assert records[0]["event"] == "start"
    assert records[-1]["event"] == "end" and records[-1]["status"] == "interrupted", records[-1]


def test_a_port_in_use_is_refused_before_any_process_starts(checkout, cremad, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flags in (["--master-port", str(port)], ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]):
            rc = cli.main(["run", "ogm-ge", "--nproc-per-node", "2", *flags, "--checkout", str(checkout),
                           "--record", str(tmp_path / "r.jsonl"), "--", *_main_py_args(cremad, tmp_path / "ckpt")])
            err = capsys.readouterr().err
            assert rc == 2 and f"port {port} on 127.0.0.1 is in use" in err, err
            assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_records_file_that_holds_records_is_refused_before_any_process_starts(checkout, tmp_path, capsys):
    (tmp_path / "r.jsonl").write_text('{"event": "start"}\n')
    rc = cli.main(["run", "ogm-ge", "--nproc-per-node", "2", "--checkout", str(checkout),
                   "--record", str(tmp_path / "r.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds records" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", ["avga", "psp", "fop"])
def test_upstreams_without_dataparallel_and_dataloader_are_refused(name, capsys):
    rc = cli.main(["run", name, "--nproc-per-node", "2", "--checkout", str(Path.cwd())])
    err = capsys.readouterr().err
    assert rc == 2 and "does not run under torchrun" in err and "DataLoader" in err, err


def test_main_py_own_ogm_ge_is_refused_under_torchrun(checkout, capsys):
    rc = cli.main(["run", "ogm-ge", "--nproc-per-node", "2", "--modulation", "ogm-ge", "--checkout", str(checkout)])
    err = capsys.readouterr().err
    assert rc == 2 and "drift apart" in err, err


def test_launch_options_need_nproc_per_node(checkout, capsys):
    rc = cli.main(["run", "ogm-ge", "--nnodes", "2", "--checkout", str(checkout)])
    assert rc == 2 and "add --nproc-per-node" in capsys.readouterr().err


# -- the layer's pieces ----------------------------------------------------------------------------

def test_patched_restores_every_attribute_also_after_an_exception():
    original = torch.nn.DataParallel
    with pytest.raises(RuntimeError, match="inside"):
        with patched([Replacement("torch.nn", "DataParallel", int), Replacement("os.path", "no_such_name", 1)]):
            assert torch.nn.DataParallel is int and os.path.no_such_name == 1
            raise RuntimeError("inside")
    assert torch.nn.DataParallel is original and not hasattr(os.path, "no_such_name")


def test_atomic_save_leaves_no_file_when_the_save_fails(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    save = atomic_save(torch.save)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save({"w": torch.zeros(1000), "bad": Unpicklable()}, tmp_path / "model.pth")
    assert list(tmp_path.iterdir()) == []
    save({"w": torch.arange(3)}, str(tmp_path / "model.pth"))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    assert torch.equal(torch.load(tmp_path / "model.pth")["w"], torch.arange(3))


def test_the_shuffling_loader_is_sharded_and_reshuffled_each_epoch():
    data = list(range(12))
    loaders = [_loader_class(Rank(r, 3, r, "gloo"), seed=5)(data, batch_size=6, shuffle=True) for r in range(3)]
    epochs = [[[x for b in loader for x in b.tolist()] for _ in range(2)] for loader in loaders]
    for e in range(2):
        shares = [epochs[r][e] for r in range(3)]
        assert all(len(s) == 4 for s in shares) and sorted(sum(shares, [])) == data  # a partition of the epoch
    assert epochs[0][0] != epochs[0][1]  # set_epoch: each epoch its own permutation
    assert next(iter(loaders[0])).numel() == 2  # --batch_size is the step's batch over all ranks
    plain = _loader_class(Rank(1, 3, 1, "gloo"), seed=5)(data, batch_size=5)
    assert [b.tolist() for b in plain][0] == [0, 1, 2, 3, 4]  # evaluation: whole and in order on every rank
    with pytest.raises(Exception, match="does not split over 3 processes"):
        _loader_class(Rank(0, 3, 0, "gloo"), seed=5)(data, batch_size=4, shuffle=True)


def _launch_args(*argv):
    import argparse

    from simam2.adapters.launch_options import add_launch_options

    p = argparse.ArgumentParser()
    add_launch_options(p)
    return p.parse_args(list(argv))


def test_torchrun_options_pass_through_and_one_node_without_address_is_standalone():
    from simam2.adapters.launch_options import torchrun_argv

    assert torchrun_argv(_launch_args("--nproc-per-node", "2")) == ["--nproc-per-node", "2", "--standalone"]
    multi = ["--nproc-per-node", "4", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node0:29400",
             "--rdzv-id", "job"]
    assert torchrun_argv(_launch_args(*multi)) == multi  # several nodes: as given, no port check
    port = _free_port()
    static = ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    assert torchrun_argv(_launch_args(*static)) == static


def test_run_config_argv_gives_the_config_back():
    import argparse

    from simam2.adapters.machinery.config import add_run_options, config_from_args

    for config in (RunConfig(), RunConfig(simam2=True),
                   RunConfig(simam2=True, zeta="learnable", modulation="df", ge=False, alpha=0.8, seed=3,
                             record=Path("/tmp/x.jsonl"), per_modality=False),
                   RunConfig(simam2=True, u="vanilla", lam=0.01, s=1.5, modulation_start=2, modulation_end=9,
                             tensorboard=Path("/tmp/tb"), append=True, alpha=1 / 3)):
        p = argparse.ArgumentParser()
        add_run_options(p)
        assert config_from_args(p.parse_args(config.argv())) == config, config.argv()


@pytest.mark.slow  # two 2-rank launches: about 90 s on a loaded 2-core machine
def test_a_table_1_cell_runs_under_torchrun_and_its_folder_holds_that(checkout, cremad, tmp_path):
    from simam2.adapters.machinery import grid
    from simam2.adapters.ogm_ge import table as t1

    how = t1.recipe("quick", epochs=1, batch_size=4)
    decl = t1.table(cremad, 1, checkout, how=how, nproc_per_node=2)
    decl.rows, decl.columns = [decl.rows[0], decl.rows[-1]], [c for c in decl.columns if c.key == "sum"]
    result = grid.run_table(decl, tmp_path, seeds=1, progress=False, say=lambda s: None)
    assert not result.failed
    for row in decl.rows:
        records = read_records(tmp_path / f"sum__{row.key}" / "seed0" / "records.jsonl")
        assert records[0]["distributed"] == {"world_size": 2, "backend": "gloo"}
        assert records[-1]["status"] == "completed" and records[-1]["steps"] == 2  # 8 clips, 4 per step, 2 ranks
        assert result.cell(row.label, "sum").summary["top1"].mean == pytest.approx(1 / 6)  # one clip, 6 labels
    assert "2 ranks under torchrun" in result.table.note
    one = t1.table(cremad, 1, checkout, how=how)
    one.rows, one.columns = decl.rows, decl.columns
    cs = grid.cell_seeds(one, tmp_path, [0])[0]
    assert not grid.is_done(one, cs)  # a folder made under torchrun is not one process's: run anew
