"""GGE (Greedy Gradient Ensemble): train on what the bias cannot explain.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    GGEConfig,
    GreedyGradientEnsemble,
)

__all__ = [
    "GGEConfig",
    "GreedyGradientEnsemble",
]
