"""Where a table's cells run: worker processes and submitit's executors give the serial table, resume
across executors, report a failing or dying worker and rerun it next time."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from pathlib import Path

import pytest

from simam2.adapters.machinery import grid
from simam2.adapters.machinery.table import add_table_options, executor_from_options
from simam2.adapters.machinery.tables import Local, Slurm

from test_grid import COLS, ROWS, FakeCells, _table

# every worker is a fresh interpreter that imports torch (seconds each): the tests run a small table
SMALL = (ROWS[0], ROWS[2]), COLS[:1]


def _small(cells) -> grid.Table:
    return grid.Table("made-up records", *SMALL, cells, split="test", metric_labels={"top1": "Top-1"})


class CountingCells(FakeCells):
    """FakeCells that also log each call to ``<out>/calls.txt`` (a worker's counts do not come back)."""

    def __call__(self, cs: grid.CellSeed) -> None:
        with open(cs.folder.parent.parent / "calls.txt", "a", encoding="utf-8") as f:
            f.write(f"{cs.cell} {cs.seed}\n")
        with open(cs.folder.parent.parent / "pids.txt", "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")  # which process ran it (reused workers run several)
        super().__call__(cs)


class FailOnce(CountingCells):
    """The first time it runs anywhere (a marker file: workers share no state), the baseline cell-seed
    raises and the other one's worker dies without a word, as an OOM kill would."""

    def __init__(self, markers: Path):
        super().__init__()
        self.markers = markers

    def __call__(self, cs: grid.CellSeed) -> None:
        marker = self.markers / f"{cs.cell}.failed"
        if not marker.exists():
            marker.write_text("failed once", encoding="utf-8")
            if cs.row.label == "Baseline":
                raise RuntimeError("CUDA out of memory\nsecond line")
            os._exit(3)
        super().__call__(cs)


class SlowDecouplingFree(CountingCells):
    """The decoupling-free cell-seed takes two minutes; the baseline's is instant."""

    def __call__(self, cs: grid.CellSeed) -> None:
        if cs.row.label != "Baseline":
            time.sleep(120)
        super().__call__(cs)


def _calls(out: Path) -> list[str]:
    path = out / "calls.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _numbers(out: Path) -> dict:
    found = json.loads((out / "table.json").read_text(encoding="utf-8"))
    return {(c["row"], c["column"]): (c["summary"], c["diff_to_baseline"], c["ratio_r"]) for c in found["cells"]}


def test_two_local_jobs_give_the_serial_table(tmp_path):
    serial = grid.run_table(_small(CountingCells()), tmp_path / "serial", seeds=2, progress=False, say=lambda s: None)
    local = grid.run_table(_small(CountingCells()), tmp_path / "local", seeds=2, progress=False, say=lambda s: None,
                           executor=Local(jobs=2))
    assert len(_calls(tmp_path / "local")) == 4 and not local.failed
    assert _numbers(tmp_path / "local") == _numbers(tmp_path / "serial")
    assert (tmp_path / "local" / "table.txt").read_text() == (tmp_path / "serial" / "table.txt").read_text()
    assert local.cell("+Decoupling-Free +SimAM²", "concat").summary["top1"].mean == pytest.approx((0.61 + 0.63) / 2)
    assert serial.cell("+Decoupling-Free +SimAM²", "concat").diff.mean == pytest.approx(0.085)


def test_a_table_run_serially_resumes_on_workers_without_rerunning(tmp_path):
    grid.run_table(_table(CountingCells()), tmp_path, seeds=1, progress=False, say=lambda s: None)
    said = []
    result = grid.run_table(_table(CountingCells()), tmp_path, seeds=1, progress=False, say=said.append,
                            executor=Local(jobs=2))
    assert len(_calls(tmp_path)) == 6  # the serial run's six, none from the workers
    assert said == [f"6 of 6 runs already complete in {tmp_path}, not run again (--fresh reruns them)"]
    assert result.cell("Baseline", "concat").summary["top1"].n == 1


def test_a_failing_worker_is_said_and_rerun_next_time(tmp_path):
    cells = FailOnce(tmp_path)
    said = []
    result = grid.run_table(_small(cells), tmp_path / "t", seeds=1, progress=False, say=said.append,
                            executor=Local(jobs=2))
    assert sorted(result.failed) == ["concat__baseline seed 0", "concat__decouplingfree_simam2 seed 0"]
    assert "concat__baseline seed 0 failed: RuntimeError: CUDA out of memory" in said
    assert "concat__decouplingfree_simam2 seed 0 failed: worker exited with code 3" in said
    assert {c.per_seed[0]["status"] for c in result.cells.values()} == {"missing"}  # the table is still written
    assert (tmp_path / "t" / "table.json").is_file()
    again = grid.run_table(_small(cells), tmp_path / "t", seeds=1, progress=False, say=lambda s: None,
                           executor=Local(jobs=2))
    assert not again.failed and all(c.summary["top1"].n == 1 for c in again.cells.values())
    assert sorted(_calls(tmp_path / "t")) == ["concat__baseline 0", "concat__decouplingfree_simam2 0"]


@pytest.mark.slow  # two spawned workers and a wait: about 30 s on two loaded cores
def test_ctrl_c_stops_the_workers_and_writes_the_table_of_what_completed(tmp_path):
    def say(line: str) -> None:
        if line.endswith(" s)"):  # the first cell-seed is done: Ctrl-C, as a user would press it
            raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        grid.run_table(_small(SlowDecouplingFree()), tmp_path, seeds=1, progress=False, say=say,
                       executor=Local(jobs=2))
    assert time.perf_counter() - started < 100  # the slow worker was stopped, not waited for
    assert _calls(tmp_path) == ["concat__baseline 0"]
    cells = {c["row"]: c for c in json.loads((tmp_path / "table.json").read_text(encoding="utf-8"))["cells"]}
    assert cells["Baseline"]["summary"]["top1"]["n"] == 1
    assert "top1" not in cells["+Decoupling-Free +SimAM²"]["summary"]


def test_a_closure_is_refused_before_anything_runs(tmp_path):
    def run_cell(cs):
        FakeCells()(cs)

    with pytest.raises(grid.GridError, match="cannot be pickled"):
        grid.run_table(_table(run_cell), tmp_path, seeds=1, progress=False, say=lambda s: None, executor="local")
    assert not list(tmp_path.glob("*__*"))


def test_the_three_tables_cells_pickle(tmp_path):
    from simam2.adapters.ave import table as ave
    from simam2.adapters.fop import table as fop
    from simam2.adapters.ogm_ge import table as ogm_ge

    for t in (ogm_ge.table(tmp_path, 1), ave.table(tmp_path, 2, tmp_path, tmp_path), fop.table(tmp_path, 1)):
        assert pickle.loads(pickle.dumps(t.run_cell)).keywords == t.run_cell.keywords


# submitit's local executor spawns a fresh interpreter per job (seconds each): slow; debug runs in-process
@pytest.mark.parametrize("cluster", ["debug", pytest.param("local", marks=pytest.mark.slow)])
def test_submitits_executors_give_the_serial_table(tmp_path, cluster, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'simam2[slurm]')")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    grid.run_table(_small(CountingCells()), tmp_path / "serial", seeds=1, progress=False, say=lambda s: None)
    slurm = Slurm(cluster=cluster, gpus_per_cell=0, time_min=5, poll_s=0.1)
    result = grid.run_table(_small(CountingCells()), tmp_path / cluster, seeds=1, progress=False,
                            say=lambda s: None, executor=slurm)
    assert not result.failed and len(_calls(tmp_path / cluster)) == 2
    assert _numbers(tmp_path / cluster) == _numbers(tmp_path / "serial")


def test_the_command_lines_executor_options():
    parser = argparse.ArgumentParser()
    add_table_options(parser)
    pick = lambda *argv: executor_from_options(parser.parse_args(list(argv)))  # noqa: E731
    assert isinstance(pick(), grid.Serial)
    assert pick("--executor", "local", "--jobs", "3").jobs == 3
    gpus = pick("--executor", "local", "--gpus", "0,2")
    assert (gpus.jobs, gpus.gpus) == (2, [0, 2])
    slurm = pick("--executor", "slurm", "--slurm-time", "90", "--slurm-partition", "gpu")
    assert (slurm.time_min, slurm.partition, slurm.gpus_per_cell) == (90, "gpu", 1)
    with pytest.raises(ValueError, match="--jobs and --gpus are --executor local's"):
        pick("--jobs", "2")
    with pytest.raises(ValueError, match="--slurm-\\* options are --executor slurm's"):
        pick("--executor", "local", "--slurm-time", "5")
    with pytest.raises(ValueError, match="--gpus takes GPU indices"):
        pick("--executor", "local", "--gpus", "a,b")
    with pytest.raises(ValueError, match="give --jobs or --gpus, not both"):
        pick("--executor", "local", "--jobs", "2", "--gpus", "0")


def test_reused_workers_give_the_serial_table_and_run_several_cells_each(tmp_path):
    serial = grid.run_table(_small(CountingCells()), tmp_path / "serial", seeds=3, progress=False, say=lambda s: None)
    reused = grid.run_table(_small(CountingCells()), tmp_path / "reused", seeds=3, progress=False, say=lambda s: None,
                            executor=Local(jobs=2, reuse=True))
    assert not reused.failed and len(_calls(tmp_path / "reused")) == 6
    pids = (tmp_path / "reused" / "pids.txt").read_text().split()
    assert len(set(pids)) <= 2 < len(pids) and os.getpid() not in map(int, pids)
    assert _numbers(tmp_path / "reused") == _numbers(tmp_path / "serial")
    assert serial.cell("Baseline", "concat").summary["top1"].n == 3


def test_a_dying_reused_worker_is_said_and_the_others_go_on(tmp_path):
    cells = FailOnce(tmp_path)
    said = []
    result = grid.run_table(_small(cells), tmp_path / "t", seeds=1, progress=False, say=said.append,
                            executor=Local(jobs=1, reuse=True))
    # one worker: the baseline raises (the worker lives on), then the other's worker dies
    assert sorted(result.failed) == ["concat__baseline seed 0", "concat__decouplingfree_simam2 seed 0"]
    assert "concat__baseline seed 0 failed: RuntimeError: CUDA out of memory" in said
    assert any(s.startswith("concat__decouplingfree_simam2 seed 0 failed: a worker process died") for s in said)
    again = grid.run_table(_small(cells), tmp_path / "t", seeds=2, progress=False, say=lambda s: None,
                           executor=Local(jobs=1, reuse=True))
    assert not again.failed and all(c.summary["top1"].n == 2 for c in again.cells.values())


def test_reused_workers_cannot_take_gpus():
    with pytest.raises(grid.GridError, match="cannot each take a GPU"):
        Local(gpus=[0, 1], reuse=True)
