"""LMH (Learned-Mixin +H) and BiasProduct: ensembles with the question-type prior.

The config is in :mod:`.config` (pure Python, imported with the package) and the
implementation in :mod:`.intervention` (torch, imported when one of its names is first used);
built-in types are looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from __future__ import annotations

from ..._lazy import lazy_attributes
from .config import DEFAULT_ENTROPY_WEIGHT, BiasProductConfig, LMHConfig

#: public name -> submodule it lives in (imported on first use, so importing the config does not
#: import torch)
_LAZY = {
    "bias_product_loss": ".intervention",
    "LearnedMixin": ".intervention",
    "lmh_bce_loss": ".intervention",
    "lmh_softmax_loss": ".intervention",
    "prior_log_probs": ".intervention",
    "question_type_prior": ".intervention",
    "set_bias_prior": ".intervention",
}

__all__ = [
    "bias_product_loss",
    "BiasProductConfig",
    "DEFAULT_ENTROPY_WEIGHT",
    "LearnedMixin",
    "lmh_bce_loss",
    "lmh_softmax_loss",
    "LMHConfig",
    "prior_log_probs",
    "question_type_prior",
    "set_bias_prior",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
