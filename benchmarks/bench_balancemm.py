"""BalanceMM on its own entry point: the time of a training epoch with and without the adapter, side by side.

    python benchmarks/bench_balancemm.py [--checkout DIR] [--repeats R] [--epochs E] [--batch B] [--arms A,B,...]

Every arm runs ``python -m balancemm --trainer … --dataset CREMAD --model BaseClassifier --device cpu``
in a fresh interpreter on the same synthetic CREMA-D (24 train clips), seed and batches; what is
timed is each call of the trainer's ``train_loop`` (one training epoch), measured the same way in
every arm, and the run stops once ``fit`` returns (Shapley and test cost the same everywhere).

- ``upstream``: the patched pin alone — a copy of the checkout whose YAML files set the data,
  epochs, batch and workers (the upstream's own mechanism), baselineTrainer;
- ``adapter``: ``simam2 run balancemm`` with SimAM² off and records on, baselineTrainer;
- ``simam2``: the same with SimAM² concat (padded form), learnable ζ;
- ``df``: SimAM² with learnable ζ and OGMTrainerDF, decoupling-free modulation from epoch 0.

Arms alternate within each repeat; medians over repeats and epochs (the first epoch of each run,
which includes one-time warm-up, is dropped), of the wall time and of the process's CPU time (with
one thread, OMP_NUM_THREADS=1, the CPU time is the work itself and barely moves with the load of a
shared machine; the wall time does). Target: ``adapter`` ≤ 1.05 × ``upstream``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The timing patch: BaseTrainer.fit times the instance's train_loop (after any adapter wrapped it)
# and stops the run when fit returns; the times go to stdout as one JSON line.
TIMING = r"""
import json, sys, time
def install_timing():
    import balancemm.trainer.base_trainer as base
    fit = base.BaseTrainer.fit
    def timed_fit(self, *a, **k):
        loop, times = self.train_loop, []
        def train_loop(*la, **lk):
            t, c = time.perf_counter(), time.process_time()
            try:
                return loop(*la, **lk)
            finally:
                times.append([time.perf_counter() - t, time.process_time() - c])
        self.train_loop = train_loop
        fit(self, *a, **k)
        print("EPOCHS" + json.dumps(times), flush=True)
        raise SystemExit(0)
    base.BaseTrainer.fit = timed_fit
"""

UPSTREAM = TIMING + r"""
import os, runpy
sys.path.insert(0, os.getcwd())
install_timing()
sys.argv = ["balancemm", *sys.argv[1:]]
runpy.run_module("balancemm", run_name="__main__", alter_sys=True)
"""

ADAPTER = TIMING + r"""
from simam2.adapters.balancemm.spec import SPEC
from simam2.adapters import cli
on_start = SPEC.on_start
def on_start_and_time(run):
    on_start(run)
    install_timing()
SPEC.on_start = on_start_and_time
sys.exit(cli.main(["run", "balancemm", *sys.argv[1:]]))
"""


def _own_copy(checkout: Path, into: Path, data: Path, epochs: int, batch: int) -> Path:
    import yaml

    from simam2.adapters.balancemm.synth import dataset_paths

    copy = into / "upstream"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git", "experiments"))

    def edit(name, fn):
        path = copy / "configs" / name
        settings = yaml.safe_load(path.read_text())
        fn(settings)
        path.write_text(yaml.safe_dump(settings, sort_keys=False))

    edit("dataset_config.yaml", lambda s: s["dataset"]["CREMAD"].update(dataset_paths(data)))
    edit("trainer_config.yaml", lambda s: s["trainer_para"]["base"].update(max_epochs=epochs))
    edit("global_config.yaml", lambda s: s["dataloader"].update(eff_batch_size=batch, num_workers=0, pin_memory=False))
    return copy


def _epochs(cmd: list[str], cwd: Path) -> list[list[float]]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if "EPOCHS" not in proc.stdout:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.split("EPOCHS", 1)[1].splitlines()[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=None, help="patched checkout (default: vendor_fetch's cache)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--arms", default="upstream,adapter,simam2,df")
    ns = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import vendor_fetch

    from simam2.adapters.balancemm.synth import write_cremad

    checkout = ns.checkout or vendor_fetch.fetch("balancemm", progress=None)
    arms = ns.arms.split(",")
    common = ["--dataset", "CREMAD", "--model", "BaseClassifier", "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_cremad(tmp / "cremad", n_train=24, n_test=6)
        copy = _own_copy(checkout, tmp, data, ns.epochs, ns.batch)
        ours = ["--data", str(data), "--epochs", str(ns.epochs), "--batch-size", str(ns.batch), "--seed", "42"]
        commands = {
            "upstream": ([sys.executable, "-c", UPSTREAM, *common, "--trainer", "baselineTrainer"], copy),
            "adapter": ([sys.executable, "-c", ADAPTER, *ours, "--record", "{rec}", "--workdir", "{work}", "--",
                         "--trainer", "baselineTrainer"], ROOT),
            "simam2": ([sys.executable, "-c", ADAPTER, *ours, "--simam2", "--zeta", "learnable", "--record", "{rec}",
                        "--workdir", "{work}", "--", "--trainer", "baselineTrainer"], ROOT),
            "df": ([sys.executable, "-c", ADAPTER, *ours, "--simam2", "--zeta", "learnable", "--modulation", "df",
                    "--alpha", "0.5", "--record", "{rec}", "--workdir", "{work}"], ROOT),
        }
        times: dict[str, list[list[float]]] = {arm: [] for arm in arms}
        for r in range(ns.repeats):
            for arm in arms:
                cmd, cwd = commands[arm]
                work = tmp / f"{arm}-{r}"
                cmd = [c.replace("{rec}", str(work / "records.jsonl")).replace("{work}", str(work)) for c in cmd]
                epoch_times = _epochs(cmd, cwd)
                times[arm] += epoch_times[1:]
                print(f"repeat {r} {arm:9s}: " + " ".join(f"{w:.2f}s wall / {c:.2f}s cpu" for w, c in epoch_times),
                      flush=True)
    print(f"\nmedian training epoch ({ns.repeats} repeats x {ns.epochs - 1} epochs after the first, batch {ns.batch}, "
          f"24 clips):")
    base = [statistics.median(t[i] for t in times[arms[0]]) for i in (0, 1)]
    for arm in arms:
        wall, cpu = (statistics.median(t[i] for t in times[arm]) for i in (0, 1))
        print(f"  {arm:9s} wall {wall:7.3f} s (x{wall / base[0]:.3f})   cpu {cpu:7.3f} s (x{cpu / base[1]:.3f})"
              f"   of {arms[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
