"""Reweighting by the answer prior: loss weights ``1 / p(answer | type)`` and the LMH authors' baselines.

The config is in :mod:`.config` (pure Python, imported with the package) and the
implementation in :mod:`.intervention` (torch, imported when one of its names is first used);
built-in types are looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from __future__ import annotations

from ..._lazy import lazy_attributes
from .config import ReweightConfig

#: public name -> submodule it lives in (imported on first use, so importing the config does not
#: import torch)
_LAZY = {
    "Reweight": ".intervention",
    "reweight_loss": ".intervention",
}

__all__ = [
    "Reweight",
    "reweight_loss",
    "ReweightConfig",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
