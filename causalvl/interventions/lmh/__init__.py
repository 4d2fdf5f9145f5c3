"""LMH (Learned-Mixin +H) and BiasProduct: ensembles with the question-type prior.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    DEFAULT_ENTROPY_WEIGHT,
    BiasProductConfig,
    LearnedMixin,
    LMHConfig,
    bias_product_loss,
    lmh_bce_loss,
    lmh_softmax_loss,
    prior_log_probs,
    question_type_prior,
    set_bias_prior,
)

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
