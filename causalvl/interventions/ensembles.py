"""Bias-ensemble training objectives (the former home of LMH and GGE).

* LMH / BiasProduct live in :mod:`causalvl.interventions.lmh`, GGE in
  :mod:`causalvl.interventions.gge`;
* their pure loss functions and :func:`question_type_prior` in
  :mod:`causalvl.interventions.losses`;
* the prior table and :func:`set_bias_prior` in :mod:`causalvl.interventions.prior`.

This module re-exports them, so ``from causalvl.interventions.ensembles import ...`` keeps
working. ``docs/ensembles.md`` transcribes the official formulas.

Example:
    >>> import torch, causalvl
    >>> from causalvl.interventions.ensembles import question_type_prior, set_bias_prior
    >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    >>> qtype, labels = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 3])
    >>> prior = question_type_prior(qtype, labels, num_types=2, num_answers=4)
    >>> vl = causalvl.intervene(net, causalvl.LMHConfig())
    >>> set_bias_prior(vl, prior)
    >>> batch = {"pixel_values": torch.rand(4, 3, 8, 8), "input_ids": torch.randint(1, 20, (4, 5)),
    ...          "labels": labels, "question_type": qtype}
    >>> sorted(vl.objective(vl(batch), batch).parts)
    ['entropy', 'lmh_nll']
"""

from __future__ import annotations

from .gge import GGEConfig, GreedyGradientEnsemble
from .lmh import DEFAULT_ENTROPY_WEIGHT, BiasProductConfig, LearnedMixin, LMHConfig
from .losses import (
    GGE_SCHEDULE_OFFSET,
    GGELoss,
    PseudoLabel,
    bias_product_loss,
    gge_decompose_loss,
    gge_pseudo_label,
    gge_schedule_weight,
    greedy_gradient_loss,
    greedy_gradient_softmax_ce_loss,
    lmh_bce_loss,
    lmh_softmax_loss,
    prior_log_probs,
    question_type_prior,
)
from .prior import set_bias_prior

__all__ = [
    "DEFAULT_ENTROPY_WEIGHT",
    "GGE_SCHEDULE_OFFSET",
    "BiasProductConfig",
    "GGELoss",
    "GGEConfig",
    "GreedyGradientEnsemble",
    "LMHConfig",
    "LearnedMixin",
    "PseudoLabel",
    "bias_product_loss",
    "gge_decompose_loss",
    "gge_pseudo_label",
    "gge_schedule_weight",
    "greedy_gradient_loss",
    "greedy_gradient_softmax_ce_loss",
    "lmh_bce_loss",
    "lmh_softmax_loss",
    "prior_log_probs",
    "question_type_prior",
    "set_bias_prior",
]
