"""The vanilla fusion forms of Sec. 2.2, each upgraded with SimAM² (SPEC §4).

Every form reduces its inputs to the two terms X1, X2 that the vanilla model would add, and hands
them to :class:`~simam2.core.SimAM2`; the forms differ only in what X1 and X2 are.
"""

from __future__ import annotations

import torch

from .fusion import SimAM2


class Summation(SimAM2):
    """Summation: X1, X2 are the two modality terms the vanilla model adds (in OGM-GE, fc_x(x) and
    fc_y(y)). With ζ = 0.5 and the attention set aside this is their average (``u="eq4"``) or their
    sum, the vanilla output (``u="vanilla"``, SPEC §2)."""


class FiLMFusion(SimAM2):
    """FiLM (Eq. 9–10): with γ, β = f(x), h(x) and F the other modality, X1 = γ ⊙ F, X2 = β.

    The output is the attention applied to ``ζ γ F + (1 − ζ) β``.
    """

    def forward(self, gamma: torch.Tensor, feature: torch.Tensor, beta: torch.Tensor,
                zeta: torch.Tensor | None = None) -> torch.Tensor:
        if gamma.shape != feature.shape:
            raise ValueError(f"gamma {tuple(gamma.shape)} and feature {tuple(feature.shape)} must have one shape")
        return super().forward(gamma * feature, beta, zeta)


class ConcatFusion(SimAM2):
    """Concatenation: X1 = [x ; 0] and X2 = [0 ; y], padded along the channel dim (SPEC §4).

    The output has ``x_channels + y_channels`` channels, the width of the vanilla concatenation, so
    the layer that follows it stands. With ζ = 0.5 the superposition is half the concatenation.
    """

    def __init__(self, x_channels: int, y_channels: int, zeta_mode: str = "fixed", lam: float = 1e-6,
                 s: float = 2.5, neuron_dims=None, sync_dist: bool = True, u: str = "eq4", *,
                 zeta: str | None = None):
        super().__init__(x_channels + y_channels, zeta_mode, lam, s, neuron_dims, sync_dist, u, zeta=zeta)
        self.x_channels, self.y_channels = x_channels, y_channels

    def pad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([x ; 0], [0 ; y]) along dim 1."""
        if x.dim() < 2 or y.dim() < 2 or x.shape[1] != self.x_channels or y.shape[1] != self.y_channels:
            raise ValueError(
                f"expected x of shape (B, {self.x_channels}, ...) and y of shape (B, {self.y_channels}, ...), "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.shape[:1] + x.shape[2:] != y.shape[:1] + y.shape[2:]:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} differ outside the channel dim")
        zx = x.new_zeros((x.shape[0], self.y_channels) + tuple(x.shape[2:]))
        zy = y.new_zeros((y.shape[0], self.x_channels) + tuple(y.shape[2:]))
        return torch.cat([x, zx], dim=1), torch.cat([zy, y], dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, zeta: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(*self.pad(x, y), zeta)


class LateFusion(SimAM2):
    """Late fusion of two embeddings of shape (..., C): per-segment or per-sample streams (AVGA, PSP,
    FOP).

    Every leading index (batch, segment, …) is one sample whose C features are its neurons: the
    inputs are viewed as (N, C), fused, and returned in their own shape. ζ is then (N, C), one value
    per sample and channel, and r's batch variance runs over all N samples.

    ``vanilla`` says how the upstream combines the streams without SimAM² — ``"mean"`` (PSP's
    ``(a + v) / 2``, the default) or ``"sum"`` — which ``u="vanilla"`` reads (SPEC §2).
    """

    def __init__(self, channels: int, zeta_mode: str = "fixed", lam: float = 1e-6, s: float = 2.5,
                 sync_dist: bool = True, u: str = "eq4", vanilla: str = "mean", *, zeta: str | None = None):
        super().__init__(channels, zeta_mode, lam, s, None, sync_dist, u, vanilla, zeta=zeta)

    def forward(self, a: torch.Tensor, v: torch.Tensor, zeta: torch.Tensor | None = None) -> torch.Tensor:
        if a.shape != v.shape:
            raise ValueError(f"both streams must have one shape, got {tuple(a.shape)} and {tuple(v.shape)}")
        if a.dim() < 1 or a.shape[-1] != self.channels:
            raise ValueError(f"expected streams of shape (..., {self.channels}), got {tuple(a.shape)}")
        flat = (-1, self.channels)
        if zeta is not None:
            if zeta.shape != a.shape:
                raise ValueError(f"zeta must have the streams' shape {tuple(a.shape)}, got {tuple(zeta.shape)}")
            zeta = zeta.reshape(flat)
        return super().forward(a.reshape(flat), v.reshape(flat), zeta).view(a.shape)
