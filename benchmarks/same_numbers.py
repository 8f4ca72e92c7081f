"""Whether the core computes the same numbers, bit for bit, as at another git revision.

    python benchmarks/same_numbers.py --baseline REV

Trains a few SimAM² forms for six steps (three in training mode with SGD, three in eval mode) on
fixed random inputs, with the working tree's ``simam2.core`` and with the one at ``REV`` imported
side by side (as ``bench_core.py --baseline`` does), and compares every output, input gradient,
parameter, ``var_max``, ``weight_sums``, ``r`` and ζ with ``torch.equal``; also a bf16-autocast
forward of a learnable gate and a given float32 ζ with float64 inputs. Prints one line per case
and exits 1 if any differs. The CPU kernel is as the environment says (``SIMAM2_CPU_KERNEL``; off by
default): with it off, a change that claims to leave the default path alone must print
"bit-identical" everywhere. With it on, a learnable ζ's rows differ from a revision without the
kernel's statistics pass in float32's last bits (ζ's batch variance is summed in float64 there).
"""

from __future__ import annotations

import os

# the default path unless told otherwise (bench_core, imported below, would turn the kernel on)
os.environ.setdefault("SIMAM2_CPU_KERNEL", "0")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import load_baseline  # noqa: E402

CASES = [("SimAM2", dict(channels=6, zeta_mode="learnable"), (8, 6, 5, 5)),
         ("SimAM2", dict(channels=6), (8, 6)),
         ("Summation", dict(channels=6, zeta_mode="fixed", u="vanilla"), (8, 6, 3)),
         ("LateFusion", dict(channels=10, zeta_mode="learnable"), (8, 3, 10))]


def train(core, cls: str, kwargs: dict, shape, steps: int = 6) -> list[torch.Tensor]:
    torch.manual_seed(0)
    m = getattr(core, cls)(**kwargs)
    opt = torch.optim.SGD(m.parameters(), lr=0.1) if list(m.parameters()) else None
    g = torch.Generator().manual_seed(1)
    seen = []
    for i in range(steps):
        x1, x2 = (torch.randn(shape, generator=g).requires_grad_() for _ in range(2))
        if i == steps // 2:
            m.eval()
        y = m(x1, x2)
        seen.append(y.detach())
        if m.training:
            y.square().mean().backward()
            seen += [x1.grad, x2.grad]
            if opt:
                opt.step()
                opt.zero_grad()
    return seen + [m.var_max, m.weight_sums, m.r, m.zeta] + [p.detach() for p in m.parameters()]


def autocast_bf16(core) -> list[torch.Tensor]:
    torch.manual_seed(0)
    m = core.SimAM2(6, zeta_mode="learnable")
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn((8, 6, 5, 5), generator=g).requires_grad_() for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x1, x2)
    y.float().square().mean().backward()
    return [y.detach(), x1.grad, x2.grad, m.var_max, m.weight_sums, m.r] + [p.grad for p in m.parameters()]


def given_zeta(core) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x1, x2 = (torch.randn((8, 6, 5), generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    zeta = torch.rand((8, 6), generator=g).requires_grad_()
    m = core.SimAM2(6, zeta_mode="given")
    y = m(x1, x2, zeta)
    y.square().sum().backward()
    return [y.detach(), x1.grad, x2.grad, zeta.grad, m.var_max, m.r]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) or (x.isnan().all() and y.isnan().all()) for x, y in zip(a, b))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, metavar="REV", help="the git revision to compare with")
    args = p.parse_args(argv)
    import simam2.core as ours

    theirs = load_baseline(args.baseline)
    results = [(f"{cls} {kw} {shape}", same(train(theirs, cls, kw, shape), train(ours, cls, kw, shape)))
               for cls, kw, shape in CASES]
    results += [("SimAM2 learnable under bf16 autocast", same(autocast_bf16(theirs), autocast_bf16(ours))),
                ("SimAM2 given float32 zeta, float64 inputs", same(given_zeta(theirs), given_zeta(ours)))]
    for name, ok in results:
        print(f"{'bit-identical' if ok else 'DIFFERENT':>13}  {name}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
