"""CATT: causal attention (front-door adjustment) with cross-sample attention hooks.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    DEFAULT_DICTIONARY_SIZE,
    CATTConfig,
    CausalAttention,
    CrossSampleAttention,
    cross_sample_attention,
    find_attention_blocks,
)

__all__ = [
    "CATTConfig",
    "CausalAttention",
    "cross_sample_attention",
    "CrossSampleAttention",
    "DEFAULT_DICTIONARY_SIZE",
    "find_attention_blocks",
]
