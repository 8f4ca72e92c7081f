"""Issue 12: SimAM², its fusion forms and the modulator under torch.autocast (SPEC §1: statistics in
float32, output in the input dtype) and under torch.compile(fullgraph=True) (no graph break, no
recompilation across batches of one shape, the same numbers as eager)."""

import contextlib
import os

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from simam2.core import ConcatFusion, FiLMFusion, GradientModulator, LateFusion, SimAM2, Summation

DEVICE = torch.device(os.environ.get("SIMAM2_TEST_DEVICE", "cpu"))  # see tests/conftest.py
#: autocast's low-precision dtypes per device: bf16 on CPU; fp16 and bf16 on CUDA
AUTOCAST = [torch.bfloat16] if DEVICE.type == "cpu" else [torch.float16, torch.bfloat16]


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), device="cpu").to(DEVICE)


# (name, fusion, input shapes): every form, 2-D, 3-D and 4-D inputs, fixed and learnable ζ
FORMS = [
    ("summation-fixed-4d", lambda: Summation(16), [(4, 16, 5, 5)] * 2),
    ("simam2-learnable-2d", lambda: SimAM2(16, zeta_mode="learnable"), [(8, 16)] * 2),
    ("film-learnable-3d", lambda: FiLMFusion(16, zeta_mode="learnable"), [(4, 16, 6)] * 3),
    ("concat-learnable-3d", lambda: ConcatFusion(10, 6, zeta_mode="learnable"), [(4, 10, 6), (4, 6, 6)]),
    ("late-learnable", lambda: LateFusion(16, zeta_mode="learnable"), [(4, 3, 16)] * 2),
]


class Wrapped(nn.Module):
    """A fusion fed by one Linear per input (over the last dim), as in a real model: under autocast
    the Linears give the fusion low-precision inputs."""

    def __init__(self, fusion, shapes):
        super().__init__()
        self.pre = nn.ModuleList(nn.Linear(s[-1], s[-1]) for s in shapes)
        self.fusion = fusion

    def forward(self, *xs):
        return self.fusion(*(f(x) for f, x in zip(self.pre, xs)))


@pytest.mark.parametrize("dtype", AUTOCAST)
@pytest.mark.parametrize("name, make, shapes", FORMS, ids=[f[0] for f in FORMS])
def test_forms_under_autocast_are_finite_in_the_input_dtype_and_close_to_float32(name, make, shapes, dtype):
    torch.manual_seed(0)
    model = Wrapped(make(), shapes).to(DEVICE)
    xs = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    ref = model(*xs)
    with torch.autocast(DEVICE.type, dtype=dtype):
        out = model(*xs)
        # float32 inputs inside the autocast region: statistics and output stay float32
        direct = model.fusion(*xs)
    assert out.dtype == dtype  # the Linears gave the fusion `dtype` inputs: SPEC §1 returns that dtype
    assert direct.dtype == torch.float32
    assert torch.isfinite(out).all() and torch.isfinite(direct).all()
    # a bf16 input carries 8 bits of mantissa: the attention on top adds no error of its own
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    torch.testing.assert_close(out.float(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(direct, model.fusion(*xs), rtol=tol, atol=tol)
    out.float().square().sum().backward()
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio, self.visual = nn.Linear(12, 16), nn.Linear(12, 16)
        self.fusion = SimAM2(16, zeta_mode="learnable")
        self.head = nn.Linear(16, 3)

    def forward(self, a, v):
        return self.head(self.fusion(self.audio(a), self.visual(v)))


@pytest.mark.parametrize("dtype", AUTOCAST)
def test_modulator_under_autocast_scales_gradients_by_k(dtype):
    """OGM with Eq. 11's ratio on an autocast step: the audio gradient reaching SGD is k1 times
    the one backward produced (k from ζ's float32 sums), and OGM-GE's noisy step stays finite."""
    torch.manual_seed(0)
    model = TwoBranch().to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mod = GradientModulator({"audio": model.audio.parameters(), "visual": model.visual.parameters()},
                            fusion=model.fusion, alpha=2.0, noise=False)
    handle = mod.attach(opt)
    a, v = randn(8, 12, seed=1), randn(8, 12, seed=2)
    y = torch.arange(8, device=DEVICE) % 3
    with torch.autocast(DEVICE.type, dtype=dtype):
        loss = nn.functional.cross_entropy(model(a, v).float(), y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    k1, k2 = mod.last["k1"], mod.last["k2"]
    assert mod.last["applied"] and torch.isfinite(mod.last["rho_zeta"])
    assert model.fusion.weight_sums.dtype == torch.float32
    for n, p in model.named_parameters():
        k = k1 if n.startswith("audio") else k2 if n.startswith("visual") else 1.0
        torch.testing.assert_close(p.detach(), before[n] - 0.1 * k * grads[n])
    handle.remove()
    ge = GradientModulator({"audio": model.audio.parameters(), "visual": model.visual.parameters()},
                           fusion=model.fusion, alpha=2.0, noise=True, seed=0)
    ge.attach(opt)
    with torch.autocast(DEVICE.type, dtype=dtype):
        loss = nn.functional.cross_entropy(model(a, v).float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


# -- torch.compile ---------------------------------------------------------------------------------

COMPILED = [("fixed", (8, 16)), ("fixed", (4, 16, 3, 3)), ("learnable", (8, 16)), ("learnable", (4, 16, 3, 3))]


@contextlib.contextmanager
def no_recompile_after_first():
    """Counts dynamo's work; after the first call, a recompilation is an error."""
    torch._dynamo.reset()
    counters.clear()
    state = {"first": True}

    def called():
        if state["first"]:
            state["first"] = False
            torch._dynamo.config.error_on_recompile = True

    try:
        yield called
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()


def compiled_matches_eager(zeta, shape, backend, batches=3):
    torch.manual_seed(0)
    eager = SimAM2(16, zeta_mode=zeta).to(DEVICE)
    twin = SimAM2(16, zeta_mode=zeta).to(DEVICE)
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin, fullgraph=True, backend=backend)
    with no_recompile_after_first() as called:
        for i in range(batches):
            x1, x2 = randn(*shape, seed=2 * i), randn(*shape, seed=2 * i + 1)
            xs_c = [x.clone().requires_grad_() for x in (x1, x2)]
            xs_e = [x.clone().requires_grad_() for x in (x1, x2)]
            out_c = compiled(*xs_c)
            called()
            out_e = eager(*xs_e)
            torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
            out_c.square().sum().backward()
            out_e.square().sum().backward()
            for a, b in zip(xs_c, xs_e):
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(twin.var_max, eager.var_max)
            torch.testing.assert_close(twin.r, eager.r)
        assert not counters["graph_break"], dict(counters["graph_break"])
        assert counters["stats"]["unique_graphs"] == 1
    for a, b in zip(twin.parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("zeta, shape", COMPILED)
def test_compiles_whole_without_graph_break_or_recompilation(zeta, shape):
    """Dynamo and AOT autograd (forward and backward graphs), no code generation: fast."""
    compiled_matches_eager(zeta, shape, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("zeta, shape", COMPILED)
def test_inductor_compiles_and_matches_eager(zeta, shape):
    """The same through inductor's generated kernels (about 15 s per case on one CPU core)."""
    compiled_matches_eager(zeta, shape, "inductor")


@pytest.mark.parametrize("made", ["built", "unpickled"])
def test_a_skipped_nan_batch_is_warned_under_torch_compile(made):
    """The skip is decided on the device; the warning comes from an op that reads the counter when
    the compiled graph runs (no graph break). A module saved whole and loaded again warns too."""
    import pickle

    torch.manual_seed(0)
    m = SimAM2(4, zeta_mode="learnable").to(DEVICE)
    if made == "unpickled":
        m = pickle.loads(pickle.dumps(m))
    with no_recompile_after_first() as called:
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
        x1, x2 = randn(8, 4, seed=0), randn(8, 4, seed=1)
        compiled(x1, x2)
        called()
        grown = m.var_max.clone()
        bad = x1.clone()
        bad[3, 1] = float("nan")
        with pytest.warns(RuntimeWarning, match=r"not finite .* in 1 training batch\(es\)"):
            compiled(bad, x2)  # was silent
            if DEVICE != "cpu":
                compiled(x1, x2)  # on an accelerator the warning comes one forward late
        assert not counters["graph_break"], dict(counters["graph_break"])
    torch.testing.assert_close(m.var_max, grown, rtol=0, atol=0)
    assert m.skipped_updates.item() == 1
