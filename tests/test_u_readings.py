"""SPEC §2's two readings of U: ``u="vanilla"`` is sigmoid(E*) ⊙ (the vanilla output) with E* the
same as ``u="eq4"``'s; with learnable or given ζ the two readings coincide."""

import numpy as np
import pytest
import torch

from simam2.core import ConcatFusion, FiLMFusion, LateFusion, MultiSimAM2, SimAM2, Summation
from simam2.core.fusion import fused_energy, superpose

from test_fusion import by_hand


def test_vanilla_reading_is_the_attention_on_the_plain_sum_by_hand():
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(2, 5, 4, 6))
    zeta = np.full((5, 4), 0.5)
    eq4, _, _ = by_hand(x1, x2, zeta, np.zeros(4))
    u = 0.5 * (x1 + x2)
    gate = eq4 / u  # sigmoid(E*), read off Eq. 8
    out = Summation(4, u="vanilla").double()(torch.tensor(x1), torch.tensor(x2)).detach().numpy()
    np.testing.assert_allclose(out, gate * (x1 + x2), rtol=1e-10)  # the vanilla output: X1 + X2
    assert 0.55 < gate.mean() < 0.7  # the gain that makes eq4 a temperature change on logits


@pytest.mark.parametrize("form", ["sum", "film", "concat", "multi3"])
def test_vanilla_reading_keeps_E_and_multiplies_the_vanilla_output(form):
    torch.manual_seed(0)
    x = [torch.randn(6, 8, 3, dtype=torch.float64) for _ in range(3)]
    if form == "sum":
        mods = [SimAM2(8, u=u).double() for u in ("eq4", "vanilla")]
        terms, outs = x[:2], [m(x[0], x[1]) for m in mods]
    elif form == "film":
        mods = [FiLMFusion(8, u=u).double() for u in ("eq4", "vanilla")]
        terms, outs = [x[0] * x[1], x[2]], [m(x[0], x[1], x[2]) for m in mods]
    elif form == "concat":
        mods = [ConcatFusion(5, 3, u=u).double() for u in ("eq4", "vanilla")]
        a, b = x[0][:, :5], x[1][:, :3]
        terms, outs = list(mods[0].pad(a, b)), [m(a, b) for m in mods]
    else:
        mods = [MultiSimAM2(8, 3, u=u).double() for u in ("eq4", "vanilla")]
        terms, outs = x, [m(*x) for m in mods]
    k = len(terms)
    w = torch.full((6, 8, k), 1.0 / k, dtype=torch.float64)
    u = superpose(terms, w)
    e = fused_energy(terms, w, u, mods[0].r, mods[0].lam, (2,))
    vanilla = sum(terms)  # what the vanilla fusion outputs: γ F + β, [x ; y], X1 + X2 (+ X3)
    torch.testing.assert_close(outs[0], torch.sigmoid(e) * u, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(outs[1], torch.sigmoid(e) * vanilla, rtol=1e-10, atol=1e-12)
    assert mods[1].vanilla_gain == k and mods[0].vanilla_gain == 1.0


def test_late_fusion_reads_the_upstream_combination():
    torch.manual_seed(1)
    a, v = torch.randn(2, 4, 3, 16, dtype=torch.float64)
    eq4 = LateFusion(16).double()(a, v)
    mean = LateFusion(16, u="vanilla").double()(a, v)  # PSP's (a + v) / 2 is U itself
    add = LateFusion(16, u="vanilla", vanilla="sum").double()(a, v)
    torch.testing.assert_close(mean, eq4, rtol=0, atol=0)
    torch.testing.assert_close(add, 2 * eq4, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("zeta", ["learnable", "given"])
def test_readings_coincide_for_learnable_and_given_zeta(zeta):
    x1, x2 = torch.randn(2, 7, 5, 4)
    z = torch.rand(7, 5)
    outs = []
    for u in ("eq4", "vanilla"):
        torch.manual_seed(2)  # the same gate initialisation
        m = SimAM2(5, zeta_mode=zeta, u=u)
        outs.append(m(x1, x2, zeta=z if zeta == "given" else None))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_gradients_of_the_vanilla_reading_are_exact():
    x1, x2 = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    m = SimAM2(3, u="vanilla").double()
    assert torch.autograd.gradcheck(lambda a, b: m(a, b), (x1, x2))


def test_unknown_reading_is_refused():
    with pytest.raises(ValueError, match="u must be one of"):
        SimAM2(3, u="half")


def test_the_temperature_control_scales_the_vanilla_output_by_the_eq4_gain():
    """SPEC §9's temperature control: the Baseline's fused output × the eq4 row's mean gain, no
    attention; the gain is ½ · mean sigmoid(E*) where the vanilla adds (≈ 0.31), and twice that where
    it averages (late fusion)."""
    from simam2.adapters.study.models import Attention, Head, eq4_gain

    assert 0.28 < eq4_gain("sum", 10) < 0.34 and eq4_gain("late", 10) == pytest.approx(2 * eq4_gain("sum", 64), rel=0.02)
    torch.manual_seed(0)
    plain, scaled = Head("sum", 10, Attention()), Head("sum", 10, Attention(temperature=True))
    scaled.load_state_dict(plain.state_dict())
    a, b = torch.randn(2, 8, 64)
    torch.testing.assert_close(scaled(a, b), eq4_gain("sum", 10) * plain(a, b))
    with pytest.raises(ValueError, match="no SimAM²"):
        Attention(simam2=True, temperature=True)
