"""SimAM²: energy-based attention for multimodal fusion (see ``simam2.core``) and adapters that put
it into upstream research code (see ``simam2.adapters``)."""

__version__ = "0.1.0"
