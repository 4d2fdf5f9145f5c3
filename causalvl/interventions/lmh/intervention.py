"""Bias-ensemble training objectives: LMH (Learned-Mixin +H) and GGE (Greedy Gradient Ensemble).

Both train the wrapped model *together with* a model of the bias, so that the main model only
has to explain what the bias cannot; at inference the main (factual) logits are used unchanged.
The bias is a per-question-type answer prior ``b`` (``(num_question_types, num_answers)``,
see :func:`question_type_prior`) and, for GGE, a question-only branch on a stop-gradient
question feature.

Formulas follow the official code (``docs/ensembles.md`` transcribes them):

* LMH, ``form="bce"`` (VQA, per-answer sigmoid): each answer is a 2-way distribution
  ``[sigma(f_a), 1 - sigma(f_a)]`` mixed with the smoothed bias ``[b_a + sigma(s), 1 - b_a +
  sigma(s)]`` raised to the power ``g(x) = softplus(w . h + beta)``; loss = binary NLL of the
  renormalised mixture (summed over answers, averaged over the batch) + ``entropy_weight`` x
  the mean entropy of the scaled bias.
* LMH, ``form="softmax"``: ``CE(log_softmax(f) + g * log b, a) + w * mean H(softmax(g log b))``
  with ``log b`` the floored log-probabilities of the prior (:func:`prior_log_probs`).
* GGE: pseudo labels ``2 y sigma(-2 y r)`` (published) or ``clamp(y - sigma(r), 0, 1)``
  (the exact negative BCE gradient); loss ``A * BCE(f, pseudo_label)``.

The pure functions (:func:`lmh_bce_loss`, :func:`lmh_softmax_loss`, :func:`bias_product_loss`,
:func:`gge_pseudo_label`, :func:`greedy_gradient_loss`) work on plain tensors; they live in
:mod:`causalvl.interventions.losses` and are re-exported here. The configs
:class:`LMHConfig`, :class:`BiasProductConfig` and :class:`GGEConfig` run them through
:func:`causalvl.intervene`.

Example:
    >>> import torch, causalvl
    >>> from causalvl import question_type_prior
    >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    >>> qtype, labels = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 3])
    >>> prior = question_type_prior(qtype, labels, num_types=2, num_answers=4)
    >>> vl = causalvl.intervene(net, causalvl.LMHConfig())
    >>> vl.set_bias_prior(prior)
    >>> batch = {"pixel_values": torch.rand(4, 3, 8, 8), "input_ids": torch.randint(1, 20, (4, 5)),
    ...          "labels": labels, "question_type": qtype}
    >>> sorted(vl.objective(vl(batch), batch).parts)
    ['entropy', 'lmh_nll']
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...adapters.base import ModelAdapter
from ...batch import require_labels
from ...errors import InputError, InterventionStateError
from ...outputs import InterventionOutput
from ...runtime import module_dtype_device
from ..base import ForwardState, implements
from ..branches import (
    _seeded_init,
    check_feature_width,
    infer_feature_dim,
    infer_num_answers,
    refuse_generative,
)

# the prior table and the pure loss functions live in .losses (re-exported here)
from ..losses import (
    bias_product_loss,
    lmh_bce_loss,
    lmh_softmax_loss,
    prior_log_probs,
    question_type_prior,
)
from ..prior import _PriorTableMixin, set_bias_prior
from .config import DEFAULT_ENTROPY_WEIGHT, BiasProductConfig, LMHConfig  # noqa: F401

logger = logging.getLogger(__name__)

__all__ = [
    "BiasProductConfig",
    "LMHConfig",
    "LearnedMixin",
    "bias_product_loss",
    "lmh_bce_loss",
    "lmh_softmax_loss",
    "prior_log_probs",
    "question_type_prior",
    "set_bias_prior",
]


# ----------------------------------------------------------------------------------------
# implementations
# ----------------------------------------------------------------------------------------
@implements(LMHConfig)
class LearnedMixin(_PriorTableMixin):
    """Implementation of :class:`LMHConfig` (and :class:`BiasProductConfig`).

    Parameters: ``gate`` = Linear(feature_dim, 1) (absent for BiasProduct); ``smoothing`` = the
    scalar ``s`` (``"bce"`` form with ``learned_smoothing``). Buffers: ``prior``,
    ``prior_is_set``.

    ``combine`` records ``g(x)`` as ``output.features["lmh_gate"]`` ``(B,)``; ``loss`` returns
    ``{"lmh_nll": ..., "entropy": w * H}`` and replaces the task loss.
    """

    replaces_task_loss = True

    def __init__(self, config: LMHConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        refuse_generative(adapter, type(config).__name__)
        dtype, device = module_dtype_device(model)
        self.num_answers = config.num_answers or infer_num_answers(model, adapter)
        if config.learned_mixin:
            dim = config.feature_dim or infer_feature_dim(model, adapter, config.hidden_role)
            # with a seed, the default init's draws are discarded (and redrawn seeded)
            with torch.random.fork_rng(devices=[], enabled=config.init_seed is not None):
                self.gate = nn.Linear(dim, 1)
            _seeded_init(self.gate, config.init_seed)
            self.gate.to(device=device, dtype=dtype)
        else:
            self.gate = None
        if config.form == "bce" and config.learned_smoothing:
            self.smoothing = nn.Parameter(
                torch.full((1,), float(config.smoothing_init), dtype=dtype, device=device)
            )
        else:
            self.smoothing = None
        self._init_prior(self.num_answers, dtype, device)

    @property
    def capture_roles(self) -> tuple[str, ...]:
        return (self.config.hidden_role,) if self.config.learned_mixin else ()

    def combine(self, state: ForwardState) -> None:
        if self.gate is None:
            return
        h = state.feature(self.config.hidden_role)
        check_feature_width(
            h,
            self.gate.in_features,
            self.config.hidden_role,
            owner=type(self.config).__name__,
            field="feature_dim",
        )
        g = F.softplus(self.gate(h.to(self.gate.weight.dtype))).squeeze(-1)
        state.features["lmh_gate"] = g

    def gate_values(self, output: InterventionOutput) -> torch.Tensor | float:
        """``g(x)`` of each example ``(B,)`` (``1.0`` for BiasProduct)."""
        if self.gate is None:
            return 1.0
        if "lmh_gate" not in output.features:
            raise InterventionStateError(
                "output.features has no 'lmh_gate'; pass the output of the same wrapped model "
                "(vl(batch)) to vl.objective."
            )
        return output.features["lmh_gate"]

    def smoothing_value(self) -> torch.Tensor | float:
        """What is added to both bias entries in the ``"bce"`` form: ``sigma(s) + constant``."""
        value: torch.Tensor | float = float(self.config.constant_smoothing)
        if self.smoothing is not None:
            value = torch.sigmoid(self.smoothing.float()) + value
        return value

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.config
        f = output.factual_logits
        if f.dim() != 2 or f.shape[1] != self.num_answers:
            raise InputError(
                f"{type(cfg).__name__} needs answer logits (B, {self.num_answers}); got "
                f"{tuple(f.shape)} (contrastive models are not supported)."
            )
        labels = require_labels(batch, type(cfg).__name__).to(f.device)
        bias = self._batch_prior(batch, f.shape[0])
        gate = self.gate_values(output)
        if cfg.form == "bce":
            nll, entropy = lmh_bce_loss(f, labels, bias, gate, smoothing=self.smoothing_value())
        else:
            log_b = prior_log_probs(bias.float(), cfg.prior_floor)
            support = bias > 0 if cfg.support == "type" else None
            nll, entropy = lmh_softmax_loss(f, labels, log_b, gate, support)
        return {"lmh_nll": nll, "entropy": cfg.effective_entropy_weight() * entropy}
