"""The framework-free math of SimAM² (SPEC §1–§6): torch is the only dependency.

- :func:`importance` — neuron importance, 1 / e*_t (Eq. 1–3).
- :class:`SimAM2` — superposition, degradation factor and fused energy attention (Eq. 4–8);
  :class:`MultiSimAM2` — the same over K modalities (our extension).
- :class:`Summation`, :class:`FiLMFusion`, :class:`ConcatFusion`, :class:`LateFusion` — the fusion
  forms of Sec. 2.2.
- :func:`decoupling_free_ratio` (Eq. 11), :func:`ogm_coefficients` (OGM-GE's rule),
  :func:`decoupled_ratio` (OGM-GE's own ratio) and :class:`GradientModulator`.
"""

from .energy import exact_minimal_energy, importance
from .forms import ConcatFusion, FiLMFusion, LateFusion, Summation
from .fusion import MultiSimAM2, SimAM2, degradation_factor, fused_energy, superpose
from .modulation import (
    GradientModulator,
    decoupled_ratio,
    decoupled_scores,
    decoupling_free_ratio,
    ogm_coefficients,
)

__all__ = [
    "importance", "exact_minimal_energy",
    "SimAM2", "MultiSimAM2", "superpose", "fused_energy", "degradation_factor",
    "Summation", "FiLMFusion", "ConcatFusion", "LateFusion",
    "GradientModulator", "decoupling_free_ratio", "ogm_coefficients", "decoupled_ratio", "decoupled_scores",
]
