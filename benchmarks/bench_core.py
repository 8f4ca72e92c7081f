"""Forward+backward time of SimAM² fusion against vanilla gated summation with the same gate.

    python benchmarks/bench_core.py [--repeats N] [--threads T] [--modes eager,compiled] [--device D]
                                    [--shapes NAME,...] [--clock wall|cpu] [--baseline REF] [--json FILE]

Both sides use the same learnable gate ζ = sigmoid(Linear(concat(pool(x1), pool(x2)))); the vanilla
side returns ζ x1 + (1 − ζ) x2, SimAM² adds Eq. 6–8 on top. For each shape and each mode (eager, and
``torch.compile`` of each whole module) the two sides are timed in alternation, one call each in turn
(each round starting with another side), so that drift in machine load hits both alike; the report is the ratio of the two medians (target
≤ 1.3×). A ratio is the only figure to compare across machines: bare times are printed for context.

Beside the ratios, for the two-modality sum shapes, the bytes one SimAM² node moves per call against
the vanilla fusion's, and the fraction of the machine's memory bandwidth the node achieves:

- bytes: what each side reads and writes, forward+backward, with ``n`` the bytes of one input and
  ``w`` those of ζ (B, C). Vanilla ζ x1 + (1 − ζ) x2 at the least: forward reads x1, x2, ζ and
  writes U; backward reads the gradient, x1, x2 (for ∂ζ), ζ and writes ∂x1, ∂x2, ∂ζ: 8n + 3w.
  The SimAM² node SimAM2 calls (core/pair_kernel.py's ZetaPairNode): forward reads x1, x2, ζ,
  writes 1 − ζ (scratch) and reads both, and writes the output and sigmoid(E*); backward reads the
  gradient, x1, x2, ζ, sigmoid(E*), writes and reads 1 − ζ again, writes ∂ζ's two parts (scratch),
  reads them and writes ∂x1, ∂x2, ∂ζ; and 15 float64 statistics per channel: 10n + 13w + 240 bytes
  per channel. On feature maps (w ≪ n) that is 1.25× vanilla's; on (B, C) inputs, where ζ is as
  large as an input, 23n against 11n (the scratch of L = B·C values stays in the cache there).
- bandwidth: those bytes over the node's own forward+backward time (``fused_zeta_attention`` alone,
  with a random upstream gradient, median of the same rounds), against the bandwidth of a large
  copy (read + write) timed once in the same run: the fraction is the node's effective bandwidth.
"""

from __future__ import annotations

import os

# the CPU kernel is opt-in (core/pair_kernel.py); the benchmark times it unless told otherwise
os.environ.setdefault("SIMAM2_CPU_KERNEL", "1")

import argparse  # noqa: E402
import importlib
import io
import json
import math
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from simam2.core import LateFusion, SimAM2

ROOT = Path(__file__).resolve().parents[1]

#: (name, shape, which module pair): the shapes of issues 12 and 19.
SHAPES = {
    "sum-2d-small": ((64, 128), "sum"),
    "sum-2d": ((64, 512), "sum"),
    "sum-2d-large": ((64, 2048), "sum"),
    "late-3d": ((64, 10, 512), "late"),
    "map-16": ((16, 512, 7, 7), "sum"),
    "map-64": ((64, 512, 7, 7), "sum"),
    "map-32-14": ((32, 256, 14, 14), "sum"),
}


class GatedSum(SimAM2):
    """The vanilla side: the same gate, no attention."""

    def forward(self, x1, x2, zeta=None):
        z = self.compute_zeta(x1, x2)
        z = z.reshape(z.shape + (1,) * (x1.dim() - 2))
        return z * x1 + (1 - z) * x2


class GatedLateSum(LateFusion):
    def forward(self, a, v, zeta=None):
        z = self.compute_zeta(a.reshape(-1, self.channels), v.reshape(-1, self.channels)).view(a.shape)
        return z * a + (1 - z) * v


def pair(kind: str, channels: int, device, core=None) -> tuple[torch.nn.Module, ...]:
    """The vanilla module, SimAM², and SimAM² from ``core`` (a baseline) when given: one gate."""
    torch.manual_seed(0)
    vanilla, simam2 = (GatedSum, SimAM2) if kind == "sum" else (GatedLateSum, LateFusion)
    classes = [simam2] + ([core.SimAM2 if kind == "sum" else core.LateFusion] if core else [])
    v = vanilla(channels, zeta_mode="learnable").to(device)
    out = [v]
    for cls in classes:
        m = cls(channels, zeta_mode="learnable").to(device)
        m.load_state_dict(v.state_dict(), strict=False)
        out.append(m)
    return tuple(out)


def load_baseline(ref: str):
    """``simam2.core`` as it is at git revision ``ref`` of this repository, imported under another
    name, so that the same run times it beside the working tree's (before/after in one run)."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "core"], capture_output=True)
    if tar.returncode != 0:
        raise SystemExit(f"--baseline: git archive {ref} failed: {tar.stderr.decode().strip()}")
    pkg = Path(tempfile.mkdtemp(prefix="simam2-baseline-")) / "simam2_baseline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    tarfile.open(fileobj=io.BytesIO(tar.stdout)).extractall(pkg, filter="data")
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("simam2_baseline.core")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: wall: elapsed time (what a user waits for); cpu: this process's CPU time, which other people's
#: load on a shared machine inflates far less (use it with --threads 1, where no thread spins idle)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def time_once(fn, x1, x2, device) -> float:
    _sync(device)
    t0 = clock()
    fn(x1, x2).sum().backward()
    _sync(device)
    return clock() - t0


def compare(shape, kind, mode, repeats, device, core=None, warmup=5):
    """Median forward+backward times in seconds of (vanilla, SimAM², [baseline SimAM²]), timed in
    alternation, one call each in turn, the first of each round rotating."""
    modules = pair(kind, shape[-1] if kind == "late" else shape[1], device, core)
    fns = list(modules)
    if mode == "compiled":
        torch._dynamo.reset()
        fns = [torch.compile(m, fullgraph=True) for m in fns]
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(shape, generator=g).to(device).requires_grad_()
    x2 = torch.randn(shape, generator=g).to(device).requires_grad_()
    for fn in fns:
        for _ in range(warmup):
            time_once(fn, x1, x2, device)
    times = [[] for _ in fns]
    for i in range(repeats):
        # each round starts with another side: what one call leaves behind (freed memory, caches)
        # must not favour the one that always follows it
        for j in range(len(fns)):
            k = (i + j) % len(fns)
            times[k].append(time_once(fns[k], x1, x2, device))
    return [statistics.median(t) for t in times]


#: bytes of a large copy for the machine's bandwidth: far beyond any cache
COPY_BYTES = 256 * 2**20


def copy_bandwidth(device, repeats=7) -> float:
    """Bytes per second of ``dst.copy_(src)`` of COPY_BYTES (read + write counted), median of runs."""
    src = torch.empty(COPY_BYTES // 4, device=device).normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = clock()
        dst.copy_(src)
        _sync(device)
        times.append(clock() - t0)
    return 2 * COPY_BYTES / statistics.median(times[1:])


def node_bytes(shape, itemsize: int) -> tuple[int, int]:
    """Bytes moved per forward+backward: (SimAM² node, vanilla ζ x1 + (1 − ζ) x2 at the least)."""
    n = math.prod(shape) * itemsize  # one input
    w = shape[0] * shape[1] * itemsize  # one weight: ζ is (B, C), as large as an input when it is 2-D
    channels = math.prod(shape[:2]) if len(shape) > 2 else shape[0]  # the kernel's rows
    # ζ, its 1 − ζ scratch and ∂ζ's two scratch parts (the docstring's count); 15 float64
    # statistics per row written forward and read backward
    return 10 * n + 13 * w + channels * 15 * 8 * 2, 8 * n + 3 * w


def time_node(shape, repeats, device, warmup=5) -> float:
    """Median forward+backward seconds of the two-modality node alone (fused_zeta_attention, as
    SimAM2 calls it)."""
    from simam2.core.energy import resolve_neuron_dims
    from simam2.core.fused import fused_zeta_attention

    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(shape, generator=g).to(device).requires_grad_() for _ in range(2))
    zeta = torch.rand(shape[:2], generator=g).to(device).requires_grad_()
    upstream = torch.randn(shape, generator=g).to(device)
    r = torch.tensor(0.5, dtype=torch.float64, device=device)
    dims = resolve_neuron_dims(x1, None)

    def once():
        _sync(device)
        t0 = clock()
        torch.autograd.grad(fused_zeta_attention(x1, x2, zeta, r, 1e-6, dims), (x1, x2, zeta), upstream)
        _sync(device)
        return clock() - t0

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(repeats))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated of {', '.join(SHAPES)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or process CPU time (robust to a loaded machine; use with --threads 1)")
    p.add_argument("--baseline", metavar="REF", help="also time SimAM² as at this git revision (e.g. main), "
                   "in the same alternation: before and after in one run")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS["wall"] if args.device != "cpu" else CLOCKS[args.clock]
    device = torch.device(args.device)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in ("eager", "compiled"):
            p.error(f"--modes: unknown mode {m!r}; use eager, compiled")
    names = [n for n in args.shapes.split(",") if n]
    for n in names:
        if n not in SHAPES:
            p.error(f"--shapes: unknown shape {n!r}; known: {', '.join(SHAPES)}")
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, forward+backward, "
          f"median of {args.repeats}, alternating, {clock.__name__}")
    core = load_baseline(args.baseline) if args.baseline else None
    bandwidth = copy_bandwidth(device)
    print(f"memory bandwidth (copy of {COPY_BYTES >> 20} MiB, read + write): {bandwidth / 1e9:.1f} GB/s")
    head = f"{'shape':<18} {'mode':<9} {'vanilla':>10} {'SimAM²':>10} {'ratio':>7}"
    print(head + (f" {'at ' + args.baseline:>12} {'ratio':>7}" if core else ""))
    rows = []
    for name in names:
        shape, kind = SHAPES[name]
        for mode in modes:
            tv, ts, *tb = compare(shape, kind, mode, args.repeats, device, core)
            row = dict(name=name, shape=list(shape), mode=mode, vanilla_s=tv, simam2_s=ts, ratio=ts / tv)
            line = f"{str(shape):<18} {mode:<9} {tv * 1e3:8.3f}ms {ts * 1e3:8.3f}ms {ts / tv:6.2f}x"
            if tb:
                row.update(baseline=args.baseline, baseline_s=tb[0], baseline_ratio=tb[0] / tv)
                line += f" {tb[0] * 1e3:10.3f}ms {tb[0] / tv:6.2f}x"
            if kind == "sum" and mode == "eager":
                tn = time_node(shape, args.repeats, device)
                ours, vanilla = node_bytes(shape, 4)
                row.update(node_s=tn, node_bytes=ours, vanilla_bytes=vanilla, bytes_ratio=ours / vanilla,
                           node_GBps=ours / tn / 1e9, bandwidth_fraction=ours / tn / bandwidth)
                line += (f"   node {tn * 1e3:.3f}ms, {ours / 2**20:.1f} MiB = {ours / vanilla:.2f}x vanilla's, "
                         f"{ours / tn / 1e9:.1f} GB/s = {ours / tn / bandwidth:.0%} of copy")
            rows.append(row)
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, device=args.device, threads=torch.get_num_threads(),
                           clock=clock.__name__, copy_bandwidth_GBps=bandwidth / 1e9,
                           repeats=args.repeats, rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
