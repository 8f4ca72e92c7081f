"""SPEC §2–§3: the fused output, r and var_max against a hand computation; gradients; bad input."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from simam2.core import MultiSimAM2, SimAM2
from simam2.core import fusion as fusion_module


def np_importance(x, lam):
    """SPEC §1 in NumPy, neurons along the last axis."""
    m = x.shape[-1]
    d = (x - x.mean(-1, keepdims=True)) ** 2
    return d / (4 * (d.sum(-1, keepdims=True) / (m - 1) + lam)) + 0.5


def by_hand(x1, x2, zeta, var_max, lam=1e-6, s=2.5):
    """Eq. 4–8 written out in NumPy for (B, C, S) inputs and (B, C) ζ; returns (out, r, var_max)."""
    z = zeta[..., None]
    u = z * x1 + (1 - z) * x2
    var_b = zeta.var(0)  # population variance over the batch
    var_max = np.maximum(var_max, var_b)
    r = math.tanh((s * var_b.sum() + lam) / (var_max.sum() + lam))
    e = np_importance(u, lam) - z**2 * np_importance(x1, 0) - (1 - z) ** 2 * np_importance(x2, 0)
    e = e + (1 - r) * np_importance(u, lam)
    return 1 / (1 + np.exp(-e)) * u, r, var_max


def test_output_r_and_var_max_match_hand_computation():
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(2, 4, 3, 5))
    zeta = rng.uniform(0.1, 0.9, size=(4, 3))
    m = SimAM2(3, zeta_mode="given").double()
    out = m(torch.tensor(x1), torch.tensor(x2), zeta=torch.tensor(zeta))
    ref, r, var_max = by_hand(x1, x2, zeta, np.zeros(3))
    np.testing.assert_allclose(out.detach().cpu().numpy(), ref, rtol=1e-10)
    assert m.r.item() == pytest.approx(r, rel=1e-10)
    np.testing.assert_allclose(m.var_max.cpu().numpy(), var_max, rtol=1e-10)
    np.testing.assert_allclose(m.zeta.cpu().numpy(), zeta)
    # a second batch with less spread: var_max keeps its maximum, r falls below tanh(s)
    zeta2 = 0.5 + (zeta - 0.5) * 0.3
    out2 = m(torch.tensor(x1), torch.tensor(x2), zeta=torch.tensor(zeta2))
    ref2, r2, var_max2 = by_hand(x1, x2, zeta2, var_max)
    np.testing.assert_allclose(out2.detach().cpu().numpy(), ref2, rtol=1e-10)
    np.testing.assert_allclose(m.var_max.cpu().numpy(), var_max, rtol=1e-10)
    assert m.r.item() == pytest.approx(r2, rel=1e-10) and r2 < r


def test_var_max_grows_only_in_training_and_is_saved():
    m = SimAM2(4, zeta_mode="learnable")
    x1, x2 = torch.randn(2, 8, 4, 6)
    m.eval()
    m(x1, x2)
    assert torch.count_nonzero(m.var_max) == 0
    m.train()
    m(x1, x2)
    grown = m.var_max.clone()
    torch.testing.assert_close(grown, m.zeta.var(0, unbiased=False))
    m(x1[:1], x2[:1])  # a batch of one has zero variance: var_max must not fall
    torch.testing.assert_close(m.var_max, grown)
    assert "var_max" in m.state_dict()
    fresh = SimAM2(4, zeta_mode="learnable")
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh.var_max, grown)


def test_fixed_zeta_is_plain_summation_with_r_from_lambda():
    m = SimAM2(3, zeta_mode="fixed", lam=1e-6)
    x1, x2 = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    out = m(x1, x2)
    ref, r, _ = by_hand(x1.cpu().numpy(), x2.cpu().numpy(), np.full((5, 3), 0.5), np.zeros(3))
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-10)
    assert m.r.item() == pytest.approx(math.tanh(1.0))  # tanh(λ / (0 + λ))
    assert r == pytest.approx(math.tanh(1.0))


def test_learnable_gate_is_sigmoid_of_linear_on_pooled_inputs():
    m = SimAM2(3, zeta_mode="learnable")
    x1, x2 = torch.randn(2, 4, 3, 7)
    m(x1, x2)
    expected = torch.sigmoid(m.gate(torch.cat([x1.mean(-1), x2.mean(-1)], 1)))
    torch.testing.assert_close(m.zeta, expected.detach())
    assert m.zeta.shape == (4, 3) and m.zeta.std() > 0  # varies within the batch (Eq. 6 needs it)


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    m = SimAM2(3, zeta_mode="given").double()
    x1 = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    zeta = torch.rand(4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: m(a, b, zeta=zeta), (x1, x2))
    # r is a statistic without gradient; with a batch of one it is constant, so ζ's gradient checks too
    z1 = torch.rand(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, z: m(a, b, zeta=z), (x1[:1].detach().requires_grad_(),
                                                                      x2[:1].detach().requires_grad_(), z1))


def test_learnable_gate_receives_gradient():
    m = SimAM2(4, zeta_mode="learnable")
    m(*torch.randn(2, 6, 4, 5)).square().sum().backward()
    assert m.gate.weight.grad is not None and m.gate.weight.grad.abs().sum() > 0


def test_k2_multimodal_is_the_paper_form_and_k3_is_convex():
    x1, x2, x3 = torch.randn(3, 4, 3, 6, dtype=torch.float64)
    zeta = torch.rand(4, 3, dtype=torch.float64)
    two = SimAM2(3, zeta_mode="given").double()
    multi = MultiSimAM2(3, 2, zeta_mode="given").double()
    torch.testing.assert_close(multi(x1, x2, weights=torch.stack([zeta, 1 - zeta], -1)), two(x1, x2, zeta=zeta))
    torch.testing.assert_close(multi.r, two.r)
    torch.testing.assert_close(multi.var_max, two.var_max)
    three = MultiSimAM2(3, 3, zeta_mode="learnable").double()
    three(x1, x2, x3)
    torch.testing.assert_close(three.weights.sum(-1), torch.ones(4, 3, dtype=torch.float64))
    fixed = MultiSimAM2(3, 3, zeta_mode="fixed").double()
    fixed(x1, x2, x3)
    torch.testing.assert_close(fixed.weights, torch.full((4, 3, 3), 1 / 3, dtype=torch.float64))


def test_bad_input_is_a_clear_error():
    m = SimAM2(3, zeta_mode="learnable")
    with pytest.raises(ValueError, match="one shape"):
        m(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"zeta must have shape \(B, C\)"):
        m(torch.randn(2, 3, 4), torch.randn(2, 3, 4), zeta=torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, \.\.\.\)"):
        m(torch.randn(2, 5, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="at least 2 neurons"):
        SimAM2(3, neuron_dims=(2,))(torch.randn(2, 3, 1), torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match="pass zeta"):
        SimAM2(3, zeta_mode="given")(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="zeta_mode must be one of"):
        SimAM2(3, zeta_mode="adaptive")


def test_constant_and_low_precision_inputs_give_finite_output():
    m = SimAM2(3, zeta_mode="learnable", lam=0.0)
    out = m(torch.ones(2, 3, 4, 4), torch.ones(2, 3, 4, 4))
    assert torch.isfinite(out).all()
    for dtype in (torch.bfloat16, torch.float16):
        x1, x2 = (torch.randn(2, 4, 3, 8, 8) * 100).to(dtype)
        out = m(x1, x2)
        assert out.dtype == dtype and torch.isfinite(out).all()


# -- faults: non-finite statistics, empty batches, values outside their range -----------------------

@pytest.mark.parametrize("decided", ["on the host", "on the device"])
@pytest.mark.parametrize("modalities", [2, 3])
def test_a_nan_sample_never_enters_var_max_and_is_warned(modalities, decided, monkeypatch):
    if decided == "on the device":  # the torch.where path an accelerator takes, run on the CPU
        monkeypatch.setattr(fusion_module, "_host_readable", lambda t: False)
    torch.manual_seed(0)
    m = MultiSimAM2(4, modalities, zeta_mode="learnable") if modalities > 2 else SimAM2(4, zeta_mode="learnable")
    xs = list(torch.randn(modalities, 8, 4, 6))
    m(*xs)
    grown, sums = m.var_max.clone(), m.weight_sums.clone()
    assert torch.count_nonzero(grown) == 4
    bad = [x.clone() for x in xs]
    bad[0][3, 1, 2] = float("nan")  # one value of one sample: the gate's ζ of that sample is NaN
    with pytest.warns(RuntimeWarning, match=r"not finite .* in 1 training batch\(es\)"):
        m(*bad)
    torch.testing.assert_close(m.var_max, grown, rtol=0, atol=0)  # was nan, nan, nan, nan
    torch.testing.assert_close(m.weight_sums, sums, rtol=0, atol=0)
    assert m.skipped_updates.item() == 1
    again = m(*xs)  # the next clean batch is as if the bad one had never come
    assert torch.isfinite(again).all() and torch.isfinite(m.state_dict()["var_max"]).all()
    torch.testing.assert_close(m.var_max, grown, rtol=0, atol=0)


def test_an_empty_training_batch_is_an_error_and_an_empty_eval_batch_is_not():
    m = SimAM2(3, zeta_mode="learnable")
    x1, x2 = torch.randn(2, 4, 3, 5)
    m(x1, x2)
    grown = m.var_max.clone()
    with pytest.raises(ValueError, match=r"empty batch \(B = 0\) in training mode"):
        m(x1[:0], x2[:0])  # was: var_max = nan, nan, nan and every later output nan
    torch.testing.assert_close(m.var_max, grown, rtol=0, atol=0)
    m.eval()
    assert m(x1[:0], x2[:0]).shape == (0, 3, 5)
    torch.testing.assert_close(m.var_max, grown, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [1.5, -0.2, float("nan")])
def test_a_given_zeta_outside_the_unit_interval_is_refused(bad):
    m = SimAM2(3, zeta_mode="given")
    x1, x2 = torch.randn(2, 4, 3, 5)
    zeta = torch.full((4, 3), 0.5)
    zeta[2, 1] = bad
    with pytest.raises(ValueError, match=r"given zeta \(ζ\) must lie in \[0, 1\] with no NaN; got "):
        m(x1, x2, zeta=zeta)
    assert torch.count_nonzero(m.var_max) == 0
    edges = torch.tensor([[0.0, 1.0, 0.5]]).expand(4, 3)  # the closed interval is allowed
    assert torch.isfinite(m(x1, x2, zeta=edges)).all()
    k3 = MultiSimAM2(3, 3, zeta_mode="given")
    weights = torch.full((4, 3, 3), 1 / 3)
    weights[0, 0] = torch.tensor([bad, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"given fusion weights must lie in \[0, 1\]"):
        k3(x1, x2, x1, weights=weights)


@pytest.mark.parametrize("arg", ["lam", "s"])
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_lam_and_s_must_be_finite_and_nonnegative(arg, bad):
    with pytest.raises(ValueError, match=rf"^{arg} .* must be a finite number >= 0, got {bad}$"):
        SimAM2(3, **{arg: bad})
    with pytest.raises(ValueError, match=rf"^{arg} "):
        MultiSimAM2(3, 3, **{arg: bad})
    assert SimAM2(3, **{arg: 0}).extra_repr()  # zero is allowed (λ = 0 is SimAM's own choice)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_on_cuda_the_checks_and_the_skip_make_no_host_sync_and_warn_one_forward_late():
    import warnings

    m = SimAM2(4, zeta_mode="learnable").cuda()
    x1, x2 = torch.randn(2, 8, 4, 6, device="cuda")
    given = SimAM2(4, zeta_mode="given").cuda()
    zeta = torch.rand(8, 4, device="cuda")
    m(x1, x2), given(x1, x2, zeta=zeta)  # first calls: lazy allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        m(x1, x2)
        given(x1, x2, zeta=zeta)
        bad = x1.clone()
        bad[0, 0, 0] = float("nan")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            m(bad, x2)
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            m(x1, x2)  # reads the count copied at the previous forward
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert any("not finite" in str(w.message) for w in seen)
    assert m.skipped_updates.item() == 1 and torch.isfinite(m.var_max).all()


@needs_cuda
def test_on_cuda_a_given_zeta_outside_the_unit_interval_stops_the_run():
    import subprocess
    import sys

    code = ("import torch; from simam2.core import SimAM2; m = SimAM2(2, zeta_mode='given').cuda(); "
            "x = torch.randn(3, 2, 4, device='cuda'); m(x, x, zeta=torch.full((3, 2), 1.5, device='cuda')); "
            "torch.cuda.synchronize(); print('not stopped')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "not stopped" not in run.stdout
    assert "given zeta (ζ) must lie in [0, 1]" in run.stderr or "device-side assert" in run.stderr


# -- faults, round two: inf inputs, low-precision modules, loaded state, given weights, dtypes ------

def _learnable_after_one_batch():
    """A learnable SimAM2 that has seen one clean batch: (module, x1, x2, its var_max then)."""
    torch.manual_seed(0)
    m = SimAM2(4, zeta_mode="learnable")
    x1, x2 = torch.randn(2, 8, 4, 6)
    m(x1, x2)
    return m, x1, x2, m.var_max.clone()


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_an_inf_input_is_skipped_like_a_nan_one(bad):
    """An inf saturates the learnable ζ (sigmoid(inf) = 1): finite statistics, yet false ones."""
    m, x1, x2, grown = _learnable_after_one_batch()
    poisoned = x1.clone()
    poisoned[3, 1, 2] = bad
    with pytest.warns(RuntimeWarning, match=r"NaN or inf in the inputs.* in 1 training batch\(es\)"):
        m(poisoned, x2)
    torch.testing.assert_close(m.var_max, grown, rtol=0, atol=0)  # was raised 5-10x for ever
    assert m.skipped_updates.item() == 1
    fixed = SimAM2(4)  # weights that do not come from the inputs: nothing to skip, one sample spoiled
    out = fixed(poisoned, x2)
    assert fixed.skipped_updates.item() == 0 and torch.isfinite(out[[0, 1, 2, 4, 5, 6, 7]]).all()


def test_an_input_whose_channel_mean_overflows_is_skipped_like_an_inf_one():
    """Finite float32 inputs whose channel mean overflows give the gate an inf, and so a saturated ζ:
    false statistics, skipped as an inf input's are (var_max kept, the batch counted)."""
    m, x1, x2, grown = _learnable_after_one_batch()
    huge = x1.clone()
    huge[3, 1] = 3e38  # finite, but its mean over 6 neurons is not
    with pytest.warns(RuntimeWarning, match=r"not finite"):
        m(huge, x2)
    assert m.skipped_updates.item() == 1
    torch.testing.assert_close(m.var_max, grown, rtol=0, atol=0)


def test_var_max_stays_float32_under_half_and_to_dtype():
    m = SimAM2(16, zeta_mode="learnable").half()
    assert m.gate.weight.dtype == torch.float16
    assert m.var_max.dtype == torch.float32 and m.weight_sums.dtype == torch.float32  # was float16
    m.to(torch.bfloat16)
    assert m.var_max.dtype == torch.float32
    x1, x2 = torch.randn(2, 32, 16).half()
    m.half()(x1, x2)
    assert m.var_max.dtype == torch.float32 and (m.var_max > 0).all()
    assert SimAM2(4).double().var_max.dtype == torch.float64  # more precision is kept


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_a_state_dict_with_a_var_max_that_is_no_variance_is_refused_naming_the_key(bad):
    m = SimAM2(4, zeta_mode="learnable")
    state = m.state_dict()
    state["var_max"] = torch.tensor([0.1, bad, 0.2, 0.0])
    with pytest.raises(ValueError, match=r"^var_max in the state dict must hold finite variances >= 0; 1 of 4"):
        m.load_state_dict(state)
    assert (m.var_max == 0).all()
    outer = nn.Sequential(SimAM2(4))
    with pytest.raises(ValueError, match=r"^0\.var_max in the state dict"):
        outer.load_state_dict({"0.var_max": torch.tensor([0.1, bad, 0.2, 0.0])})
    m.load_state_dict({**state, "var_max": torch.tensor([0.1, 0.0, 0.2, 0.0])})  # a good one loads


def test_given_weights_must_sum_to_one_over_the_modalities():
    m = MultiSimAM2(4, 2, zeta_mode="given")
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match=r"given fusion weights must sum to 1 over the modalities .* got sums "
                                         r"from 1\.8 to 1\.8"):
        m(x, x, weights=torch.full((8, 4, 2), 0.9))
    m(x, x, weights=torch.full((8, 4, 2), 0.5))
    k3 = MultiSimAM2(4, 3, zeta_mode="given")
    w = torch.rand(8, 4, 3).softmax(-1)
    k3(x, x, x, weights=w)
    w[0, 0, 0] += 0.01
    with pytest.raises(ValueError, match="must sum to 1"):
        k3(x, x, x, weights=w)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_integer_inputs_are_refused_in_one_line(dtype):
    x = torch.arange(8).view(4, 2).to(dtype)
    with pytest.raises(ValueError, match=rf"^SimAM²'s inputs must be floating-point tensors, got {dtype}: cast"):
        SimAM2(2)(x, x)  # was int64 [-5, -3, -1, ...] where float gives [-4.675, -2.664, ...]
    with pytest.raises(ValueError, match="floating-point"):
        MultiSimAM2(2, 3)(x, x, x)


def test_the_old_zeta_string_spelling_still_builds_the_same_module_and_warns():
    from simam2.core import ConcatFusion, LateFusion

    for make, args in ((SimAM2, (4,)), (MultiSimAM2, (4, 3)), (ConcatFusion, (3, 2)), (LateFusion, (4,))):
        torch.manual_seed(0)
        with pytest.warns(DeprecationWarning, match="zeta='learnable'.*deprecated.*zeta_mode='learnable'") as caught:
            old = make(*args, zeta="learnable")
        assert caught[0].filename == __file__  # attributed to the caller, however deep in core it was met
        torch.manual_seed(0)
        new = make(*args, zeta_mode="learnable")
        assert old.zeta_mode == "learnable" and "zeta_mode='learnable'" in repr(new)
        assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
        SimAM2(4, "given", zeta="learnable")
