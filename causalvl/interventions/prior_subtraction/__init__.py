"""Model-agnostic prior subtraction against an image-removed counterfactual pass.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    PriorSubtraction,
    PriorSubtractionConfig,
)

__all__ = [
    "PriorSubtraction",
    "PriorSubtractionConfig",
]
