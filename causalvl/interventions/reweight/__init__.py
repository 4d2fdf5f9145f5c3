"""Reweighting by the answer prior: loss weights ``1 / p(answer | type)`` and the LMH authors' baselines.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    Reweight,
    ReweightConfig,
    reweight_loss,
)

__all__ = [
    "Reweight",
    "reweight_loss",
    "ReweightConfig",
]
