"""RUBi: a question-only mask on the answer logits during training.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    RUBi,
    RUBiConfig,
)

__all__ = [
    "RUBi",
    "RUBiConfig",
]
