"""SPEC §1: importance, the closed form of Eq. 2–3 against numerical optimisation of Eq. 1."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from simam2.core import exact_minimal_energy, importance
from simam2.core.energy import energy_eq1


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_closed_form_equals_numerical_minimum_of_eq1(lam):
    rng = np.random.default_rng(0)
    x = rng.normal(size=7)
    closed = exact_minimal_energy(torch.tensor(x).view(1, 1, 7), lam).view(-1).cpu().numpy()
    for t in range(7):
        others = np.delete(x, t)
        res = minimize(lambda p: energy_eq1(p[0], p[1], x[t], others, lam), x0=[0.0, 0.0],
                       method="BFGS", options={"gtol": 1e-10})
        assert res.fun == pytest.approx(closed[t], rel=1e-6, abs=1e-9)


def test_importance_is_simam_fast_form():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    lam = 1e-4
    # SimAM's published form (Yang et al., 2021), spatial neurons of each channel.
    n = 4 * 5 - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    expected = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + lam)) + 0.5
    torch.testing.assert_close(importance(x, lam), expected)


def test_importance_is_inverse_energy_up_to_leave_one_out_statistics():
    # With many neurons the fast form's statistics over all M approach Eq. 3's over M − 1.
    x = torch.randn(1, 1, 4000, dtype=torch.float64)
    ratio = importance(x, 0.1) * exact_minimal_energy(x, 0.1)
    assert (ratio - 1).abs().max() < 5e-3


def test_distinctive_neuron_is_most_important():
    x = torch.zeros(1, 1, 9)
    x[0, 0, 4] = 5.0
    imp = importance(x, 1e-6)
    assert imp[0, 0].argmax().item() == 4
    assert imp[0, 0, 4] > 2 * imp[0, 0, 0]


def test_default_neuron_dims():
    x4 = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(importance(x4), importance(x4, neuron_dims=(2, 3)))
    x2 = torch.randn(6, 8)
    manual = importance(x2.view(6, 1, 8)).view(6, 8)  # 2-D: the C features are the neurons
    torch.testing.assert_close(importance(x2), manual)


def test_fewer_than_two_neurons_is_an_error():
    with pytest.raises(ValueError, match="at least 2 neurons"):
        importance(torch.randn(4, 3, 1, 1))
    with pytest.raises(ValueError, match="at least 2 neurons"):
        importance(torch.randn(4, 1))
    with pytest.raises(ValueError, match="shape \\(B, C"):
        importance(torch.randn(5))
    with pytest.raises(ValueError, match="out of range"):
        importance(torch.randn(2, 3, 4), neuron_dims=(3,))


def test_constant_input_is_finite():
    out = importance(torch.ones(2, 3, 4, 4), lam=0.0)
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.full_like(out, 0.5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_give_finite_output_in_their_dtype(dtype):
    x = (torch.randn(2, 4, 8, 8) * 300).to(dtype)
    out = importance(x, 1e-6)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = importance(x.float(), 1e-6)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_importance_of_huge_inputs_is_the_scaled_importance(scale):
    """SPEC §1's importance is invariant under x → s·x when λ = 0: float32 inputs of 1e20, where
    (x − μ)² overflows, give the same finite importances as the same inputs at unit scale."""
    x = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(0), device="cpu").to(
        torch.get_default_device())
    out = importance(x * scale, 0.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, importance(x, 0.0), rtol=1e-5, atol=1e-5)
    from simam2.core import MultiSimAM2

    three = MultiSimAM2(4, 3, zeta_mode="learnable")  # K > 2 runs through importance
    assert torch.isfinite(three(x * scale, x.flip(0) * scale, x.flip(1) * scale)).all()


def test_importance_refuses_integer_input_and_a_lambda_that_is_no_finite_nonnegative_number():
    """importance(int64 x) came back int64 zeros (truncated); λ = NaN made every value NaN, silently."""
    x = torch.arange(8).view(2, 4)
    with pytest.raises(ValueError, match=r"^importance's input must be floating-point tensors, got torch.int64"):
        importance(x, 1e-6)
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match=rf"^lam \(λ\) must be a finite number >= 0, got {bad}$"):
            importance(x.float(), bad)
    # a row 0, 1, 2, 3: mean 1.5, var 5/3; (x − μ)² / (4 var) + 0.5 = 0.8375, 0.5375 (as floats, it works)
    torch.testing.assert_close(importance(x.float(), 0.0)[0], torch.tensor([0.8375, 0.5375, 0.5375, 0.8375]))
