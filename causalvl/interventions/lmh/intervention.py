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
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...adapters.base import ModelAdapter
from ...batch import require_labels
from ...config import InterventionConfig
from ...errors import InputError, InterventionStateError
from ...outputs import InterventionOutput
from ...runtime import module_dtype_device
from ..base import ForwardState, implements
from ..branches import (
    _check_optional_int,
    _check_role,
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
from ..prior import _check_prior_fields, _PriorTableMixin, set_bias_prior

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

#: default entropy penalty of each LMH form (VQA-CP for "bce"; MNLI/BERT for "softmax")
DEFAULT_ENTROPY_WEIGHT = {"bce": 0.36, "softmax": 0.03}


# ----------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class LMHConfig(InterventionConfig):
    """Learned-Mixin +H (Clark et al., 2019): ensemble the model with a question-type prior
    whose weight ``g(x)`` the model learns, plus an entropy penalty that keeps ``g`` from
    switching the prior off. Training only; ``logits`` stay the base model's logits.

    Args:
        form: ``"bce"`` (per-answer sigmoid, the VQA code) or ``"softmax"`` (closed-set
            classifiers and softmax VLMs; the bias enters as log-probabilities).
        entropy_weight: ``w``; ``None`` means 0.36 for ``"bce"`` (VQA-CP), 0.03 for
            ``"softmax"`` (MNLI) when ``learned_mixin``, else 0. ``0`` gives plain Learned-Mixin.
        learned_mixin: learn ``g(x) = softplus(w . h + beta)``; ``False`` fixes ``g = 1``
            (BiasProduct, see :class:`BiasProductConfig`).
        hidden_role: role (or module path) of the hidden vector ``h`` ``(B, D)`` that ``g`` reads;
            not detached, so the gate also trains the model (as published).
        feature_dim: width of ``h`` (inferred from the role's module when ``None``). Formerly
            ``hidden_dim`` (accepted with a ``FutureWarning`` for one release).
        learned_smoothing: ``"bce"`` form only: add a learned ``sigma(s)`` to both bias entries
            (``s`` initialised at ``smoothing_init``); the softmax form uses ``prior_floor``.
        smoothing_init: initial ``s`` (-1 gives 0.269).
        constant_smoothing: a constant added to both bias entries (``"bce"`` form).
        prior_floor: smallest prior probability in the softmax form (:func:`prior_log_probs`).
        support: softmax form: ``"type"`` (default) lets the prior speak only for the answers
            its question type has in the training data (prior > 0) and leaves the others to the
            model, so the debiased model keeps answering within the question type;
            ``"all"`` floors every answer's prior at ``prior_floor``, as the text
            classification code does (all of whose labels are valid for every input): on a
            VQA model that lets ``g log b`` explain away the out-of-type answers, which the
            model then predicts at test time.
        num_question_types: rows of the prior table (inferred from ``prior`` or from the first
            :func:`set_bias_prior` call when ``None``).
        num_answers: answers (inferred from the model when ``None``).
        prior: optional small prior table written into the config (JSON); large tables go
            through :func:`set_bias_prior` and are saved with the weights.
        init_seed: seeds the initial weights of the gate (a private generator; the global RNG
            is neither used nor changed); ``None`` draws them from the global RNG.

    The batch passed to ``objective`` needs ``labels`` and ``question_type`` ``(B,)`` long.

    Example:
        >>> cfg = LMHConfig(prior=[[0.9, 0.1], [0.2, 0.8]])
        >>> cfg.num_types(), cfg.effective_entropy_weight()
        (2, 0.36)
    """

    type = "lmh"
    _renamed = {"hidden_dim": "feature_dim"}
    form: Literal["bce", "softmax"] = "bce"
    entropy_weight: float | None = None
    learned_mixin: bool = True
    hidden_role: str = "fused"
    feature_dim: int | None = None
    learned_smoothing: bool = True
    smoothing_init: float = -1.0
    constant_smoothing: float = 0.0
    prior_floor: float = 1e-4
    support: Literal["type", "all"] = "type"
    num_question_types: int | None = None
    num_answers: int | None = None
    prior: tuple[tuple[float, ...], ...] | None = None
    init_seed: int | None = 0

    def validate(self) -> None:
        if self.entropy_weight is not None:
            self._check_positive("entropy_weight", allow_zero=True)
        for name in ("learned_mixin", "learned_smoothing"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "must be True or False")
        for name in ("smoothing_init", "constant_smoothing"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                self._fail(name, "must be a number")
            if not math.isfinite(value):
                self._fail(name, "must be finite")
        self._check_positive("constant_smoothing", allow_zero=True)
        if not (isinstance(self.prior_floor, (int, float)) and 0 < self.prior_floor < 1):
            self._fail("prior_floor", "must be a number in (0, 1), e.g. 1e-4")
        _check_role(self, "hidden_role")
        _check_optional_int(self, "feature_dim")
        _check_prior_fields(self)

    def effective_entropy_weight(self) -> float:
        """``entropy_weight``, or its default for this form when ``None``."""
        if self.entropy_weight is not None:
            return float(self.entropy_weight)
        return DEFAULT_ENTROPY_WEIGHT[self.form] if self.learned_mixin else 0.0

    def num_types(self) -> int | None:
        """Rows of the prior table, if known from the config."""
        if self.prior is not None:
            return len(self.prior)
        return self.num_question_types


@dataclass(kw_only=True)
class BiasProductConfig(LMHConfig):
    """BiasProduct: :class:`LMHConfig` with ``g(x) = 1`` (a plain product of experts with the
    prior) and no entropy penalty by default.

    Example:
        >>> BiasProductConfig().learned_mixin, BiasProductConfig().effective_entropy_weight()
        (False, 0.0)
    """

    type = "bias_product"
    learned_mixin: bool = False

    def validate(self) -> None:
        super().validate()
        if self.learned_mixin:
            self._fail("learned_mixin", "BiasProduct fixes g = 1; use LMHConfig to learn it")


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
