"""Forward+backward time of SimAM² fusion against vanilla summation with the same gate, side by side.

    python benchmarks/bench_core.py [--repeats N] [--threads T]

Both sides use the same learnable gate ζ = sigmoid(Linear(concat(pool(x1), pool(x2)))); the vanilla
side returns ζ x1 + (1 − ζ) x2, SimAM² adds Eq. 6–8 on top. Timings alternate between the two sides
so that drift in machine load hits both; the report is the ratio of medians (target ≤ 1.3×).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from simam2.core import LateFusion, SimAM2


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


def time_once(module, x1, x2) -> float:
    t0 = time.perf_counter()
    module(x1, x2).sum().backward()
    return time.perf_counter() - t0


def compare(name, vanilla, simam2, shape, repeats):
    torch.manual_seed(0)
    simam2.load_state_dict(vanilla.state_dict(), strict=False)
    x1 = torch.randn(shape, requires_grad=True)
    x2 = torch.randn(shape, requires_grad=True)
    for m in (vanilla, simam2):  # warm-up
        for _ in range(5):
            time_once(m, x1, x2)
    tv, ts = [], []
    for _ in range(repeats):
        tv.append(time_once(vanilla, x1, x2))
        ts.append(time_once(simam2, x1, x2))
    mv, ms = statistics.median(tv), statistics.median(ts)
    print(f"{name:<28} {str(tuple(shape)):<16} vanilla {mv * 1e6:8.1f} us   SimAM² {ms * 1e6:8.1f} us   "
          f"ratio {ms / mv:5.2f}x")
    return ms / mv


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, forward+backward, median of {args.repeats}")
    compare("summation (B, C)", GatedSum(512, zeta="learnable"), SimAM2(512, zeta="learnable"), (64, 512),
            args.repeats)
    compare("late fusion (B, T, C)", GatedLateSum(512, zeta="learnable"), LateFusion(512, zeta="learnable"),
            (64, 10, 512), args.repeats)


if __name__ == "__main__":
    main()
