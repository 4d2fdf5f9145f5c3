"""RUBi: a question-only mask on the answer logits during training.

The config is in :mod:`.config` (pure Python, imported with the package) and the
implementation in :mod:`.intervention` (torch, imported when one of its names is first used);
built-in types are looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from __future__ import annotations

from ..._lazy import lazy_attributes
from .config import RUBiConfig

#: public name -> submodule it lives in (imported on first use, so importing the config does not
#: import torch)
_LAZY = {
    "RUBi": ".intervention",
}

__all__ = [
    "RUBi",
    "RUBiConfig",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
