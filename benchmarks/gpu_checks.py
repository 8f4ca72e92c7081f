"""The measurements of ``benchmarks/gpu_check.sh`` that need Python: each prints one summary line and
writes a JSON file; each says ``SKIP …`` and exits 0 where it needs CUDA and torch sees none.

    python benchmarks/gpu_checks.py bandwidth --out DIR   # fused attention at a large late-fusion shape
    python benchmarks/gpu_checks.py syncs --out DIR       # host syncs per training step (expected 0)
    python benchmarks/gpu_checks.py epoch --out DIR       # OGM-GE epoch, SimAM² + DF against vanilla

bandwidth: forward, and forward+backward, of the fused attention (``fused_pair_attention``, Eq. 4–8)
at the late-fusion shape (B, T, C) = (256, 64, 512), seen as (B·T, C) samples whose C features are
the neurons: the time of each, and the bandwidth it achieves counting only the bytes it cannot avoid
(forward: read both streams and the two weights, write the output; backward: read the output's
gradient, both streams and the weights, write both streams' and the weights' gradients), against
the card's peak: a table for the H100/H200 variants, else 2 × memory clock × bus width from the
device properties.

syncs: a small model (two Linear encoders, ``SimAM2(zeta_mode="learnable")``, a Linear head) with
``GradientModulator(noise=True, ratio="zeta")`` attached to SGD, a few training steps under
``torch.cuda.set_sync_debug_mode("warn")``; counts the warnings of each step after the first.

epoch: ``simam2 synth ogm-ge DIR``, then one epoch of OGM-GE's own main.py through ``simam2 run``,
vanilla (``--fusion sum``) and SimAM² + decoupling-free modulation (``--simam2 --zeta learnable
--modulation df``), alternating, ``--repeats`` each; the ratio of the median wall times (process
start to end, the same for both).
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
import time
import warnings
from pathlib import Path

import torch
from torch import nn

#: HBM bandwidth in bytes/s by the name torch reports (vendor datasheets)
PEAK_BANDWIDTH = {
    "H100 SXM": 3.35e12, "H100 80GB HBM3": 3.35e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12,
    "H200": 4.8e12, "H200 NVL": 4.8e12,
}


def peak_bandwidth(props) -> tuple[float | None, str]:
    for key in sorted(PEAK_BANDWIDTH, key=len, reverse=True):
        if key in props.name:
            return PEAK_BANDWIDTH[key], f"table ({key})"
    clock = getattr(props, "memory_clock_rate", None)  # kHz
    bus = getattr(props, "memory_bus_width", None)  # bits
    if clock and bus:
        return 2 * clock * 1e3 * bus / 8, "2 × memory clock × bus width"
    return None, "unknown"


def _no_cuda(what: str, out: Path) -> bool:
    if torch.cuda.is_available():
        return False
    line = f"SKIP {what}: torch sees no CUDA device"
    print(line)
    (out / f"{what}.json").write_text(json.dumps({"skipped": line}))
    return True


def _time_cuda(fn, repeats: int) -> float:
    """Median seconds of ``fn()``, timed with CUDA events."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def bandwidth(args) -> None:
    if _no_cuda("bandwidth", args.out):
        return
    from simam2.core.fused import fused_pair_attention, pair_weights

    dev = torch.device("cuda")
    b, t, c = args.shape
    x1, x2 = (torch.randn(b * t, c, device=dev, requires_grad=True) for _ in range(2))
    w = pair_weights(torch.rand(b * t, c, device=dev)).requires_grad_()
    r = torch.tensor(0.5, device=dev)
    grad = torch.randn(b * t, c, device=dev)

    def fwd():
        with torch.no_grad():
            fused_pair_attention(x1, x2, w, r, 1e-6)

    def fwd_bwd():
        torch.autograd.grad(fused_pair_attention(x1, x2, w, r, 1e-6), (x1, x2, w), grad)

    for _ in range(5):
        fwd_bwd()
    n = b * t * c * 4  # bytes of one float32 (B·T, C) tensor; late fusion has one weight per element
    bytes_fwd = 5 * n  # read x1, x2, ζ, 1 − ζ; write out
    bytes_bwd = 9 * n  # read ∂out, x1, x2, ζ, 1 − ζ; write ∂x1, ∂x2, ∂ζ, ∂(1 − ζ)
    tf, tfb = _time_cuda(fwd, args.repeats), _time_cuda(fwd_bwd, args.repeats)
    props = torch.cuda.get_device_properties(dev)
    peak, source = peak_bandwidth(props)
    res = dict(device=props.name, shape=[b * t, c], forward_s=tf, forward_backward_s=tfb,
               forward_GBps=bytes_fwd / tf / 1e9, forward_backward_GBps=(bytes_fwd + bytes_bwd) / tfb / 1e9,
               peak_GBps=peak / 1e9 if peak else None, peak_source=source)
    if peak:
        res["forward_fraction_of_peak"] = bytes_fwd / tf / peak
        res["forward_backward_fraction_of_peak"] = (bytes_fwd + bytes_bwd) / tfb / peak
    (args.out / "bandwidth.json").write_text(json.dumps(res, indent=1))
    frac = (f"{res['forward_fraction_of_peak']:.0%} / {res['forward_backward_fraction_of_peak']:.0%} of peak "
            f"{peak / 1e9:.0f} GB/s ({source})") if peak else "peak unknown"
    print(f"bandwidth {props.name}, fused attention on ({b}·{t}, {c}): forward {tf * 1e3:.3f} ms "
          f"({res['forward_GBps']:.0f} GB/s), forward+backward {tfb * 1e3:.3f} ms "
          f"({res['forward_backward_GBps']:.0f} GB/s); {frac}")


class _Small(nn.Module):
    def __init__(self, c=64):
        super().__init__()
        from simam2.core import SimAM2

        self.audio, self.visual = nn.Linear(32, c), nn.Linear(32, c)
        self.fusion = SimAM2(c, zeta_mode="learnable")
        self.head = nn.Linear(c, 6)

    def forward(self, a, v):
        return self.head(self.fusion(self.audio(a), self.visual(v)))


def syncs(args) -> None:
    if _no_cuda("syncs", args.out):
        return
    from simam2.core import GradientModulator

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = _Small().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mod = GradientModulator({"audio": model.audio.parameters(), "visual": model.visual.parameters()},
                            fusion=model.fusion, alpha=0.1, noise=True, ratio="zeta", seed=0)
    mod.attach(opt)
    batches = [(torch.randn(16, 32, device=dev), torch.randn(16, 32, device=dev),
                torch.randint(0, 6, (16,), device=dev)) for _ in range(args.steps)]
    torch.cuda.synchronize()
    per_step, messages = [], []
    torch.cuda.set_sync_debug_mode("warn")
    try:
        for a, v, y in batches:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(a, v), y).backward()
                opt.step()
            hits = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
            per_step.append(len(hits))
            messages.extend(hits)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    after_first = per_step[1:]
    res = dict(steps=args.steps, syncs_per_step=per_step, syncs_after_first_step=sum(after_first),
               applied=bool(mod.last.get("applied")), messages=sorted(set(messages)))
    (args.out / "syncs.json").write_text(json.dumps(res, indent=1))
    verdict = "OK" if sum(after_first) == 0 else "FAIL"
    print(f"syncs {verdict}: host syncs per step {per_step} (first step includes one-off set-up; "
          f"expected 0 after it); modulation applied: {res['applied']}")


def _run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"epoch: {' '.join(cmd)} failed with exit code {proc.returncode}; see {log}")
    return time.perf_counter() - t0


def epoch(args) -> None:
    if not args.cpu and _no_cuda("epoch", args.out):
        return
    simam2 = shutil.which("simam2") or str(Path(sys.executable).with_name("simam2"))
    log = args.out / "epoch.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="simam2-gpu-check-") as tmp:
        data = Path(tmp) / "cremad"
        _run([simam2, "synth", "ogm-ge", str(data)], log)
        script = ["--", "--train", "--epochs", "1", "--batch_size", "16", "--audio_path", "AudioWAV",
                  "--visual_path", ".", "--ckpt_path", "ckpt"]
        variants = {
            "vanilla": [simam2, "run", "ogm-ge", "--fusion", "sum", "--workdir", str(data)] + script,
            "simam2_df": [simam2, "run", "ogm-ge", "--fusion", "sum", "--simam2", "--zeta", "learnable",
                          "--modulation", "df", "--workdir", str(data)] + script,
        }
        times = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, cmd in variants.items():
                shutil.rmtree(data / "ckpt", ignore_errors=True)
                times[name].append(_run(cmd, log))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = dict(device="cuda" if torch.cuda.is_available() else "cpu", repeats=args.repeats, times_s=times,
               median_s=med, ratio=med["simam2_df"] / med["vanilla"])
    (args.out / "epoch.json").write_text(json.dumps(res, indent=1))
    print(f"epoch OGM-GE synthetic CREMA-D, 1 epoch, batch 16 ({res['device']}): vanilla {med['vanilla']:.1f} s, "
          f"SimAM² + DF {med['simam2_df']:.1f} s, ratio {res['ratio']:.2f}x (median of {args.repeats}, alternating)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("bandwidth", "syncs", "epoch"):
        s = sub.add_parser(name)
        s.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
        if name == "bandwidth":
            s.add_argument("--shape", type=int, nargs=3, default=[256, 64, 512], metavar=("B", "T", "C"))
            s.add_argument("--repeats", type=int, default=50)
        if name == "syncs":
            s.add_argument("--steps", type=int, default=5)
        if name == "epoch":
            s.add_argument("--repeats", type=int, default=2)
            s.add_argument("--cpu", action="store_true", help="run on the CPU too (slow; a dry run)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    {"bandwidth": bandwidth, "syncs": syncs, "epoch": epoch}[args.what](args)


if __name__ == "__main__":
    main()
