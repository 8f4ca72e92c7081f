"""One cell × one seed of the study: train, modulate, record, measure (docs/results.md).

The model trains with the core's modules and the :class:`~simam2.core.GradientModulator` that
``machinery.steps.modulator_for`` makes for every adapter, from the same run options: attached to
the optimizer as a step pre-hook, OGM-GE's decoupled ratio is fed through ``observe_logits`` between
``backward()`` and ``step()`` (the ``+OGM-GE`` rows modulate with it, the decoupling-free rows only
record it beside Eq. 11's), and each modality's encoder parameters are modulated (all of them, or the
weight tensors only: :func:`encoder_groups`). Records follow docs/records.md, written
through the probe's step buffer and ζ histogram (``machinery.steps``).

After training (SPEC §8): the fused test accuracy first; then per-modality accuracy by mean
ablation (``machinery.ablation.MeanAblation``), the other modality's embedding (the fusion input)
replaced by its mean over the training set, taken in one pass in evaluation mode after the last
epoch (the probe's mean is the last training epoch's instead: an upstream's loop gives no such
pass); then a linear probe of each frozen encoder (multinomial logistic regression on its
embeddings, fitted on the training split).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simam2.adapters.machinery.ablation import MeanAblation
from simam2.adapters.machinery.config import Modulation, RunConfig
from simam2.adapters.machinery.records import RecordWriter, status_of
from simam2.adapters.machinery.steps import StepBuffer, modulator_for, zeta_record
from simam2.core import decoupled_ratio

from .data import Pair
from simam2.core.fusion import U_READINGS, ZETA_MODES

from .models import ENERGIES, Alone, Attention, Head, Model, encoder_for


@dataclass(frozen=True)
class MethodSpec:
    """A row of Table 1: the fusion's attention and the modulation (RunConfig's ``none``,
    ``ogm-ge`` or ``df``)."""

    name: str
    att: Attention
    modulation: str = "none"


#: Table 1's five rows with the paper's ζ conventions (SPEC §7): learnable ζ only in the DF row.
METHODS = {
    "baseline": MethodSpec("baseline", Attention()),
    "simam2": MethodSpec("simam2", Attention(True, "fixed")),
    "ogm-ge": MethodSpec("ogm-ge", Attention(), "ogm-ge"),
    "ogm-ge+simam2": MethodSpec("ogm-ge+simam2", Attention(True, "fixed"), "ogm-ge"),
    "df+simam2": MethodSpec("df+simam2", Attention(True, "learnable"), "df"),
    # SPEC §9's temperature control: the Baseline with its fused output scaled by the eq4 row's gain
    "temperature": MethodSpec("temperature", Attention(temperature=True)),
}
#: SPEC §9's rows: Table 1's with both readings wherever ζ is fixed (the DF row learns ζ: one reading)
ROWS = ("baseline", "simam2", "simam2:u=vanilla", "ogm-ge", "ogm-ge+simam2", "ogm-ge+simam2:u=vanilla",
        "df+simam2")
#: SPEC §9's controls, shown beside the rows and never counted in a verdict: temperature alone,
#: plain SimAM on U, Eq. 7 without the degradation term
CONTROLS = ("temperature", "simam2:energy=simam_u", "simam2:energy=nodeg")
#: the diagnosis ablations of docs/results.md (any ``NAME:key=value,...`` works the same way)
DIAGNOSIS = (
    "simam2:energy=none",
    "simam2:zeta=learnable",
    "simam2:energy=nodeg",
    "simam2:energy=simam_u",
    "simam2:lam=0.01",
    "simam2:lam=1",
    "simam2:zeta=learnable,s=0.5",
    "simam2:zeta=learnable,s=10",
    "df+simam2:energy=nodeg",
    "df+simam2:energy=simam_u",
    "df+simam2:energy=none",
)


def parse_method(spec: str) -> MethodSpec:
    """``NAME`` of :data:`METHODS`, optionally ``NAME:key=value,...`` with keys zeta, lam, s, energy, u.

    Every value is checked here, before any path is made from the spec."""
    name, _, rest = spec.partition(":")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)} (optionally NAME:key=value,...)")
    m = METHODS[name]
    if not rest:
        return m
    changes = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or key not in ("zeta", "lam", "s", "energy", "u"):
            raise ValueError(f"method {spec!r}: expected key=value with key zeta, lam, s, energy or u, got {item!r}")
        if key in ("lam", "s"):
            try:
                changes[key] = float(value)
            except ValueError:
                raise ValueError(f"method {spec!r}: {key} must be a number, got {value!r}") from None
            if not math.isfinite(changes[key]) or changes[key] < 0:
                raise ValueError(f"method {spec!r}: {key} must be a finite number >= 0, got {value!r}")
        else:
            allowed = {"zeta": ZETA_MODES, "energy": ENERGIES, "u": U_READINGS}[key]
            if value not in allowed:
                raise ValueError(f"method {spec!r}: {key} must be one of {', '.join(allowed)}, got {value!r}")
            changes[key] = value
    if not m.att.simam2:
        raise ValueError(f"method {spec!r}: {name} has no SimAM² to change")
    att = replace(m.att, **changes)
    if Modulation.named(m.modulation).decoupling_free and att.zeta == "fixed":
        raise ValueError(f"method {spec!r}: decoupling-free modulation needs a learnable ζ")
    return MethodSpec(spec, att, m.modulation)


@dataclass(frozen=True)
class Recipe:
    """The optimisation of one run (OGM-GE's SGD, momentum 0.9, wd 1e-4).

    ``epochs`` is the most epochs a run trains. With ``patience`` (SPEC §9) the run evaluates the
    validation split after every epoch, stops after ``patience`` epochs without a better validation
    accuracy, and reports the test split once, for the model of its best validation epoch; without
    it (``--protocol fixed``) the last epoch is scored. ``lr_step``: lr × 0.1 from that epoch on
    (OGM-GE's StepLR). ``modulate``: which encoder parameters the modulator scales — ``all``, or
    ``weights`` (tensors of two or more dims: no biases, no norm layers, as OGM-GE's 4-D kernels).
    ``score_test``: False for a tuning run, which never reads the test split.
    """

    epochs: int
    batch: int = 64
    lr: float = 0.01
    alpha: float = 0.1
    modulation_start: int = 0
    modulation_end: int = 50
    ge: bool = True
    patience: int | None = None
    lr_step: int | None = None
    modulate: str = "all"
    score_test: bool = True


RECIPES = {"mfeat": Recipe(epochs=20), "avdigits": Recipe(epochs=5, lr=0.05)}
QUICK_EPOCHS = {"mfeat": 8, "avdigits": 2}


def run_config(method: MethodSpec, recipe: Recipe, seed: int, record: Path | None) -> RunConfig:
    att = method.att
    return RunConfig(simam2=att.simam2, zeta=att.zeta, modulation=method.modulation, ge=recipe.ge,
                     alpha=recipe.alpha, modulation_start=recipe.modulation_start,
                     modulation_end=recipe.modulation_end, lam=att.lam, s=att.s, u=att.u, seed=seed,
                     record=record)


def _tensors(pair: Pair):
    t = torch.from_numpy
    return (t(pair.x1_train), t(pair.x2_train), t(pair.y_train)), (t(pair.x1_test), t(pair.x2_test), t(pair.y_test))


def _val_tensors(pair: Pair):
    t = torch.from_numpy
    return (t(pair.x1_val), t(pair.x2_val), t(pair.y_val))


def _batches(n: int, size: int, gen: torch.Generator | None = None):
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return [order[i:i + size] for i in range(0, n, size)]


# -- measurement -----------------------------------------------------------------------------------

@torch.no_grad()
def embed(enc: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([enc(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def evaluate(model: Model, train, test, batch: int = 250, ablate: bool = True, logits: bool = False) -> dict:
    """Fused accuracy, then per-modality accuracy by mean ablation (SPEC §8) and the split heads'.

    The fused logits are computed first and alone, from the same batches as without the ablation,
    so that measuring the per-modality accuracies cannot change the fused one (``ablate=False``
    skips them; ``logits=True`` also returns the fused logits, for the test that holds this).
    """
    model.eval()
    x1, x2, y = test
    a, b = embed(model.enc1, x1), embed(model.enc2, x2)
    idx = _batches(len(y), batch)
    fused = torch.cat([model.head(a[i], b[i]) for i in idx])

    def acc(logits):
        return float((logits.argmax(1) == y).double().mean())

    out = {"n": len(y), "acc": acc(fused)}
    if logits:
        out["logits"] = fused
    if not ablate:
        return out
    ablation = MeanAblation(preserve=[model])
    # the mean over the training set, embedded in evaluation mode after training (SPEC §8)
    ablation.means = (embed(model.enc1, train[0]).mean(0), embed(model.enc2, train[1]).mean(0))
    for i in idx:
        ablation.evaluate(model.head, a[i], b[i])
    alone = ablation.take(model.head)
    only1, only2 = alone.m1, alone.m2
    heads = [model.head.split_logits(a[i], b[i]) for i in idx]
    h1, h2 = torch.cat([h[0] for h in heads]), torch.cat([h[1] for h in heads])
    out.update(acc_m1=acc(only1), acc_m2=acc(only2), acc_head_m1=acc(h1), acc_head_m2=acc(h2))
    return out


def linear_probe(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor,
                 classes: int, l2: float = 1e-3, iters: int = 200) -> float:
    """Test accuracy of a multinomial logistic regression on frozen features (standardised on the
    training split, L2 ``l2``, full-batch L-BFGS from zero: deterministic)."""
    mu, sd = f_train.mean(0, keepdim=True), f_train.std(0, keepdim=True).clamp_min(1e-6)
    xtr, xte = ((f_train - mu) / sd).double(), ((f_test - mu) / sd).double()
    w = torch.zeros(xtr.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(xtr @ w + b, y_train) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xte @ w + b).argmax(1) == y_test).double().mean())


def probes(encoders, train, test, classes: int) -> list[float]:
    out = []
    for k, enc in enumerate(encoders):
        enc.eval()
        out.append(linear_probe(embed(enc, train[k]), train[2], embed(enc, test[k]), test[2], classes))
    return out


# -- training --------------------------------------------------------------------------------------

def _seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def _start(writer: RecordWriter, pair: Pair, config: RunConfig, options: dict) -> None:
    writer.start(upstream="study", script=None, modalities=pair.modalities, metrics=["acc"],
                 config=config.plain(), upstream_options=options)


def train_cell(pair: Pair, fusion: str, method: MethodSpec | str, seed: int, recipe: Recipe,
               record: Path | None = None) -> list[dict]:
    """Train one model of the grid and write its records (returned as well)."""
    method = parse_method(method) if isinstance(method, str) else method
    config = run_config(method, recipe, seed, record)
    writer = RecordWriter(record)
    options = {"dataset": pair.name, "regime": pair.info.get("regime"), "fusion": fusion,
               "method": method.name, "energy": method.att.energy, "epochs": recipe.epochs,
               "batch": recipe.batch, "lr": recipe.lr, "pairing": pair.info.get("pairing"),
               "noise": pair.info.get("noise")}
    if recipe.patience is not None:  # SPEC §9's protocol: what else made this run
        options.update(alpha=recipe.alpha, patience=recipe.patience, lr_step=recipe.lr_step,
                       modulate=recipe.modulate, score_test=recipe.score_test, split=pair.info.get("split"))
    _start(writer, pair, config, options)
    try:
        _train(pair, fusion, method, seed, recipe, writer)
    except BaseException as e:
        writer.end(*status_of(e))
        raise
    writer.end()
    return writer.read()


def encoder_groups(model: Model, modalities, modulate: str) -> dict:
    """Each modality's encoder parameters that the modulator scales: all of them, or (SPEC §9) the
    weight tensors of two or more dims only, as OGM-GE scales its 4-D conv kernels only."""
    if modulate not in ("all", "weights"):
        raise ValueError(f"modulate must be 'all' or 'weights', got {modulate!r}")
    pick = (lambda p: True) if modulate == "all" else (lambda p: p.dim() >= 2)
    return {modalities[0]: [p for p in model.enc1.parameters() if pick(p)],
            modalities[1]: [p for p in model.enc2.parameters() if pick(p)]}


class EarlyStopping:
    """SPEC §9: keep the state of the best validation epoch; stop after ``patience`` epochs without a
    better one (strictly better: a tie keeps the earlier epoch)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_acc, self.best_epoch, self.state = -1.0, -1, None

    def update(self, epoch: int, acc: float, model: nn.Module) -> bool:
        """Record epoch ``epoch``'s validation accuracy; True when training should stop."""
        if acc > self.best_acc:
            self.best_acc, self.best_epoch = acc, epoch
            self.state = copy.deepcopy(model.state_dict())
        return epoch - self.best_epoch >= self.patience

    def observe(self, writer: RecordWriter, epoch: int, acc: float, n: int, model: nn.Module) -> bool:
        """:meth:`update`, with the epoch's validation evaluation written to the records."""
        writer.write("eval", epoch=epoch, evaluation=epoch, split="val", n=n, acc=acc)
        return self.update(epoch, acc, model)

    def restore(self, writer: RecordWriter, model: nn.Module, epochs_run: int) -> None:
        """Say where training stopped and put the best validation epoch's state back into ``model``."""
        writer.write("note", what="early_stopping", best_epoch=self.best_epoch, val_acc=self.best_acc,
                     epochs_run=epochs_run)
        model.load_state_dict(self.state)


def _train(pair, fusion, method, seed, recipe, writer):
    gen = _seed(seed)
    train, test = _tensors(pair)
    x1, x2, y = train
    model = Model(encoder_for(x1), encoder_for(x2), Head(fusion, pair.classes, method.att))
    att = model.head.attention
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, recipe.lr_step, 0.1) if recipe.lr_step else None
    stopper = EarlyStopping(recipe.patience) if recipe.patience is not None else None
    if stopper is not None and not pair.has_val:
        raise ValueError("early stopping needs a validation split (load the data with val=True)")
    val = _val_tensors(pair) if stopper is not None else None
    mod = modulator_for(run_config(method, recipe, seed, None),
                        lambda: encoder_groups(model, pair.modalities, recipe.modulate), att)
    if mod is not None:
        mod.attach(opt)
    buf = StepBuffer(dtype=torch.float64)  # r at the core's float64 (its results were recorded so)
    criterion = nn.CrossEntropyLoss()
    last = recipe.epochs - 1
    for epoch in range(recipe.epochs):
        model.train()
        if mod is not None:
            mod.epoch = epoch
        for idx in _batches(len(y), recipe.batch, gen):
            if len(idx) < 2:
                continue  # BatchNorm and r's batch variance need two samples
            a, b, out = model(x1[idx], x2[idx])
            loss = criterion(out, y[idx])
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                l1, l2 = model.head.split_logits(a.detach(), b.detach())
            rho_dec = mod.observe_logits(l1, l2, y[idx]) if mod is not None else decoupled_ratio(l1, l2, y[idx])
            opt.step()  # the modulator's pre-hook rescales the encoders' gradients first
            applied = mod is not None and mod.last.get("applied")
            zeta = att.zeta if att is not None else None
            buf.add(epoch, loss=loss, rho_df=att.weight_sums[0] / att.weight_sums[1] if att is not None else None,
                    rho_decoupled=rho_dec, k1=mod.last["k1"] if applied else None,
                    k2=mod.last["k2"] if applied else None, r=att.r if att is not None else None,
                    zeta_mean=zeta.mean() if zeta is not None else None)
        buf.flush(writer.write)
        if att is not None and att.zeta is not None:
            zeta_record(writer.write, epoch, att.zeta)
        if sched is not None:
            sched.step()
        if stopper is not None:
            if stopper.observe(writer, epoch, evaluate(model, None, val, ablate=False)["acc"], len(val[2]), model):
                last = epoch
                break
    if stopper is not None:
        stopper.restore(writer, model, last + 1)
        if not recipe.score_test:
            return  # a tuning run: the test split is never read
    metrics = evaluate(model, train, test)
    epoch = stopper.best_epoch if stopper is not None else recipe.epochs - 1
    writer.write("eval", epoch=epoch, evaluation=0 if stopper is None else last + 1, split="test", **metrics)
    p1, p2 = probes((model.enc1, model.enc2), train, test, pair.classes)
    writer.write("note", what="linear_probe", probe_m1=p1, probe_m2=p2)


def train_alone(pair: Pair, modality: int, seed: int, recipe: Recipe, record: Path | None = None) -> list[dict]:
    """Modality ``modality`` (1 or 2)'s encoder trained alone with a linear classifier, same recipe;
    its test accuracy and the linear probe of its encoder (the reference of the probes)."""
    config = RunConfig(seed=seed, record=record, alpha=recipe.alpha)
    writer = RecordWriter(record)
    options = {"dataset": pair.name, "regime": pair.info.get("regime"), "fusion": None,
               "method": f"alone-m{modality}", "epochs": recipe.epochs, "batch": recipe.batch, "lr": recipe.lr,
               "noise": pair.info.get("noise")}
    if recipe.patience is not None:
        options.update(patience=recipe.patience, lr_step=recipe.lr_step, score_test=recipe.score_test,
                       split=pair.info.get("split"))
    _start(writer, pair, config, options)
    try:
        gen = _seed(seed)
        train, test = _tensors(pair)
        k = modality - 1
        x, y = train[k], train[2]
        model = Alone(encoder_for(x), pair.classes)
        opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.StepLR(opt, recipe.lr_step, 0.1) if recipe.lr_step else None
        stopper = EarlyStopping(recipe.patience) if recipe.patience is not None else None
        val = _val_tensors(pair) if stopper is not None else None
        buf = StepBuffer(dtype=torch.float64)
        last = recipe.epochs - 1
        for epoch in range(recipe.epochs):
            model.train()
            for idx in _batches(len(y), recipe.batch, gen):
                if len(idx) < 2:
                    continue
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                buf.add(epoch, loss=loss)
            buf.flush(writer.write)
            if sched is not None:
                sched.step()
            if stopper is not None:
                model.eval()
                with torch.no_grad():
                    acc = float((model(val[k]).argmax(1) == val[2]).double().mean())
                if stopper.observe(writer, epoch, acc, len(val[2]), model):
                    last = epoch
                    break
        if stopper is not None:
            stopper.restore(writer, model, last + 1)
        if stopper is None or recipe.score_test:
            model.eval()
            with torch.no_grad():
                acc = float((model(test[k]).argmax(1) == test[2]).double().mean())
            writer.write("eval", epoch=stopper.best_epoch if stopper else recipe.epochs - 1,
                         evaluation=0 if stopper is None else last + 1, split="test", n=len(test[2]), acc=acc,
                         **{f"acc_m{modality}": acc, f"acc_m{3 - modality}": None})
            probe = probes((model.enc,), (train[k], None, train[2]), (test[k], None, test[2]), pair.classes)[0]
            writer.write("note", what="linear_probe", **{f"probe_m{modality}": probe})
    except BaseException as e:
        writer.end(*status_of(e))
        raise
    writer.end()
    return writer.read()
