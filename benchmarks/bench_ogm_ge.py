"""OGM-GE on its own main.py: modulation cost per step, and a whole epoch with and without the adapter.

    python benchmarks/bench_ogm_ge.py [--checkout DIR] [--steps N] [--repeats R] [--batch B] [--data DIR]
                                      [--parts 1,2,3] [--n-train N]

1. Per training step, side by side on the same model and batches (main.py's own ``train_epoch``,
   upstream AVClassifier with SimAM² sum fusion, learnable ζ): the time main.py spends between
   ``loss.backward()`` and ``optimizer.step()`` on its decoupled ratio and modulation
   (``--modulation OGM_GE`` / ``OGM``), against the time of the decoupling-free modulator's step
   pre-hook (Eq. 11, same rule, same noise), each less the same span of a ``Normal`` run. The
   encoders are the real ResNet-18s (modulation cost grows with their parameters); the inputs are
   small so that forward and backward do not drown the spans. Target: decoupling-free ≥ 5× cheaper.
2. A whole epoch of main.py on the synthetic CREMA-D (36 clips, batch 6, one epoch plus its
   evaluation), run through the same machinery with an adapter that replaces nothing, then with
   the OGM-GE adapter (vanilla fusion, records on), then with SimAM² + decoupling-free modulation.
   Runs alternate; medians. Target for the adapter alone: ≤ 1.05×.
3. The same epoch (concat, SimAM², decoupling-free) with every instrument on — per-modality
   evaluation by mean ablation, split-head metrics, TensorBoard curves — against it with them off
   (``--no-per-modality``, no ``--tensorboard``), alternating, medians. Target: ≤ 1.10×.

The decoupling-free path reads ζ's sums from a device buffer and never calls ``.item()``; main.py's
path loops over the batch in Python and calls ``.item()`` once per modulated parameter (on a GPU,
one host-device sync each).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from simam2.adapters import RunConfig, Spec, current_context, installed, run_script
from simam2.adapters.ogm_ge.spec import SPEC as ADAPTER

ROOT = Path(__file__).resolve().parents[1]


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Spans:
    """Times, per optimizer step: backward's end → first step pre-hook → last step pre-hook."""

    def __init__(self):
        self.backward_end = None
        self.first = None
        self.inline: list[float] = []  # main.py's code between backward and step
        self.hooks: list[float] = []  # the step pre-hooks (the modulator's, the recorder's)

    def on_grad(self, _param):
        _sync()
        self.backward_end = time.perf_counter()

    def before(self, *_):
        _sync()
        self.first = time.perf_counter()
        self.inline.append(self.first - self.backward_end)

    def after(self, *_):
        _sync()
        self.hooks.append(time.perf_counter() - self.first)


SIDES = (  # name, main.py's --modulation, decoupling-free modulator on, its GE noise
    ("Normal", "Normal", False, True),
    ("main.py OGM_GE", "OGM_GE", False, True),
    ("df OGM-GE", "Normal", True, True),
    ("main.py OGM", "OGM", False, False),
    ("df OGM", "Normal", True, False),
)


def bench_steps(checkout: Path, steps: int, batch: int) -> None:
    """One model, one install; the sides take turns, one training step each, so that drift in the
    machine's load hits them alike. lr = 0 keeps the weights, and so the gradients, stationary."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, 64, 48, generator=g), torch.randn(batch, 3, 1, 64, 64, generator=g),
             torch.randint(0, 6, (batch,), generator=g))]
    config = RunConfig(simam2=True, zeta="learnable", modulation="df", alpha=0.8, seed=0)
    spans = {name: Spans() for name, *_ in SIDES}
    current = {}
    argv = ["main.py", "--dataset", "CREMAD", "--fusion_method", "sum", "--modulation", "Normal",
            "--alpha", "0.8", "--ckpt_path", "unused", "--batch_size", str(batch), "--train"]
    with installed(ADAPTER, config, checkout), contextlib.ExitStack() as stack:
        old_argv, sys.argv = sys.argv, argv
        stack.callback(setattr, sys, "argv", old_argv)
        import main  # the upstream's main.py as a module: its own train_epoch and argument parser
        from models.basic_model import AVClassifier

        args = main.get_arguments()
        first = register_optimizer_step_pre_hook(lambda *a: current["spans"].before())  # before the modulator
        stack.callback(first.remove)
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        model = AVClassifier(args)
        modulator = current_context().probe.modulator
        model.apply(main.weight_init)
        model = torch.nn.DataParallel(model.to(device))
        last = register_optimizer_step_pre_hook(lambda *a: current["spans"].after())  # after every other hook
        stack.callback(last.remove)
        for p in model.parameters():
            stack.callback(p.register_post_accumulate_grad_hook(lambda _p: current["spans"].on_grad(_p)).remove)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 70, 0.1)
        batches = [tuple(t.to(device) for t in b) for b in data]
        with contextlib.redirect_stdout(None):
            for rep in range(steps + 2):  # the first two rounds warm up and are dropped
                for name, upstream_modulation, df_on, noise in SIDES:
                    current["spans"] = spans[name] if rep >= 2 else Spans()
                    args.modulation = upstream_modulation
                    modulator.noise = noise
                    modulator.start_epoch, modulator.end_epoch = (0, 10**9) if df_on else (10**9, 10**9)
                    main.train_epoch(args, 0, model, device, batches, optimizer, scheduler)
    # the fastest of the alternating steps: other processes' load only ever adds time
    med = {name: (min(s.inline), min(s.hooks)) for name, s in spans.items()}
    base_inline, base_hooks = med["Normal"]
    print(f"1. modulation per training step (batch {batch}, ResNet-18 encoders, fastest of {steps} "
          f"alternating steps)")
    print(f"   Normal: main.py's inline span {base_inline * 1e3:.2f} ms, step pre-hooks {base_hooks * 1e3:.2f} ms "
          f"(subtracted below)")
    for label, main_side, df_side in (("OGM-GE", "main.py OGM_GE", "df OGM-GE"), ("OGM", "main.py OGM", "df OGM")):
        decoupled = max(med[main_side][0] - base_inline, 1e-9)
        free = max(med[df_side][1] - base_hooks, 1e-9)
        print(f"   {label:<7} main.py decoupled ratio + modulation {decoupled * 1e3:8.2f} ms   "
              f"decoupling-free {free * 1e3:8.2f} ms   -> decoupling-free {decoupled / free:5.1f}x cheaper")


class NoAdapter(Spec):
    """The same run machinery, nothing replaced: main.py as the patched upstream ships it."""

    name = "ogm-ge (no adapter)"
    upstream = "ogm-ge"
    script = "main.py"


def bench_epoch(checkout: Path, data: Path, repeats: int) -> None:
    argv = ["--dataset", "CREMAD", "--train", "--epochs", "1", "--batch_size", "6", "--fusion_method", "sum",
            "--alpha", "0.8", "--audio_path", str(data / "AudioWAV"), "--visual_path", str(data)]
    sides = {
        "without adapter": (NoAdapter(), None, "Normal"),
        "adapter (vanilla, records)": (ADAPTER, RunConfig(), "Normal"),
        "adapter + SimAM² + df": (ADAPTER, RunConfig(simam2=True, zeta="learnable", modulation="df", alpha=0.8),
                                  "Normal"),
    }
    times = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats + 1):  # the first round warms caches and is dropped
            for name, (adapter, config, mod) in sides.items():
                ckpt = Path(tmp) / f"{r}-{len(times[name])}-{adapter.name}"
                start = time.perf_counter()
                with contextlib.redirect_stdout(None):
                    run_script(adapter, argv + ["--modulation", mod, "--ckpt_path", str(ckpt)],
                               config, checkout, cwd=data)
                if r:
                    times[name].append(time.perf_counter() - start)
    base = statistics.median(times["without adapter"])
    print(f"2. one epoch of main.py + its evaluation on {data} (median of {repeats})")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"   {name:<28} {m:7.2f} s   {m / base:5.3f}x")


def bench_instruments(checkout: Path, data: Path, repeats: int, out: Path) -> float:
    """An epoch (training + evaluation) of main.py with SimAM² + decoupling-free modulation, every
    instrument on (per-modality evaluation by mean ablation, split-head metrics, TensorBoard curves)
    against the same epoch with them off; the sides alternate, medians. Target: ≤ 1.10×."""
    argv = ["--dataset", "CREMAD", "--train", "--epochs", "1", "--batch_size", "6", "--fusion_method", "concat",
            "--modulation", "Normal", "--alpha", "0.8", "--audio_path", str(data / "AudioWAV"),
            "--visual_path", str(data)]
    base = RunConfig(simam2=True, zeta="learnable", modulation="df", alpha=0.8, seed=0)
    times: dict[str, list[float]] = {"instruments off": [], "instruments on": []}
    for r in range(repeats + 1):  # the first round warms caches and is dropped
        for name in times:
            on = name == "instruments on"
            run_dir = out / f"{r}-{'on' if on else 'off'}"
            config = base.but(record=run_dir / "records.jsonl", per_modality=on,
                              tensorboard=run_dir / "tb" if on else None)
            start = time.perf_counter()
            with contextlib.redirect_stdout(None):
                run_script(ADAPTER, argv + ["--ckpt_path", str(run_dir / "ckpt")], config, checkout, cwd=data)
            _sync()
            if r:
                times[name].append(time.perf_counter() - start)
    off, on = (statistics.median(times[k]) for k in ("instruments off", "instruments on"))
    print(f"3. one epoch + evaluation of main.py (concat, SimAM², decoupling-free), median of {repeats}, "
          f"alternating")
    print(f"   instruments off                   {off:7.2f} s   {[round(t, 2) for t in times['instruments off']]}")
    print(f"   on (per-modality eval, TensorBoard) {on:5.2f} s   {[round(t, 2) for t in times['instruments on']]}")
    print(f"   -> {on / off:.3f}x (target <= 1.10x)")
    return on / off


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", type=Path, default=None, help="patched OGM-GE checkout (default: fetch)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per side (default 10)")
    p.add_argument("--batch", type=int, default=64, help="batch size of part 1 (main.py's default 64)")
    p.add_argument("--repeats", type=int, default=2, help="epochs per side in part 2 (default 2)")
    p.add_argument("--data", type=Path, default=None, help="a synthetic CREMA-D (default: write one)")
    p.add_argument("--skip-epoch", action="store_true", help="part 1 only")
    p.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 3 (default 1,2,3)")
    p.add_argument("--n-train", type=int, default=36, help="clips of the synthetic CREMA-D (default 36)")
    p.add_argument("--keep-denormals", action="store_true",
                   help="leave subnormal floats on (default: flush them, see below)")
    args = p.parse_args(argv)
    # After a few steps many conv gradients hold subnormal floats, and on a CPU each arithmetic op on
    # one is ~100x slower: both sides' spans then measure denormal arithmetic, not their own work
    # (seen: 7 ms -> 300 ms for the same k * grad). GPUs do not slow down on them.
    flushed = not args.keep_denormals and torch.set_flush_denormal(True)
    if args.checkout is None:
        import vendor_fetch

        args.checkout = vendor_fetch.fetch("ogm-ge")
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, subnormals {'flushed to zero' if flushed else 'kept'}")
    parts = {int(x) for x in args.parts.split(",")}
    if 1 in parts:
        bench_steps(args.checkout, args.steps, args.batch)
    if args.skip_epoch:
        parts -= {2, 3}
    if parts & {2, 3}:
        with tempfile.TemporaryDirectory() as tmp:
            data = args.data or ADAPTER.synth(Path(tmp) / "cremad", n_train=args.n_train, n_test=12)
            if 2 in parts:
                bench_epoch(args.checkout, Path(data), args.repeats)
            if 3 in parts:
                bench_instruments(args.checkout, Path(data), args.repeats, Path(tmp) / "instruments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
