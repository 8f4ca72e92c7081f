"""Why the former toy demo lost (0.589 against 0.654): its task and model, with each part of SimAM²
switched off in turn (docs/results.md, "Diagnosis").

    python benchmarks/diagnose_toy_demo.py [--seeds 5] [--epochs 15]

The task and the training loop are those of the toy ``simam2 demo`` before the study replaced it:
6 classes, 32-dim "audio" features with a clean class signal and "visual" ones with a faint one,
OGM-GE's summation layout ``fc_x(a) + fc_y(v)``, SGD lr 0.05 momentum 0.9, batch 32. The fusion is
vanilla, or the core's :class:`~simam2.core.Summation` with the study's energy variants.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from simam2.adapters.study.models import Attention, _form
from simam2.core import Summation


def make_task(n: int, classes: int, dim: int, seed: int, sample_seed: int, audio_snr=0.3, visual_snr=0.2):
    g = torch.Generator().manual_seed(seed)
    proto_a, proto_v = torch.randn(classes, dim, generator=g), torch.randn(classes, dim, generator=g)
    g = torch.Generator().manual_seed(sample_seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    audio = audio_snr * proto_a[labels] + torch.randn(n, dim, generator=g)
    visual = visual_snr * proto_v[labels] + torch.randn(n, dim, generator=g)
    return audio, visual, labels


class SumModel(nn.Module):
    def __init__(self, dim: int, classes: int, att: Attention | None):
        super().__init__()
        self.audio_net = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.visual_net = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.fc_x, self.fc_y = nn.Linear(64, classes), nn.Linear(64, classes)
        self.fusion = _form(Summation, att, classes) if att is not None else None

    def forward(self, a, v):
        xa, xv = self.fc_x(self.audio_net(a)), self.fc_y(self.visual_net(v))
        return self.fusion(xa, xv) if self.fusion is not None else xa + xv


def run(att: Attention | None, seed: int, epochs: int) -> float:
    (a_tr, v_tr, y_tr), (a_te, v_te, y_te) = make_task(1024, 6, 32, 0, 1), make_task(2048, 6, 32, 0, 2)
    torch.manual_seed(seed)
    model = SumModel(32, 6, att)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(y_tr))
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(a_tr[idx], v_tr[idx]), y_tr[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(a_te, v_te).argmax(1) == y_te).float().mean().item()


VARIANTS = {
    "vanilla sum": None,
    "SimAM², learnable ζ (the toy demo's)": Attention(True, "learnable"),
    "SimAM², fixed ζ (Table 1's +SimAM²)": Attention(True, "fixed"),
    "learnable ζ, no attention (U)": Attention(True, "learnable", energy="none"),
    "fixed ζ, no attention (U = sum / 2)": Attention(True, "fixed", energy="none"),
    "learnable ζ, no degradation term": Attention(True, "learnable", energy="nodeg"),
    "learnable ζ, plain SimAM on U": Attention(True, "learnable", energy="simam_u"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=15)
    ns = p.parse_args(argv)
    torch.set_num_threads(1)
    for name, att in VARIANTS.items():
        accs = [run(att, s, ns.epochs) for s in range(ns.seeds)]
        print(f"{name:<40} {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
