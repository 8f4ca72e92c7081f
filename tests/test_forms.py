"""SPEC §4: each fusion form hands SimAM² the X1, X2 the SPEC names."""

import pytest
import torch

from simam2.core import ConcatFusion, FiLMFusion, LateFusion, SimAM2, Summation, fused_energy, superpose
from simam2.core.energy import resolve_neuron_dims


def attention_input(module, out, x1, x2, zeta):
    """Undo Eq. 8 with the module's own r: returns U = out / sigmoid(E*)."""
    w = torch.stack([zeta, 1 - zeta], -1)
    u = superpose([x1, x2], w)
    e = fused_energy([x1, x2], w, u, module.r, module.lam, resolve_neuron_dims(x1, None))
    return out / torch.sigmoid(e), u


def test_summation_with_half_is_the_average_under_attention():
    x1, x2 = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    m = Summation(6).double()
    out = m(x1, x2)
    u_back, u = attention_input(m, out, x1, x2, torch.full((4, 6), 0.5, dtype=torch.float64))
    torch.testing.assert_close(u, (x1 + x2) / 2)
    torch.testing.assert_close(u_back, u)


def test_film_superposes_gamma_f_and_beta():
    gamma, feat, beta = torch.randn(3, 5, 8, dtype=torch.float64)
    zeta = torch.rand(5, 8, dtype=torch.float64)
    m = FiLMFusion(8, zeta_mode="given").double()
    out = m(gamma, feat, beta, zeta=zeta)
    u_back, u = attention_input(m, out, gamma * feat, beta, zeta)
    torch.testing.assert_close(u, zeta * gamma * feat + (1 - zeta) * beta)  # ζγF + (1 − ζ)β
    torch.testing.assert_close(u_back, u)
    torch.testing.assert_close(out, SimAM2(8, zeta_mode="given").double()(gamma * feat, beta, zeta=zeta))


def test_concat_pads_and_keeps_the_width():
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    m = ConcatFusion(3, 5).double()
    out = m(x, y)
    assert out.shape == (4, 8)
    x1 = torch.cat([x, torch.zeros(4, 5, dtype=torch.float64)], 1)
    x2 = torch.cat([torch.zeros(4, 3, dtype=torch.float64), y], 1)
    u_back, u = attention_input(m, out, x1, x2, torch.full((4, 8), 0.5, dtype=torch.float64))
    torch.testing.assert_close(u, torch.cat([x, y], 1) / 2)  # half the concatenation
    torch.testing.assert_close(u_back, u)
    with pytest.raises(ValueError, match=r"\(B, 3, \.\.\.\)"):
        m(y, x)


def test_late_fusion_treats_each_segment_as_a_sample_of_c_neurons():
    a, v = torch.randn(2, 3, 10, 16, dtype=torch.float64)
    m = LateFusion(16, zeta_mode="learnable").double()
    flat = SimAM2(16, zeta_mode="learnable").double()
    flat.load_state_dict(m.state_dict())
    out = m(a, v)
    assert out.shape == (3, 10, 16) and m.zeta.shape == (30, 16)
    torch.testing.assert_close(out, flat(a.reshape(30, 16), v.reshape(30, 16)).view(3, 10, 16))
    torch.testing.assert_close(m.var_max, flat.var_max)
    with pytest.raises(ValueError, match="one shape"):
        m(a, v[:, :5])
