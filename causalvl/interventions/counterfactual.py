"""Counterfactual inference against language priors (the former home of both methods).

* CF-VQA (:class:`CFVQAConfig`, ``"cfvqa"``) lives in :mod:`causalvl.interventions.cfvqa`;
* model-agnostic prior subtraction (:class:`PriorSubtractionConfig`) in
  :mod:`causalvl.interventions.prior_subtraction`;
* the answer branch head (:class:`AnswerBranch`, :func:`build_branch`) in
  :mod:`causalvl.interventions.branches`.

This module re-exports them, so ``from causalvl.interventions.counterfactual import ...`` keeps
working.
"""

from __future__ import annotations

from .branches import AnswerBranch, build_branch
from .cfvqa import CFVQAConfig, Counterfactual, CounterfactualConfig
from .prior_subtraction import PriorSubtraction, PriorSubtractionConfig

__all__ = [
    "AnswerBranch",
    "CFVQAConfig",
    "Counterfactual",
    "CounterfactualConfig",
    "PriorSubtraction",
    "PriorSubtractionConfig",
    "build_branch",
]
