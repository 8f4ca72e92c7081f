"""SPEC §5–§6: Eq. 11, OGM-GE's coefficient rule, and the modulator between backward and step."""

import math

import pytest
import torch
from torch import nn

from simam2.core import (
    GradientModulator,
    SimAM2,
    decoupled_ratio,
    decoupled_scores,
    decoupling_free_ratio,
    ogm_coefficients,
)


def test_decoupling_free_ratio_is_eq11():
    zeta = torch.tensor([[0.7, 0.6], [0.8, 0.5]])
    assert decoupling_free_ratio(zeta).item() == pytest.approx(2.6 / 1.4)


@pytest.mark.parametrize("rho1", [1.8, 0.4])
def test_coefficients_follow_ogm_ge(rho1):
    alpha = 0.3
    k1, k2 = ogm_coefficients(rho1, alpha)
    if rho1 > 1:  # modality 1 dominates: its gradient is damped
        assert k1.item() == pytest.approx(1 - math.tanh(alpha * rho1)) and k2.item() == 1
    else:
        assert k2.item() == pytest.approx(1 - math.tanh(alpha / rho1)) and k1.item() == 1


def test_decoupled_ratio_is_ogm_ge_score_ratio():
    torch.manual_seed(0)
    out_a, out_v = torch.randn(2, 6, 4)
    label = torch.tensor([0, 1, 2, 3, 0, 1])
    softmax = nn.Softmax(dim=1)
    score_v = sum(softmax(out_v)[i][label[i]] for i in range(6))  # OGM-GE's main.py, verbatim rule
    score_a = sum(softmax(out_a)[i][label[i]] for i in range(6))
    assert decoupled_ratio(out_a, out_v, label).item() == pytest.approx((score_a / score_v).item(), rel=1e-6)


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio = nn.Linear(6, 4)
        self.visual = nn.Linear(6, 4)
        self.other = nn.Linear(4, 3)
        self.fusion = SimAM2(4, zeta_mode="learnable")

    def forward(self, a, v):
        return self.other(self.fusion(self.audio(a), self.visual(v)))


def _step(model, opt, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, v = torch.randn(2, 8, 6, generator=g, device="cpu").to(torch.get_default_device())
    y = torch.randint(0, 3, (8,), generator=g, device="cpu").to(torch.get_default_device())
    opt.zero_grad()
    nn.functional.cross_entropy(model(a, v), y).backward()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_ogm_scales_each_group_by_its_coefficient_and_nothing_else():
    torch.manual_seed(0)
    model = TwoBranch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mod = GradientModulator({"audio": model.audio.parameters(), "visual": model.visual.parameters()},
                            fusion=model.fusion, alpha=0.5, noise=False)
    _step(model, opt)
    before = _grads(model)
    zeta = model.fusion.zeta
    k1, k2 = ogm_coefficients(decoupling_free_ratio(zeta), 0.5)
    assert mod.apply()
    for name, p in model.named_parameters():
        k = k1 if name.startswith("audio") else k2 if name.startswith("visual") else 1.0
        torch.testing.assert_close(p.grad, before[name] * k)
    assert mod.last["rho_zeta"].item() == pytest.approx(decoupling_free_ratio(zeta).item(), rel=1e-6)
    assert min(k1.item(), k2.item()) < 1  # the test would not notice a no-op otherwise


def test_epoch_window_and_unchanged_step_outside_it():
    torch.manual_seed(0)
    hooked, plain = TwoBranch(), TwoBranch()
    plain.load_state_dict(hooked.state_dict())
    opt_h = torch.optim.SGD(hooked.parameters(), lr=0.1, momentum=0.9)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    epoch = {"now": 0}
    mod = GradientModulator({"a": hooked.audio.parameters(), "v": hooked.visual.parameters()},
                            fusion=hooked.fusion, alpha=1.0, noise=True, start_epoch=2, end_epoch=3,
                            epoch_fn=lambda: epoch["now"])
    handle = mod.attach(opt_h)
    for e in range(2):  # outside the window: identical to no modulation
        epoch["now"] = e
        for model, opt in ((hooked, opt_h), (plain, opt_p)):
            _step(model, opt, seed=e)
            opt.step()
        assert mod.last["applied"] is False
    for p, q in zip(hooked.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    epoch["now"] = 2
    _step(hooked, opt_h, seed=5)
    _step(plain, opt_p, seed=5)
    opt_h.step()
    opt_p.step()
    assert mod.last["applied"] is True
    assert not torch.equal(hooked.audio.weight, plain.audio.weight)
    torch.testing.assert_close(hooked.other.weight, plain.other.weight)  # not in a group
    handle.remove()


def test_ge_noise_has_the_gradients_std():
    p = nn.Parameter(torch.zeros(400, 300))
    q = nn.Parameter(torch.zeros(10))
    p.grad = torch.randn(400, 300) * 0.2 + 0.05
    q.grad = torch.randn(10)
    before = p.grad.clone()
    fusion = type("F", (), {"zeta": torch.full((4, 2), 0.8)})()  # ρ1 = 4 → k1 = 1 − tanh(4α)
    mod = GradientModulator({"a": [p], "b": [q]}, fusion=fusion, alpha=0.2, noise=True, seed=3)
    mod.apply()
    k1 = 1 - math.tanh(0.2 * 4)
    noise = p.grad - k1 * before
    assert noise.mean().abs() < 3 * before.std() / math.sqrt(noise.numel()) + 1e-4
    assert noise.std().item() == pytest.approx(before.std().item(), rel=0.02)
    assert torch.equal(mod.last["k2"], torch.tensor(1.0))


def test_global_hook_fires_only_for_optimizers_holding_the_groups():
    model, other = TwoBranch(), nn.Linear(3, 3)
    mod = GradientModulator({"a": model.audio.parameters(), "v": model.visual.parameters()},
                            fusion=model.fusion, noise=False)
    handle = mod.attach()
    try:
        opt_other = torch.optim.SGD(other.parameters(), lr=0.1)
        other(torch.randn(2, 3)).sum().backward()
        opt_other.step()
        assert "applied" not in mod.last
        opt = torch.optim.Adam(model.parameters())
        _step(model, opt)
        opt.step()
        assert mod.last["applied"] is True
    finally:
        handle.remove()


def test_decoupling_free_with_fixed_zeta_is_an_error():
    model = TwoBranch()
    model.fusion = SimAM2(4, zeta_mode="fixed")
    with pytest.raises(ValueError, match="learnable"):
        GradientModulator({"a": model.audio.parameters(), "v": model.visual.parameters()}, fusion=model.fusion)


def test_decoupled_ratio_drives_modulation_when_asked():
    model = TwoBranch()
    mod = GradientModulator({"a": model.audio.parameters(), "v": model.visual.parameters()},
                            fusion=model.fusion, ratio="decoupled", noise=False, alpha=1.0)
    _step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="observe_logits"):
        mod.apply()
    logits_a = torch.tensor([[4.0, 0.0], [4.0, 0.0]])
    logits_v = torch.zeros(2, 2)
    rho = mod.observe_logits(logits_a, logits_v, torch.tensor([0, 0]))
    before = model.audio.weight.grad.clone()
    mod.apply()
    torch.testing.assert_close(model.audio.weight.grad, before * (1 - math.tanh(rho.item())))
    assert "rho_zeta" in mod.last  # both ratios recorded side by side


def test_bad_groups():
    with pytest.raises(ValueError, match="exactly two"):
        GradientModulator({"a": [nn.Parameter(torch.zeros(1))]}, ratio="decoupled")
    with pytest.raises(ValueError, match="empty"):
        GradientModulator({"a": [], "b": [nn.Parameter(torch.zeros(1))]}, ratio="decoupled")


# -- faults: no forward yet, NaN ratios, one-element parameters, bad α, overlaps, double attach -------

def test_modulating_before_a_training_forward_is_an_error_not_nan():
    torch.manual_seed(0)
    model = TwoBranch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mod = GradientModulator({"a": model.audio.parameters(), "v": model.visual.parameters()},
                            fusion=model.fusion, noise=True, alpha=0.5)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="has not run a forward in training mode yet"):
        mod.apply()  # was: ρ = nan, k2 = nan, the visual group's gradients nan
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    model.eval()  # forwards in eval mode do not count: the step is refused, the weights stay finite
    mod.attach(opt)
    _step(model, opt)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="has not run a forward in training mode yet"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    model.train()
    _step(model, opt)
    opt.step()
    assert mod.last["applied"] and torch.isfinite(mod.last["rho_zeta"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_nan_ratio_leaves_the_gradients_unmodulated():
    p, q = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    p.grad, q.grad = torch.full((3,), 2.0), torch.full((3,), 3.0)
    fusion = type("F", (), {"zeta": torch.tensor([[0.7, float("nan")]])})()  # a fusion without our guard
    mod = GradientModulator({"a": [p], "b": [q]}, fusion=fusion, noise=False, alpha=0.5)
    assert mod.apply()
    assert torch.isnan(mod.last["rho_zeta"])
    assert mod.last["k1"].item() == 1 and mod.last["k2"].item() == 1
    assert torch.equal(p.grad, torch.full((3,), 2.0)) and torch.equal(q.grad, torch.full((3,), 3.0))


def test_ge_noise_on_a_one_element_parameter_is_the_floor_not_nan():
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(5))
    p.grad, q.grad = torch.tensor([0.5]), torch.randn(5)
    fusion = type("F", (), {"zeta": torch.full((4, 2), 0.8)})()  # ρ1 = 4
    mod = GradientModulator({"a": [p], "b": [q]}, fusion=fusion, alpha=0.2, noise=True, seed=0)
    mod.apply()  # was: p.grad = nan (std of one element)
    k1 = 1 - math.tanh(0.2 * 4)
    assert torch.isfinite(p.grad).all()
    assert abs(p.grad.item() - 0.5 * k1) < 1e-6  # N(0, (1e-8)²) noise only


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_alpha_must_be_finite_and_nonnegative(bad):
    with pytest.raises(ValueError, match=r"alpha \(α\) must be a finite number >= 0"):
        ogm_coefficients(2.0, bad)  # α = −1 gave k1 = 1.96: the dominant modality amplified
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"alpha \(α\) must be a finite number >= 0"):
        GradientModulator({"a": [p], "b": [q]}, ratio="decoupled", alpha=bad)


@pytest.mark.parametrize("rho1", [0.0, 0.5, 2.0, float("inf")])
def test_alpha_zero_is_no_modulation_at_any_ratio(rho1):
    k1, k2 = ogm_coefficients(torch.tensor(rho1), 0.0)  # 0 · ∞ would give nan at ρ1 = 0 and ∞
    assert k1.item() == 1 and k2.item() == 1


def test_a_parameter_in_two_places_is_refused():
    p, q = nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) is listed twice in group 'a' \(positions 0 and 1\)"):
        GradientModulator({"a": [p, p], "b": [q]}, ratio="decoupled")  # was: grad scaled by k1²
    with pytest.raises(ValueError, match=r"shape \(2, 3\) is listed in both groups 'a' and 'b'"):
        GradientModulator({"a": [p], "b": [q, p]}, ratio="decoupled")  # was: grad scaled by k1 k2


def test_attach_twice_is_one_hook():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p, q], lr=0.0)
    fusion = type("F", (), {"zeta": torch.full((4, 2), 0.8)})()  # ρ1 = 4
    mod = GradientModulator({"a": [p], "b": [q]}, fusion=fusion, noise=False, alpha=0.2)
    first = mod.attach(opt)
    assert mod.attach(opt) is first
    p.grad, q.grad = torch.ones(2), torch.ones(2)
    opt.step()
    k1 = 1 - math.tanh(0.2 * 4)
    torch.testing.assert_close(p.grad, torch.full((2,), k1))  # was k1² = 0.1129 instead of 0.3360
    with pytest.raises(RuntimeError, match="already attached to an optimizer"):
        mod.attach()  # a global hook would fire at this optimizer's step too
    first.remove()
    handle = mod.attach()  # after remove() it attaches anew
    try:
        assert handle is not first and mod.attach() is handle
        p.grad = torch.ones(2)
        opt.step()
        torch.testing.assert_close(p.grad, torch.full((2,), k1))
        with pytest.raises(RuntimeError, match="already attached globally"):
            mod.attach(opt)
    finally:
        handle.remove()


def test_decoupled_scores_refuse_labels_that_are_no_class_indices_and_integer_logits():
    """Float labels were truncated by .long(): labels 0.5 scored class 0's probability, silently."""
    logits1, logits2 = torch.tensor([[2.0, 1.0]]), torch.tensor([[1.0, 3.0]])
    for labels in (torch.tensor([0.5]), torch.tensor([True])):
        with pytest.raises(ValueError, match=rf"^labels must be class indices \(an integer tensor\), got {labels.dtype}$"):
            decoupled_scores(logits1, logits2, labels)
    with pytest.raises(ValueError, match=r"^per-modality logits must be floating-point tensors, got torch.int64"):
        decoupled_ratio(torch.tensor([[2, 1]]), torch.tensor([[1, 3]]), torch.tensor([0]))  # was NotImplementedError
    torch.testing.assert_close(decoupled_scores(logits1, logits2, torch.tensor([0])), torch.tensor([0.7311, 0.1192]),
                               rtol=1e-4, atol=1e-4)


def _two_grads(seed):
    g = torch.Generator().manual_seed(seed)
    p, q = nn.Parameter(torch.zeros(30, 20)), nn.Parameter(torch.zeros(10))
    p.grad, q.grad = torch.randn(30, 20, generator=g), torch.randn(10, generator=g)
    return p, q


@pytest.mark.parametrize("mode, noise", [("ogm", False), ("ogm_ge", True)])
def test_the_old_mode_spelling_still_modulates_as_noise_does_and_warns(mode, noise):
    fusion = type("F", (), {"zeta": torch.full((4, 2), 0.8)})()
    p, q = _two_grads(0)
    with pytest.warns(DeprecationWarning, match=f"mode='{mode}'.*noise={noise}") as caught:
        old = GradientModulator({"a": [p], "b": [q]}, fusion=fusion, alpha=0.2, mode=mode, seed=3)
    assert caught[0].filename == __file__  # attributed to the caller, not to the core
    old.apply()
    p2, q2 = _two_grads(0)
    new = GradientModulator({"a": [p2], "b": [q2]}, fusion=fusion, alpha=0.2, noise=noise, seed=3)
    new.apply()
    assert old.noise is noise and torch.equal(p.grad, p2.grad) and torch.equal(q.grad, q2.grad)
    with pytest.warns(DeprecationWarning, match="read .noise"):
        assert old.mode == mode


def test_mode_and_noise_that_disagree_or_a_bad_noise_are_refused():
    p, q = _two_grads(0)
    with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
        GradientModulator({"a": [p], "b": [q]}, ratio="decoupled", mode="ogm", noise=True)
    with pytest.raises(ValueError, match="noise must be True or False"):
        GradientModulator({"a": [p], "b": [q]}, ratio="decoupled", noise="ogm")


def test_noise_defaults_to_ge_as_mode_did():
    p, q = _two_grads(0)
    assert GradientModulator({"a": [p], "b": [q]}, ratio="decoupled").noise is True
