"""Group DRO: online worst-group weights over per-group mean losses.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    GroupDRO,
    GroupDROConfig,
    group_dro_update,
    group_mean_losses,
    per_example_loss,
)

__all__ = [
    "group_dro_update",
    "group_mean_losses",
    "GroupDRO",
    "GroupDROConfig",
    "per_example_loss",
]
