"""CATT: causal attention (front-door adjustment) with cross-sample attention hooks.

The config is in :mod:`.config` (pure Python, imported with the package) and the
implementation in :mod:`.intervention` (torch, imported when one of its names is first used);
built-in types are looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from __future__ import annotations

from ..._lazy import lazy_attributes
from .config import DEFAULT_DICTIONARY_SIZE, CATTConfig

#: public name -> submodule it lives in (imported on first use, so importing the config does not
#: import torch)
_LAZY = {
    "CausalAttention": ".intervention",
    "cross_sample_attention": ".intervention",
    "CrossSampleAttention": ".intervention",
    "find_attention_blocks": ".intervention",
}

__all__ = [
    "CATTConfig",
    "CausalAttention",
    "cross_sample_attention",
    "CrossSampleAttention",
    "DEFAULT_DICTIONARY_SIZE",
    "find_attention_blocks",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
