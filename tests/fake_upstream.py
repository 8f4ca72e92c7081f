"""A fake fifth upstream, written to a folder at test time, and its declaration as a spec.

The upstream is a small two-modality classifier trained by its own ``main.py`` (the pattern of the
real ones: the model is built from ``models.net``, the fusion from ``models.fusion``, an evaluation
function computes its accuracy). The spec (:class:`FakeSpec`) is all an adapter of it needs: which
classes are replaced, which parameters are each modality's, where ζ, the logits, the epoch and the
labels come from.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from torch import nn

from simam2.adapters.machinery import Replacement, Spec
from simam2.adapters.machinery.layers import InitShim, named
from simam2.core import Summation

FILES = {
    "models/__init__.py": "",
    "models/fusion.py": """
        from torch import nn


        class SumFusion(nn.Module):
            def __init__(self, dim, classes):
                super(SumFusion, self).__init__()
                self.fc_x = nn.Linear(dim, classes)
                self.fc_y = nn.Linear(dim, classes)

            def forward(self, x, y):
                return x, y, self.fc_x(x) + self.fc_y(y)
    """,
    "models/net.py": """
        import torch
        from torch import nn

        from .fusion import SumFusion


        class Net(nn.Module):
            def __init__(self, classes=3):
                super(Net, self).__init__()
                self.enc_a = nn.Linear(4, 8)
                self.enc_b = nn.Linear(6, 8)
                self.fusion = SumFusion(8, classes)

            def forward(self, a, b):
                return self.fusion(torch.relu(self.enc_a(a)), torch.relu(self.enc_b(b)))


        def evaluate(model, a, b, y):
            model.eval()
            with torch.no_grad():
                out = model(a, b)[2]
            return float((out.argmax(1) == y).float().mean())
    """,
    "main.py": """
        import argparse

        import torch
        from torch import nn

        from models.net import Net, evaluate

        parser = argparse.ArgumentParser()
        parser.add_argument("--epochs", type=int, default=2)
        parser.add_argument("--lr", type=float, default=0.1)
        parser.add_argument("--fail", action="store_true")
        args = parser.parse_args()
        if args.fail:
            raise SystemExit(3)
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        y = torch.arange(48) % 3
        a = torch.randn(48, 4, generator=g) + 1.5 * nn.functional.one_hot(y, 4).float()
        b = torch.randn(48, 6, generator=g) + 0.5 * nn.functional.one_hot(y, 6).float()
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
        criterion = nn.CrossEntropyLoss()
        for epoch in range(args.epochs):
            model.train()
            for i in range(0, 48, 16):
                opt.zero_grad()
                loss = criterion(model(a[i:i + 16], b[i:i + 16])[2], y[i:i + 16])
                loss.backward()
                opt.step()
            print(f"epoch {epoch} loss {loss.item():.6f} acc {evaluate(model, a, b, y):.6f}")
    """,
}


def write_fake_upstream(root: Path) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


class FakeSpec(Spec):
    """The fake upstream declared: SimAM² in its summation, its encoders as the modality groups."""

    name = "fake"
    upstream = "fake"
    script = "main.py"
    modalities = ("a", "b")
    metrics = ("acc",)
    epoch_source = "train_calls"
    criterion = nn.CrossEntropyLoss

    def replacements(self, run):
        import models.fusion as fusion
        import models.net as net

        config, probe = run.config, run.probe
        upstream_net, upstream_fusion = net.Net, fusion.SumFusion

        class RecordedNet(InitShim, upstream_net):
            def __init__(self, classes=3):
                upstream_net.__init__(self, classes)
                run.register_model(self)

            def train(self, mode=True):
                if probe.model is self:
                    probe.on_mode(bool(mode))
                return super().train(mode)

        class Fusion(InitShim, upstream_fusion):
            def __init__(self, dim, classes):
                upstream_fusion.__init__(self, dim, classes)
                self.simam2 = Summation(classes, zeta_mode=config.zeta, lam=config.lam, s=config.s) if config.simam2 else None

            def forward(self, x, y):
                if self.training:
                    probe.on_fusion_inputs(x, y)
                out = super().forward(x, y)[2] if self.simam2 is None else self.simam2(self.fc_x(x), self.fc_y(y))
                if not self.training:
                    probe.on_eval_fusion_inputs(x, y)
                return x, y, out

        def evaluate(model, a, b, y):
            acc = net_evaluate(model, a, b, y)
            score = lambda logits: {"acc": float((logits.argmax(1) == y).float().mean())}  # noqa: E731
            probe.record_eval("test", len(y), acc=acc, **probe.modality_metrics(score))
            return acc

        net_evaluate = net.evaluate
        return [Replacement("models.net", "Net", named(RecordedNet, "RecordedNet")),
                Replacement("models.net", "SumFusion", named(Fusion, "Fusion")),
                Replacement("models.net", "evaluate", evaluate)]

    def groups(self, model):
        return {"a": list(model.enc_a.parameters()), "b": list(model.enc_b.parameters())}

    def fusion(self, model):
        return model.fusion.simam2

    def head(self, model, x1, x2):
        return model.fusion(x1, x2)[2]

    def modality_logits(self, model, x1, x2):
        return model.fusion.fc_x(x1), model.fusion.fc_y(x2)

    def labels(self, probe, args):
        return args[1] if len(args) >= 2 and torch.is_tensor(args[1]) else None


SPEC = FakeSpec()
