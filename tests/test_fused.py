"""The one-node K = 2 attention (core/fused.py) against the op-by-op reference (SPEC §1–§3)."""

import math

from pathlib import Path

import pytest
import torch

import simam2.core.fused as fused
import simam2.core.fusion as fusion
from simam2.core import MultiSimAM2, SimAM2, fused_energy, pair_kernel, superpose
from simam2.core.energy import resolve_neuron_dims
from simam2.core.fused import fused_pair_attention, moment_pair_attention, pair_weights


def reference_pair(x1, x2, weights, r, lam, neuron_dims=None):
    """Eq. 4, 7, 8 through the reference functions, differentiated by autograd."""
    dims = resolve_neuron_dims(x1, neuron_dims)
    u = superpose([x1, x2], weights)
    return torch.sigmoid(fused_energy([x1, x2], weights, u, r, lam, dims)) * u


def inputs(shape, seed=0, weights="pair", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    dev = torch.get_default_device()  # SIMAM2_TEST_DEVICE (tests/conftest.py); drawn on the CPU
    x1 = torch.randn(shape, generator=g, dtype=dtype, device="cpu").to(dev).requires_grad_()
    x2 = (0.5 * torch.randn(shape, generator=g, dtype=dtype, device="cpu") + 0.3).to(dev).requires_grad_()
    zeta = torch.rand(shape[:2], generator=g, dtype=dtype, device="cpu").to(dev)
    if weights == "pair":  # ζ, 1 − ζ, as SimAM2 builds them
        w = pair_weights(zeta)
    elif weights == "interleaved":  # any (B, C, 2) layout, e.g. MultiSimAM2's softmax
        w = torch.stack([zeta, 1 - zeta], dim=-1)
    else:  # given weights that need not sum to one
        w = torch.rand(shape[:2] + (2,), generator=g, dtype=dtype, device="cpu").to(dev)
    return x1, x2, w.detach().requires_grad_()


def assert_matches(outputs, wrt) -> None:
    """``outputs = (ours, reference)``: equal, and so are their gradients with respect to ``wrt``
    (float64 precision)."""
    ours, ref = outputs
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for gf, gr in zip(grads(ours, wrt), grads(ref, wrt)):
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12)


def grads(out, tensors, seed=1):
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype, device="cpu")
    upstream = upstream.to(out.device)
    return torch.autograd.grad(out, tensors, upstream)


CASES = [
    ((6, 8), None),  # 2-D: the C features are the neurons
    ((4, 3, 7), None),  # 3-D: a sequence per channel
    ((3, 4, 5, 6), None),  # 4-D: a feature map per channel
    ((3, 4, 5, 6), (1, 3)),  # custom neuron dims, not trailing
    ((4, 3, 5), (-1,)),
    ((5, 3, 4), (0,)),  # neurons across the batch
]


@pytest.mark.parametrize("shape, neuron_dims", CASES)
@pytest.mark.parametrize("layout", ["pair", "interleaved", "free"])
@pytest.mark.parametrize("scale_always", [False, True], ids=["scaled-on-overflow", "scaled-always"])
def test_equals_reference_forward_and_every_gradient(monkeypatch, shape, neuron_dims, layout, scale_always):
    """Both paths of the node: scaled only where squares overflow (the CPU's), and always (an
    accelerator's)."""
    monkeypatch.setattr(fused, "SCALE_ALWAYS", scale_always)
    x1, x2, w = inputs(shape, weights=layout)
    r = torch.tensor(0.37, dtype=torch.float64)
    fast = fused_pair_attention(x1, x2, w, r, 1e-3, neuron_dims)
    ref = reference_pair(x1, x2, w, r, 1e-3, neuron_dims)
    assert_matches((fast, ref), (x1, x2, w))


def test_fixed_weights_take_no_gradient_and_inputs_still_do():
    x1, x2, _ = inputs((4, 6))
    w = torch.full((4, 6, 2), 0.5, dtype=torch.float64)  # fixed ζ = 0.5, no grad
    r = torch.tensor(0.76, dtype=torch.float64)
    fast, ref = fused_pair_attention(x1, x2, w, r, 1e-6), reference_pair(x1, x2, w, r, 1e-6)
    for gf, gr in zip(grads(fast, (x1, x2)), grads(ref, (x1, x2))):
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12)
    only_x2 = fused_pair_attention(x1.detach(), x2, w, r, 1e-6)
    ref_x2 = reference_pair(x1.detach(), x2, w, r, 1e-6)
    torch.testing.assert_close(grads(only_x2, (x2,))[0], grads(ref_x2, (x2,))[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4)])
def test_gradcheck(shape):
    x1, x2, w = inputs(shape, seed=3, weights="free")
    r = torch.tensor(0.2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: fused_pair_attention(a, b, c, r, 1e-2), (x1, x2, w))


@pytest.mark.parametrize("scale_always", [False, True], ids=["scaled-on-overflow", "scaled-always"])
def test_clamped_variance_matches_reference_gradient(monkeypatch, scale_always):
    """A channel whose variance is below EPS: the clamp holds q fixed, and so must the backward."""
    monkeypatch.setattr(fused, "SCALE_ALWAYS", scale_always)
    x1, x2, w = inputs((3, 8))
    with torch.no_grad():
        x1[0] = 1 + 1e-8 * torch.arange(8, dtype=torch.float64)  # var ≈ 6e-16 < EPS
    r = torch.tensor(0.5, dtype=torch.float64)
    fast, ref = fused_pair_attention(x1, x2, w, r, 0.0), reference_pair(x1, x2, w, r, 0.0)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    for gf, gr in zip(grads(fast, (x1, x2, w)), grads(ref, (x1, x2, w))):
        torch.testing.assert_close(gf, gr, rtol=1e-9, atol=1e-9)


def test_constant_input_is_finite():
    x = torch.full((4, 3, 5), 2.0, requires_grad=True)
    w = pair_weights(torch.full((4, 3), 0.5)).requires_grad_()
    out = fused_pair_attention(x, x, w, torch.tensor(0.0), 0.0)
    assert torch.isfinite(out).all()
    gx, gw = grads(out, (x, w))
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
    torch.testing.assert_close(out, reference_pair(x, x, w, torch.tensor(0.0), 0.0))


@pytest.mark.parametrize("shape, neuron_dims", [((3, 5), None), ((2, 3, 4), None), ((3, 2, 4), (0,))])
def test_second_derivatives_equal_the_reference(shape, neuron_dims):
    """Double backward runs through the reference: exact, even when the incoming gradient has no
    graph (``grad(out.sum(), x, create_graph=True)``), where a once-differentiable node would
    silently drop SimAM²'s second-order term."""
    x1, x2, w = inputs(shape, seed=4, weights="free")
    r = torch.tensor(0.3, dtype=torch.float64)
    for f in (lambda o: o.sum(), lambda o: o.square().sum()):  # incoming gradient without / with a graph
        gg = []
        for attend in (fused_pair_attention, reference_pair):
            (g,) = torch.autograd.grad(f(attend(x1, x2, w, r, 1e-3, neuron_dims)), x1, create_graph=True)
            gg.append(torch.autograd.grad(g.square().sum(), (x1, x2, w)))
        for a, b in zip(*gg):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert torch.autograd.gradgradcheck(
        lambda a, b, c: fused_pair_attention(a, b, c, r, 1e-2, neuron_dims), (x1, x2, w))


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-30])
@pytest.mark.parametrize("shape", [(4, 16), (2, 3, 5, 5)])
def test_huge_and_tiny_inputs_give_the_scaled_result(scale, shape):
    """Importance is scale-invariant up to λ: inputs times 1e20 (where float32 (x − μ)² overflows)
    give finite output equal to the float64 result, and so do the gradients."""
    x1, x2, w = inputs(shape, seed=6)
    r = torch.tensor(0.4)
    big1, big2 = (x.detach().float().mul(scale).requires_grad_() for x in (x1, x2))
    w32 = w.detach().float().requires_grad_()
    out = fused_pair_attention(big1, big2, w32, r, 0.0)
    assert torch.isfinite(out).all()
    exact = fused_pair_attention(big1.double(), big2.double(), w32.double(), r.double(), 0.0)
    torch.testing.assert_close(out.double() / scale, exact / scale, rtol=1e-4, atol=1e-5)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), device="cpu").to(out.device)
    for g, ge in zip(torch.autograd.grad(out, (big1, big2, w32), upstream),
                     torch.autograd.grad(exact, (big1, big2, w32), upstream.double())):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), ge.double(), rtol=1e-3, atol=1e-3 * ge.abs().max().item())
    # and through the module, in float32 with λ = 1e-6: λ is negligible at this scale
    m = SimAM2(shape[1], zeta_mode="learnable")
    assert torch.isfinite(m(big1, big2)).all()


def test_backward_leaves_saved_tensors_intact_for_a_retained_graph():
    x1, x2, w = inputs((4, 3, 5), weights="free")
    out = fused_pair_attention(x1, x2, w, torch.tensor(0.3, dtype=torch.float64), 1e-6)
    upstream = torch.randn(out.shape, dtype=out.dtype)
    first = torch.autograd.grad(out, (x1, x2, w), upstream, retain_graph=True)
    second = torch.autograd.grad(out, (x1, x2, w), upstream)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_input_is_a_clear_error():
    x = torch.randn(2, 3, 4)
    w = torch.rand(2, 3, 2)
    with pytest.raises(ValueError, match="one shape"):
        fused_pair_attention(x, x[:, :2], w, 0.1, 0.0)
    with pytest.raises(ValueError, match=r"\(B, C, 2\)"):
        fused_pair_attention(x, x, w[..., :1], 0.1, 0.0)
    with pytest.raises(ValueError, match="at least float32"):
        fused_pair_attention(x.half(), x.half(), w.half(), 0.1, 0.0)
    with pytest.raises(ValueError, match="one floating dtype"):
        fused_pair_attention(x, x.double(), w, 0.1, 0.0)
    with pytest.raises(ValueError, match="at least 2 neurons"):
        fused_pair_attention(x[..., :1], x[..., :1], w, 0.1, 0.0)


# -- through the modules: the fast path is taken for K = 2 and changes nothing ------------------


def uses_fused_node(out) -> bool:
    """Whether the graph behind ``out`` holds the fused node (behind at most a few view nodes)."""
    fn = out.grad_fn
    for _ in range(4):
        if fn is None:
            return False
        if type(fn).__name__ == "PairEnergyAttentionBackward" or fn.name().endswith("<ZetaPairNode>"):
            return True
        fn = fn.next_functions[0][0]
    return False


def twin_modules(cls, *args, **kwargs):
    torch.manual_seed(0)
    fast = cls(*args, **kwargs).double()
    ref = cls(*args, **kwargs).double()
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (SimAM2, dict(channels=6, zeta_mode="learnable"), (5, 6, 4)),
        (SimAM2, dict(channels=6, zeta_mode="fixed"), (5, 6)),
        (MultiSimAM2, dict(channels=3, modalities=2, zeta_mode="learnable"), (4, 3, 2, 3)),
    ],
)
def test_modules_take_the_fast_path_and_match_the_reference(monkeypatch, cls, kwargs, shape):
    fast, ref = twin_modules(cls, **kwargs)
    x1, x2, _ = inputs(shape, seed=5)
    out = fast(x1, x2)
    assert uses_fused_node(out)
    params = [x1, x2] + list(fast.parameters())
    g_fast = grads(out, params)
    monkeypatch.setattr(fusion, "fused_pair_attention", reference_pair)
    monkeypatch.setattr(fusion, "fused_zeta_attention",
                        lambda x1, x2, zeta, r, lam, dims: reference_pair(x1, x2, pair_weights(zeta), r, lam, dims))
    out_ref = ref(x1, x2)
    assert not uses_fused_node(out_ref)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.var_max, ref.var_max, rtol=1e-12, atol=0)
    assert fast.r.item() == pytest.approx(ref.r.item(), rel=1e-12)
    for gf, gr in zip(g_fast, grads(out_ref, [x1, x2] + list(ref.parameters()))):
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_finite_and_close_to_float32(dtype):
    torch.manual_seed(0)
    m = SimAM2(16, zeta_mode="learnable")
    x1, x2 = torch.randn(2, 8, 16, 5)
    out32 = m(x1, x2)
    lo1, lo2 = x1.to(dtype).requires_grad_(), x2.to(dtype).requires_grad_()
    out = m(lo1, lo2)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert lo1.grad.dtype == dtype and torch.isfinite(lo1.grad).all() and torch.isfinite(lo2.grad).all()
    torch.testing.assert_close(out.float(), out32.detach(), rtol=0.05, atol=0.05)


# -- issue 19: the CPU kernel, its PyTorch fallback, the traced moment algebra --------------------

needs_kernel = pytest.mark.skipif(
    torch.get_default_device().type != "cpu" or pair_kernel.kernel() is None,
    reason="the CPU kernel is opt-in (SIMAM2_CPU_KERNEL=1; it needs a C++ compiler) and these tests run on the CPU")


class Spy:
    """Counts the kernel's calls (the compiled module's functions cannot be patched one by one)."""

    def __init__(self, module):
        self.module, self.calls = module, []

    def __getattr__(self, name):
        fn = getattr(self.module, name)

        def counted(*args):
            self.calls.append(name)
            return fn(*args)

        return counted


@needs_kernel
@pytest.mark.parametrize("shape, neuron_dims", [((6, 8), None), ((3, 4, 5, 6), None), ((4, 3, 5), (-1,)),
                                                ((2, 3, 4, 5), (3,)), ((3, 4, 5), (1, 2)),
                                                ((2, 3, 40, 30), None), ((3, 1100), None)])
def test_the_kernel_runs_where_the_neuron_dims_trail_and_equals_the_reference(monkeypatch, shape, neuron_dims):
    """(6, 8): ζ varies along the neurons (U's own moments); (3, 4, 5, 6) and (4, 3, 5): ζ constant
    over each channel (U's moments from x1's and x2's); (2, 3, 4, 5) over dim 3: a channel per
    (b, c, h), ζ's gradient summed over h; (3, 4, 5) over C and S: ζ varies along the neurons;
    (2, 3, 40, 30) and (3, 1100): channels longer than the forward's block of 512 neurons (two
    full blocks and a partial one), per channel and per neuron."""
    spy = Spy(pair_kernel.kernel())
    monkeypatch.setattr(pair_kernel, "kernel", lambda: spy)
    x1, x2, w = inputs(shape, weights="free")
    r = torch.tensor(0.37, dtype=torch.float64)
    fast = fused_pair_attention(x1, x2, w, r, 1e-3, neuron_dims)
    ref = reference_pair(x1, x2, w, r, 1e-3, neuron_dims)
    assert_matches((fast, ref), (x1, x2, w))
    assert spy.calls == ["pair_forward", "pair_backward"]


@pytest.mark.parametrize("shape, neuron_dims", CASES)
def test_the_pytorch_path_equals_the_reference_where_no_kernel_is_built(monkeypatch, shape, neuron_dims):
    monkeypatch.setattr(pair_kernel, "available", lambda: False)
    x1, x2, w = inputs(shape, weights="free")
    r = torch.tensor(0.37, dtype=torch.float64)
    fast = fused_pair_attention(x1, x2, w, r, 1e-3, neuron_dims)
    assert uses_fused_node(fast)
    ref = reference_pair(x1, x2, w, r, 1e-3, neuron_dims)
    assert_matches((fast, ref), (x1, x2, w))


@pytest.mark.parametrize("shape, neuron_dims", CASES)
@pytest.mark.parametrize("layout", ["pair", "free"])
def test_moment_algebra_equals_the_reference(shape, neuron_dims, layout):
    """What torch.compile traces off the CPU: forward and every gradient, in float64."""
    x1, x2, w = inputs(shape, weights=layout)
    r = torch.tensor(0.37, dtype=torch.float64)
    ours = moment_pair_attention(x1, x2, w, r, 1e-3, neuron_dims)
    ref = reference_pair(x1, x2, w, r, 1e-3, neuron_dims)
    assert_matches((ours, ref), (x1, x2, w))


def test_moment_algebra_second_derivatives_are_exact():
    x1, x2, w = inputs((3, 2, 4), seed=4, weights="free")
    r = torch.tensor(0.3, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda a, b, c: moment_pair_attention(a, b, c, r, 1e-2), (x1, x2, w))


KERNEL_NODE = pytest.param("node", marks=needs_kernel)  # without the opt-in kernel the node is today's path


@pytest.mark.parametrize("attend", [KERNEL_NODE, "moments"])
@pytest.mark.parametrize("outlier", [False, True], ids=["offset", "offset-and-outlying-pilot"])
def test_shifted_moments_keep_float32_exact_far_from_zero(attend, outlier):
    """Moments of x − (the first neuron): a channel at 1e4 with spread 1e-2 (float32 Σx² would hold
    no digit of its variance), and one whose first neuron lies 1e3 spreads out. Float32 inputs give
    the float64 reference's numbers on the same values, output and input gradients to float32's
    precision (the op-by-op reference in float32 is off by 3 % and 10 %: it rounds the mean at the
    scale of x); ζ's gradient, a sum of products with x itself, at least twice as close as it."""
    g = torch.Generator().manual_seed(7)
    x1 = (1e4 + 1e-2 * torch.randn(4, 8, 6, 6, generator=g)).float()
    x2 = (-3e3 + 1e-1 * torch.randn(4, 8, 6, 6, generator=g)).float()
    if outlier:
        x1[:, :, 0, 0] += 10.0
    w = pair_weights(torch.rand(4, 8, generator=g)).float()
    x1, x2, w = (t.requires_grad_() for t in (x1, x2, w))
    r = torch.tensor(0.4)
    fn = fused_pair_attention if attend == "node" else moment_pair_attention
    out = fn(x1, x2, w, r, 1e-6)
    ref = reference_pair(*(t.double() for t in (x1, x2, w)), r.double(), 1e-6)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-2)
    upstream = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad(out, (x1, x2, w), upstream)
    exact = torch.autograd.grad(ref, (x1, x2, w), upstream.double())
    today = torch.autograd.grad(reference_pair(x1, x2, w, r, 1e-6), (x1, x2, w), upstream)
    for a, b in zip(got[:2], exact[:2]):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5 * b.abs().max().item())
    assert (got[2] - exact[2]).abs().max() < 0.5 * (today[2] - exact[2]).abs().max()


@pytest.mark.parametrize("attend", [pytest.param(fused_pair_attention, marks=needs_kernel, id="node"),
                                    pytest.param(moment_pair_attention, id="moments")])
def test_float64_beyond_its_squares_gives_the_scaled_result(attend):
    """In float64, (x − μ)² overflows from |x| ≈ 1e154 on: scaled by a power of two, the output of
    inputs times 1e200 is 1e200 times that of the inputs (λ = 0: importance is scale-invariant)."""
    x1, x2, w = inputs((3, 4, 5, 5), seed=8)
    r = torch.tensor(0.4, dtype=torch.float64)
    big1, big2 = (x.detach().mul(1e200).requires_grad_() for x in (x1, x2))
    out = attend(big1, big2, w, r, 0.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out / 1e200, reference_pair(x1, x2, w, r, 0.0), rtol=1e-10, atol=1e-12)
    g1, _, gw = torch.autograd.grad(out, (big1, big2, w), torch.ones_like(out))
    ref = torch.autograd.grad(reference_pair(x1, x2, w, r, 0.0), (x1, x2, w), torch.ones_like(out))
    torch.testing.assert_close(g1, ref[0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gw / 1e200, ref[2], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("attend", [fused_pair_attention, moment_pair_attention], ids=["node", "moments"])
def test_float64_below_its_squares_matches_the_reference(attend):
    """Inputs times 1e-200, whose squares vanish in float64: the variance is far below EPS, so
    SPEC §1's floor holds, as in the reference (which scales too); finite, and the same numbers."""
    x1, x2, w = inputs((3, 4, 5, 5), seed=8)
    r = torch.tensor(0.4, dtype=torch.float64)
    tiny1, tiny2 = (x.detach().mul(1e-200).requires_grad_() for x in (x1, x2))
    out, ref = attend(tiny1, tiny2, w, r, 0.0), reference_pair(tiny1, tiny2, w, r, 0.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=0)
    for a, b in zip(torch.autograd.grad(out, (tiny1, w), torch.ones_like(out)),
                    torch.autograd.grad(ref, (tiny1, w), torch.ones_like(out))):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=0)


@needs_kernel
@pytest.mark.parametrize("upstream", ["sum", "strided", "dense"])
def test_kernel_backward_takes_any_upstream_layout(upstream):
    """The gradient of a sum is an expanded scalar (stride 0), a transposed one has no unit stride."""
    x1, x2, w = inputs((4, 3, 5, 6), seed=9, weights="free")
    r = torch.tensor(0.2, dtype=torch.float64)
    fast, ref = fused_pair_attention(x1, x2, w, r, 1e-6), reference_pair(x1, x2, w, r, 1e-6)
    if upstream == "sum":
        gf, gr = torch.autograd.grad(fast.sum(), (x1, x2, w)), torch.autograd.grad(ref.sum(), (x1, x2, w))
    else:
        g = torch.randn(4, 3, 6, 5, dtype=torch.float64).transpose(-1, -2) if upstream == "strided" \
            else torch.randn(4, 3, 5, 6, dtype=torch.float64)
        gf, gr = torch.autograd.grad(fast, (x1, x2, w), g), torch.autograd.grad(ref, (x1, x2, w), g)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-operator", "moment-algebra"])
def test_compiled_node_equals_the_reference_without_graph_break(monkeypatch, kernel):
    """Under torch.compile (AOT autograd, no code generation): on the CPU the kernel as one custom
    operator; without it, the traced moment algebra. Forward and gradients in float64."""
    if kernel and pair_kernel.kernel() is None:
        pytest.skip("the CPU kernel is not built here")
    if not kernel:
        monkeypatch.setattr(pair_kernel, "available", lambda: False)
    torch._dynamo.reset()
    x1, x2, w = inputs((3, 4, 5, 6), seed=10, weights="free")
    r = torch.tensor(0.3, dtype=torch.float64)
    compiled = torch.compile(lambda a, b, c: fused_pair_attention(a, b, c, r, 1e-3), backend="aot_eager",
                             fullgraph=True)
    out, ref = compiled(x1, x2, w), reference_pair(x1, x2, w, r, 1e-3)
    assert_matches((out, ref), (x1, x2, w))
    torch._dynamo.reset()


# -- issue 19, round two: the module around the node, the kernel's weights, its fallback -----------

@pytest.mark.parametrize("device_side", [False, True], ids=["host", "device"])
def test_the_gate_finiteness_check_reads_the_gate_input_not_every_input(monkeypatch, device_side):
    """No full-size pass on the hot path: the learnable gate's check looks at its (B, K·C) input,
    and still catches an inf input, decided on the host or (as on an accelerator) on the device."""
    if device_side:
        monkeypatch.setattr(fusion, "_host_readable", lambda t: False)
    torch.manual_seed(0)
    m = SimAM2(4, zeta_mode="learnable")
    x1, x2 = torch.randn(2, 8, 4, 6, 6)
    seen = []
    real = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: seen.append(t.numel()) or real(t))
    m(x1, x2)
    x1[2, 3, 1, 1] = float("inf")
    with pytest.warns(RuntimeWarning, match=r"not finite"):
        m(x1, x2)
    assert m.skipped_updates.item() == 1
    assert all(n < x1.numel() for n in seen)  # the gate input, per-channel numbers; never a full input


def test_degradation_factor_takes_the_sums_as_numbers():
    """Eq. 6 on the host (numbers) equals Eq. 6 on tensors, NaN and λ = 0 included."""
    var_b = torch.tensor([0.01, 0.03, 0.002], dtype=torch.float64)
    var_max = torch.tensor([0.02, 0.05, 0.01], dtype=torch.float64)
    for lam in (1e-6, 0.0):
        want = fusion.degradation_factor(var_b, var_max, 2.5, lam).item()
        got = fusion.degradation_factor(var_b.sum().item(), var_max.sum().item(), 2.5, lam)
        assert isinstance(got, float) and got == pytest.approx(want, rel=1e-15)
    assert fusion.degradation_factor(0.0, 0.0, 2.5, 0.0) == 0.0  # constant ζ, λ = 0: r = 0, not NaN
    assert math.isnan(fusion.degradation_factor(float("nan"), 0.1, 2.5, 1e-6))


@pytest.mark.parametrize("training", [True, False])
def test_r_read_on_the_host_equals_r_kept_on_the_device(monkeypatch, training):
    """The CPU reads Σ var_b once (to decide the update) and computes r from numbers; elsewhere r
    stays a tensor. The two give one r, one var_max and one output."""
    torch.manual_seed(0)
    host = SimAM2(5, zeta_mode="learnable").double().train(training)
    device = SimAM2(5, zeta_mode="learnable").double().train(training)
    device.load_state_dict(host.state_dict())
    host.var_max.fill_(0.01), device.var_max.fill_(0.01)
    x1, x2 = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    out = host(x1, x2)
    monkeypatch.setattr(fusion, "_host_readable", lambda t: False)
    ref = device(x1, x2)
    assert host.r.dtype == device.r.dtype == torch.float64
    assert host.r.item() == pytest.approx(device.r.item(), rel=1e-14)
    torch.testing.assert_close(host.var_max, device.var_max, rtol=0, atol=0)
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=0)


@needs_kernel
@pytest.mark.parametrize("shape", [(4, 6), (4, 6, 3, 3)])
def test_the_kernel_reads_the_weights_in_place_and_gives_their_gradient_in_their_layout(shape):
    """SimAM2's weights (pair_weights: each of ζ and 1 − ζ contiguous) go to the kernel as they lie
    and come back as ∂weights with the same strides: no stack, copy or sum around the node."""
    x1, x2, w = inputs(shape, seed=11, dtype=torch.float32)
    assert not w.is_contiguous()
    out = fused_pair_attention(x1, x2, w, torch.tensor(0.3), 1e-6)
    (gw,) = torch.autograd.grad(out, w, torch.ones_like(out))
    assert gw.stride() == w.stride()
    (gr,) = torch.autograd.grad(reference_pair(x1, x2, w, torch.tensor(0.3), 1e-6), w, torch.ones_like(out))
    torch.testing.assert_close(gw, gr, rtol=1e-4, atol=1e-4)


@needs_kernel
@pytest.mark.skipif("_omp_" not in getattr(pair_kernel.kernel(), "__name__", ""),
                    reason="the kernel runs on one thread where it is built without OpenMP")
@pytest.mark.parametrize("shape, neuron_dims", [((3, 45, 24, 64), (3,)), ((64, 700), None), ((16, 64, 14, 14), None)])
def test_the_kernel_gives_the_same_numbers_on_one_thread_and_on_two(shape, neuron_dims):
    """The kernel splits its rows across torch's intra-op threads in chunks of whole weight groups
    (here 24 rows per weight over dim 3, 135 weights: two even halves of the rows would split the
    68th weight's; one weight per neuron; one per channel), each large enough to be split: output
    and every gradient bit for bit the same whatever the thread count."""
    g = torch.Generator().manual_seed(5)
    x1, x2 = (torch.randn(shape, generator=g).requires_grad_() for _ in range(2))
    w = torch.rand(shape[:2] + (2,), generator=g).requires_grad_()
    upstream = torch.randn(shape, generator=g)
    threads = torch.get_num_threads()
    got = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out = fused_pair_attention(x1, x2, w, torch.tensor(0.3), 1e-6, neuron_dims)
            got.append([out, *torch.autograd.grad(out, (x1, x2, w), upstream)])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*got):
        assert torch.equal(one, two)


@needs_kernel
def test_the_kernels_entry_points_refuse_what_their_pointers_cannot_read():
    """pair_forward / pair_backward are public operators that read raw pointers: rows a weight
    group cannot divide, per-neuron weights with R > 1, a non-contiguous input, and statistics that
    are not the forward's are one-line errors, not memory read out of bounds."""
    mod = pair_kernel.kernel()
    x = torch.randn(4, 6)
    w = torch.rand(2, 2)
    out, sigma, stats = mod.pair_forward(x, x, w, 2, False, 1.5, 1e-6, True)
    with pytest.raises(RuntimeError, match="R dividing N"):
        mod.pair_forward(x, x, torch.rand(1, 2), 3, False, 1.5, 1e-6, True)
    with pytest.raises(RuntimeError, match="R = 1"):
        mod.pair_forward(x, x, torch.rand(24, 2), 2, True, 1.5, 1e-6, True)
    with pytest.raises(RuntimeError, match="contiguous"):
        mod.pair_forward(x.t().contiguous().t(), x, w, 2, False, 1.5, 1e-6, True)
    with pytest.raises(RuntimeError, match="R dividing N"):
        mod.pair_backward(torch.ones(4, 6), x, x, torch.rand(1, 2), 3, False, sigma, stats, 1.5)
    with pytest.raises(RuntimeError, match="sigma and stats"):
        mod.pair_backward(torch.ones(4, 6), x, x, w, 2, False, sigma, stats[:3], 1.5)
    gx1, gx2, gw = mod.pair_backward(torch.ones(4, 6), x, x, w, 2, False, sigma, stats, 1.5)
    assert gx1.shape == (4, 6) and gw.shape == (2, 2)


@needs_kernel
def test_the_operators_statistics_outputs_are_not_differentiable():
    """The custom operator returns σ and the statistics only for its backward to read: they carry
    no gradient (asking for one is an error, not a silent zero), and the output's gradient is the
    reference's."""
    x1, x2, w = inputs((5, 1, 7), seed=3, weights="free")  # one channel of 7 neurons per sample
    r = torch.tensor(0.4, dtype=torch.float64)
    out, sigma, stats = pair_kernel.pair_attention(x1.view(5, 7), x2.view(5, 7), w.view(5, 2), 1, False, r, 1e-3)
    assert out.requires_grad and not sigma.requires_grad and not stats.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        torch.autograd.grad(sigma.sum(), x1)
    got = torch.autograd.grad(out.sum(), (x1, x2, w))
    want = torch.autograd.grad(reference_pair(x1, x2, w, r, 1e-3).sum(), (x1, x2, w))
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-12)


def test_without_a_compiler_the_kernel_falls_back_with_one_line(monkeypatch):
    """SIMAM2_CPU_KERNEL=1 where the build fails (no compiler, no ninja): one warning line, and the
    node takes the PyTorch path, which gives the reference's numbers."""
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions\nc++: command not found")

    monkeypatch.setattr(pair_kernel, "_DISABLED", False)
    monkeypatch.setattr(pair_kernel, "_state", {})
    monkeypatch.setattr(pair_kernel, "available", pair_kernel._built)
    monkeypatch.setattr(cpp_extension, "load_inline", no_compiler)
    with pytest.warns(RuntimeWarning) as seen:
        assert pair_kernel.kernel() is None
    (line,) = [str(w.message) for w in seen]
    assert line == ("SimAM²: the CPU kernel could not be built (RuntimeError: c++: command not found); "
                    "using the PyTorch path")
    x1, x2, w = inputs((3, 4, 5))
    r = torch.tensor(0.3, dtype=torch.float64)
    assert_matches((fused_pair_attention(x1, x2, w, r, 1e-3), reference_pair(x1, x2, w, r, 1e-3)), (x1, x2, w))


def test_a_compiler_without_openmp_builds_the_one_thread_kernel_with_one_line(monkeypatch):
    """Where torch runs OpenMP but the compiler has none (Apple's clang): the build without
    -fopenmp is the kernel, and one warning line says it runs on one thread."""
    import torch.utils.cpp_extension as cpp_extension

    built = []

    def no_openmp(name, **kwargs):
        if "-fopenmp" in kwargs["extra_cflags"]:
            raise RuntimeError("clang: error: unsupported option '-fopenmp'")
        built.append(name)
        return "module"

    monkeypatch.setattr(pair_kernel, "_DISABLED", False)
    monkeypatch.setattr(pair_kernel, "_state", {})
    monkeypatch.setattr(pair_kernel, "_openmp_runtime", lambda: Path("/opt/torch/lib/libgomp-a34b3233.so.1"))
    monkeypatch.setattr(cpp_extension, "load_inline", no_openmp)
    with pytest.warns(RuntimeWarning) as seen:
        assert pair_kernel.kernel() == "module"
    (line,) = [str(w.message) for w in seen]
    assert line == ("SimAM²: the CPU kernel was built without OpenMP (RuntimeError: clang: error: unsupported "
                    "option '-fopenmp'); it runs on one thread")
    assert len(built) == 1 and "_omp_" not in built[0]


def test_the_openmp_build_links_the_runtime_torch_loaded_not_the_compilers():
    """-fopenmp compiles; the link names torch's own runtime file (a renamed copy in older wheels),
    never -fopenmp's default libgomp, which would be a second runtime in the process."""
    name, flags, ldflags = pair_kernel._flags(Path("/opt/torch/lib/libgomp-a34b3233.so.1"))
    assert name.startswith("omp_") and "-fopenmp" in flags and "-fopenmp" not in ldflags
    assert ldflags == ["-L/opt/torch/lib", "-l:libgomp-a34b3233.so.1", "-Wl,-rpath,/opt/torch/lib"]
    name, flags, ldflags = pair_kernel._flags(None)
    assert not name.startswith("omp_") and "-fopenmp" not in flags and ldflags == []


# -- issue 19: SimAM2 carries ζ to a C++ autograd node, and ζ's statistics to one kernel pass ----


def zeta_inputs(shape, seed=0, dtype=torch.float64):
    x1, x2, w = inputs(shape, seed, dtype=dtype)
    return x1, x2, w.detach()[..., 0].contiguous().requires_grad_()


@needs_kernel
@pytest.mark.parametrize("shape, neuron_dims, node", [
    ((6, 8), None, True),  # 2-D: one ζ per neuron
    ((3, 4, 5, 6), None, True),  # a feature map per channel
    ((2, 3, 4, 5), (3,), True),  # a channel per (b, c, h): ζ's gradient summed over h in the kernel
    ((3, 4, 5), (1, 2), False),  # ζ broadcast along some neuron dims: fused_pair_attention instead
])
def test_the_zeta_node_equals_the_reference_to_the_second_derivative(shape, neuron_dims, node):
    x1, x2, zeta = zeta_inputs(shape)
    dims = resolve_neuron_dims(x1, neuron_dims)
    out = fused.fused_zeta_attention(x1, x2, zeta, torch.tensor(0.37, dtype=torch.float64), 1e-3, dims)
    assert out.grad_fn.name().endswith("<ZetaPairNode>") == node
    ref = reference_pair(x1, x2, pair_weights(zeta), 0.37, 1e-3, neuron_dims)
    assert_matches((out, ref), (x1, x2, zeta))
    fn = lambda a, b, z: fused.fused_zeta_attention(a, b, z, 0.37, 1e-3, dims)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x1, x2, zeta))
    assert torch.autograd.gradgradcheck(fn, (x1, x2, zeta))  # through the reference, by create_graph


@needs_kernel
def test_the_zeta_node_takes_an_expanded_gradient_and_float32():
    """The gradient of ``out.sum()`` is one value expanded (every stride 0), read as one per row."""
    x1, x2, zeta = zeta_inputs((4, 6, 3, 3), dtype=torch.float32)
    dims = (2, 3)
    out = fused.fused_zeta_attention(x1, x2, zeta, 0.2, 1e-6, dims)
    ref = reference_pair(x1, x2, pair_weights(zeta), 0.2, 1e-6, dims)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for gf, gr in zip(torch.autograd.grad(out.sum(), (x1, x2, zeta)), torch.autograd.grad(ref.sum(), (x1, x2, zeta))):
        torch.testing.assert_close(gf, gr, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # no σ kept for a backward: the same numbers
        assert torch.equal(fused.fused_zeta_attention(x1, x2, zeta, 0.2, 1e-6, dims), out.detach())


@needs_kernel
def test_the_statistics_kernel_equals_the_pytorch_statistics(monkeypatch):
    """var_max, weight_sums, r and skipped_updates from the kernel's one pass over ζ equal
    MultiSimAM2's op-by-op statistics: over training batches, one whose input holds an inf (the
    gate's input is not finite: skipped), and in eval mode (nothing grows)."""
    torch.manual_seed(3)
    fast, ref = twin_modules(SimAM2, channels=5, zeta_mode="learnable")
    calls = []
    real = fusion._statistics_kernel
    monkeypatch.setattr(fusion, "_statistics_kernel", lambda *a: calls.append(1) or real(*a))
    batches = [torch.randn(2, 7, 5, 4, dtype=torch.float64) * (1 + i) for i in range(4)]
    batches[2][0, 1, 2, 3] = float("inf")
    with pytest.warns(RuntimeWarning, match="not finite"):
        for i, (x1, x2) in enumerate(batches):
            if i == 3:
                fast.eval(), ref.eval()
            fast(x1, x2)
            with monkeypatch.context() as m:
                m.setattr(fusion, "_statistics_kernel", lambda *a: None)
                ref(x1, x2)
            torch.testing.assert_close(fast.var_max, ref.var_max, rtol=1e-12, atol=0)
            torch.testing.assert_close(fast.weight_sums, ref.weight_sums, rtol=1e-12, atol=0)
            assert fast.r.item() == pytest.approx(ref.r.item(), rel=1e-12, nan_ok=True)
            assert fast.skipped_updates.item() == ref.skipped_updates.item() == (1 if i >= 2 else 0)
    assert len(calls) == 4  # the kernel computed every one of them
    assert math.isnan(fast.r.item()) is False


def test_simam2_keeps_its_hooks_and_the_pair_path_where_zeta_is_not_the_fast_paths():
    """Where SimAM2 does not carry ζ alone it computes what MultiSimAM2's (B, C, 2) path computes:
    a subclass's gated_weights, a given ζ through fuse (which subclasses override), a ζ narrower
    than the statistics (bf16 under autocast, 1 − ζ rounded in bf16); and a module pickled whole
    when it kept the (B, C, 2) weights reads back its .zeta."""
    torch.manual_seed(0)
    x1, x2 = torch.randn(2, 5, 6, 3)

    class Flipped(SimAM2):
        def gated_weights(self, gate_input):
            return super().gated_weights(gate_input).flip(-1)

    flipped = Flipped(6, zeta_mode="learnable").eval()
    plain = SimAM2(6, zeta_mode="learnable").eval()
    plain.load_state_dict(flipped.state_dict())
    zeta = torch.sigmoid(plain.gate(plain.gate_input((x1, x2))))
    torch.testing.assert_close(flipped(x1, x2), plain(x1, x2, 1 - zeta))  # 1 − (1 − ζ) rounds: close
    assert not torch.allclose(flipped(x1, x2), plain(x1, x2))

    class Seen(SimAM2):
        calls = 0

        def fuse(self, xs, weights=None):
            Seen.calls += 1
            return super().fuse(xs, weights)

    Seen(6, zeta_mode="given")(x1, x2, zeta.detach())
    assert Seen.calls == 1

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = plain(x1, x2)
        assert plain.zeta.dtype == torch.bfloat16
        ref = MultiSimAM2.fuse(plain, (x1, x2), plain.gated_weights(plain.gate_input((x1, x2))))
    assert torch.equal(out, ref)

    state = dict(plain.__getstate__())
    old_weights = state.pop("_weights") if state["_weights"] is not None else plain.weights
    state.pop("_zeta")
    state["weights"] = old_weights
    restored = SimAM2.__new__(SimAM2)
    restored.__setstate__(state)
    assert restored.weights is old_weights and torch.equal(restored.zeta, old_weights[..., 0])


def test_fused_zeta_attention_refuses_mismatched_inputs_in_one_line():
    x = torch.randn(6, 8)
    with pytest.raises(ValueError, match="of one shape and zeta"):
        fused.fused_zeta_attention(x, torch.randn(2, 8), torch.rand(6, 8), 0.3, 1e-3, (1,))
    with pytest.raises(ValueError, match="of one shape and zeta"):
        fused.fused_zeta_attention(x, x, torch.rand(2, 8), 0.3, 1e-3, (1,))
    with pytest.raises(ValueError, match="one dtype and device"):
        fused.fused_zeta_attention(x, x, torch.rand(6, 8, dtype=torch.float64), 0.3, 1e-3, (1,))
