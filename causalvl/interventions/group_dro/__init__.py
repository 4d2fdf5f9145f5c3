"""Group DRO: online worst-group weights over per-group mean losses.

The config is in :mod:`.config` (pure Python, imported with the package) and the
implementation in :mod:`.intervention` (torch, imported when one of its names is first used);
built-in types are looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from __future__ import annotations

from ..._lazy import lazy_attributes
from .config import GroupDROConfig

#: public name -> submodule it lives in (imported on first use, so importing the config does not
#: import torch)
_LAZY = {
    "group_dro_update": ".intervention",
    "group_mean_losses": ".intervention",
    "GroupDRO": ".intervention",
    "per_example_loss": ".intervention",
}

__all__ = [
    "group_dro_update",
    "group_mean_losses",
    "GroupDRO",
    "GroupDROConfig",
    "per_example_loss",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
