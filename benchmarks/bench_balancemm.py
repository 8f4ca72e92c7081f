"""BalanceMM on its own entry point: the time of a training epoch with and without the adapter, side by side.

    python benchmarks/bench_balancemm.py [--checkout DIR] [--data DIR] [--repeats R] [--epochs E] [--batch B]

Every arm is ``python -m balancemm --trainer OGMTrainer[DF] … --device cpu`` run in this process
through :func:`~simam2.adapters.balancemm_entry.run_module` on the same synthetic CREMA-D, seed and
batches; what is timed is each call of the trainer's own ``train_loop`` (one epoch of training),
wrapped the same way in every arm. The run is stopped once ``fit`` returns (its Shapley values and
test cost the same in every arm and would only dilute the difference).

Arms, alternating, medians over repeats and epochs:

- ``upstream``: run_module with nothing installed (the patched pin, concat fusion, their OGM trainer);
- ``adapter``: the same inside ``installed(simam2=False)`` (the adapter's context, nothing swapped);
- ``simam2``: SimAM² concat (padded form), fixed ζ, their OGM trainer;
- ``df``: SimAM² concat with learnable ζ and the decoupling-free trainer.

Target: ``adapter`` ≤ 1.05 × ``upstream``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Stop(Exception):
    """Raised after fit: the rest of the run (Shapley, test) is the same in every arm."""


def _arms():
    from simam2.adapters.balancemm_layers import installed

    return {
        "upstream": (None, "OGMTrainer", {}),
        "adapter": (functools.partial(installed, simam2=False), "OGMTrainer", {}),
        "simam2": (functools.partial(installed, simam2=True, zeta="fixed"), "OGMTrainer", {}),
        "df": (functools.partial(installed, simam2=True, zeta="learnable"), "OGMTrainerDF", {"modulation_starts": 0}),
    }


@contextlib.contextmanager
def _timed_epochs(times: list[float]):
    """Time OGMTrainer.train_loop (the DF trainer inherits it) and stop the run after fit."""
    import balancemm.trainer.base_trainer as base
    import balancemm.trainer.OGM_trainer as ogm

    loop, fit = ogm.OGMTrainer.train_loop, base.BaseTrainer.fit

    def train_loop(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return loop(self, *args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    def fit_then_stop(self, *args, **kwargs):
        fit(self, *args, **kwargs)
        raise _Stop

    ogm.OGMTrainer.train_loop, base.BaseTrainer.fit = train_loop, fit_then_stop
    try:
        yield
    finally:
        ogm.OGMTrainer.train_loop, base.BaseTrainer.fit = loop, fit


def run_arm(checkout: Path, data: Path, arm: str, epochs: int, batch: int, out: Path) -> list[float]:
    from simam2.adapters.balancemm_entry import Overrides, run_module

    context, trainer, block = _arms()[arm]
    argv = ["--trainer", trainer, "--dataset", "CREMAD", "--model", "BaseClassifier", "--device", "cpu", "--alpha", "0.5"]
    times: list[float] = []
    overrides = Overrides(out_dir=out, data=data, epochs=epochs, batch_size=batch, workers=0, trainer=block)

    @contextlib.contextmanager
    def both():
        with (context() if context else contextlib.nullcontext()), _timed_epochs(times):
            yield

    try:
        run_module(checkout, argv, overrides, context=both)
    except _Stop:
        pass
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=None, help="patched checkout (default: vendor_fetch's cache)")
    parser.add_argument("--data", type=Path, default=None, help="a synthetic CREMA-D (default: write one, 24 clips)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--arms", default="upstream,adapter,simam2,df")
    ns = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import vendor_fetch
    from simam2.adapters.balancemm_synth import write_cremad

    checkout = ns.checkout or vendor_fetch.fetch("balancemm", progress=None)
    arms = ns.arms.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        data = ns.data or write_cremad(Path(tmp) / "cremad", n_train=24, n_test=6)
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for r in range(ns.repeats):
            for arm in arms:
                epoch_times = run_arm(checkout, data, arm, ns.epochs, ns.batch, Path(tmp) / f"{arm}-{r}")
                times[arm] += epoch_times
                print(f"repeat {r} {arm}: " + " ".join(f"{t:.2f}s" for t in epoch_times), flush=True)
    base = statistics.median(times[arms[0]])
    print(f"\nmedian epoch (train_loop), {ns.repeats} repeats x {ns.epochs} epochs, batch {ns.batch}:")
    for arm in arms:
        m = statistics.median(times[arm])
        print(f"  {arm:9s} {m:7.3f} s   x{m / base:.3f} of {arms[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
