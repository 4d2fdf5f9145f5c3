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

import logging
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters.base import ModelAdapter
from ..config import InterventionConfig
from ..errors import ConfigError, InputError, InterventionStateError
from ..outputs import InterventionOutput
from ..runtime import module_dtype_device
from .base import ForwardState, Intervention, implements
from .branches import (
    BranchMLP,
    check_feature_width,
    infer_feature_dim,
    infer_num_answers,
    refuse_generative,
    stop_gradient_into,
)

# the prior table and the pure loss functions live in .losses (re-exported here)
from .losses import (
    GGE_SCHEDULE_OFFSET,
    PseudoLabel,
    _as_scores,
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

logger = logging.getLogger(__name__)

__all__ = [
    "GGE_SCHEDULE_OFFSET",
    "BiasProductConfig",
    "GGEConfig",
    "GreedyGradientEnsemble",
    "LMHConfig",
    "LearnedMixin",
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

#: default entropy penalty of each LMH form (VQA-CP for "bce"; MNLI/BERT for "softmax")
DEFAULT_ENTROPY_WEIGHT = {"bce": 0.36, "softmax": 0.03}


# ----------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------
def _check_prior_fields(cfg: Any) -> None:
    if cfg.num_question_types is not None:
        cfg._check_int("num_question_types", minimum=1)
    if cfg.num_answers is not None:
        cfg._check_int("num_answers", minimum=1)
    if cfg.prior is None:
        return
    rows = cfg.prior
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        cfg._fail("prior", "must be a non-empty list of rows (one list of floats per type)")
    try:
        table = tuple(tuple(float(v) for v in row) for row in rows)
    except (TypeError, ValueError):
        cfg._fail("prior", "must be a list of rows of numbers")
    widths = {len(r) for r in table}
    if len(widths) != 1 or 0 in widths:
        cfg._fail("prior", f"rows must all have the same non-zero length (got {sorted(widths)})")
    if any(not (math.isfinite(v) and 0 <= v <= 1) for r in table for v in r):
        cfg._fail("prior", "entries must be finite and in [0, 1]")
    if cfg.num_question_types is not None and cfg.num_question_types != len(table):
        cfg._fail(
            "num_question_types", f"does not match the {len(table)} rows of prior; drop one of them"
        )
    if cfg.num_answers is not None and cfg.num_answers != len(table[0]):
        cfg._fail("num_answers", f"does not match the prior's {len(table[0])} columns")
    cfg._normalise("prior", table)


def _seeded_init(module: nn.Module, seed: int | None) -> None:
    """Re-draw every ``nn.Linear`` of ``module`` with PyTorch's default init (uniform in
    ``±1/sqrt(fan_in)``) from a private generator, so heads do not depend on the global RNG.
    ``None`` keeps the init drawn from the global RNG."""
    if seed is None:
        return
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                bound = 1.0 / math.sqrt(sub.in_features) if sub.in_features else 0.0
                for p in (sub.weight, sub.bias):
                    if p is not None:
                        draw = torch.empty(p.shape, dtype=torch.float32)
                        nn.init.uniform_(draw, -bound, bound, generator=gen)
                        p.copy_(draw.to(p.dtype))


def _check_roles(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, str) or not value:
            cfg._fail(name, "must be a role name or module path (a non-empty string)")


def _check_dim(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) is not None:
            cfg._check_int(name, minimum=1)


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
        _check_roles(self, "hidden_role")
        _check_dim(self, "feature_dim")
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


@dataclass(kw_only=True)
class GGEConfig(InterventionConfig):
    """Greedy Gradient Ensemble (Han et al., 2021): fit the biases first, train the model on
    what they leave unexplained. Training only; ``logits`` stay the base model's logits.

    Args:
        bias: ``"distribution"`` (the question-type prior only: GGE-D, the d_bias ablation),
            ``"question"`` (a question-only branch only: q_bias) or ``"both"`` (GGE-DQ).
        variant: for ``"both"``: ``"iterative"`` (GGE-iter: the question branch and the model
            take separate optimizer steps, see :meth:`GreedyGradientEnsemble.stages`) or
            ``"together"`` (GGE-tog: one summed loss).
        loss: how the base model is trained on what the biases leave:

            * ``"bce"``: ``A * BCE(f, pseudo_label(y, r))`` (official ``GreedyGradient``);
            * ``"softmax_ce"``: ``mean_i -sum_a clamp(y - r, 0, 1)_ia log softmax(f_i)_a``
              (official ``GreedyGradient_softmaxCE``, :func:`greedy_gradient_softmax_ce_loss`);
              the bias branch's own loss takes the same form;
            * ``"decompose"``: ``A * [mean(-y log softmax f) - w * mean(-r' log softmax f)]``
              with ``r' = clamp(r, 0, 1) * y`` (official ``base_model_sfce.py``,
              :func:`gge_decompose_loss`); the question branch trains as in ``"softmax_ce"``.

            With the softmax losses the bias reference ``r`` is ``softmax(.)`` of the branch
            (plus ``b``) instead of ``sigma(.)``.
        pseudo_label: ``"published"`` ``2 y sigma(-2 y r)``, ``"corrected"``
            ``clamp(y - sigma(r), 0, 1)`` or ``"softmax"`` ``clamp(y - r, 0, 1)`` with ``r``
            built from the branch's softmax (:func:`gge_pseudo_label`). ``None``:
            ``"published"`` for ``loss="bce"``, ``"softmax"`` otherwise (the softmax losses
            accept only ``"softmax"``).
        detach_pseudo_label: stop gradients flowing into the pseudo label. ``None``: ``False``
            for ``loss="bce"`` (the published code lets them reach the question branch),
            ``True`` for ``"softmax_ce"`` (detached in the official code) and ``"decompose"``.
        decompose_weight: ``w`` of ``loss="decompose"`` (times the schedule).
        weight_schedule: ``"constant"`` or ``"sin"``: ``w`` is multiplied by
            :func:`gge_schedule_weight` ``sin(pi/2 * (e + 30) / (E + 30))`` of the current
            epoch ``e`` of ``E`` (the official Decompose weight), which the wrapper learns
            through ``vl.set_epoch(e, E)`` (``causalvl.training.Trainer`` calls it before
            every epoch). ``loss="decompose"`` only.
        question_role: role (or module path) of the question feature; the branch reads it
            through a stop-gradient, so the encoder gets no gradient from the branch.
        feature_dim: its width (inferred when ``None``). Formerly ``question_feature_dim``
            (accepted with a ``FutureWarning`` for one release).
        hidden_sizes: hidden widths of the branch MLP ``c_1`` (published ``(1024, 1024)``).
            Formerly ``hidden`` (accepted with a ``FutureWarning`` for one release).
        num_question_types, num_answers, prior: the distribution bias, as in
            :class:`LMHConfig` (needed by ``"distribution"`` and ``"both"``).
        init_seed: seeds the initial weights of ``c_1`` and ``c_2`` (a private generator);
            ``None`` draws them from the global RNG.

    The batch passed to ``objective`` needs ``labels`` and, unless ``bias="question"``,
    ``question_type`` ``(B,)`` long.

    Example:
        >>> GGEConfig(variant="together", hidden_sizes=(64,)).to_dict()["variant"]
        'together'
    """

    type = "gge"
    _renamed = {"hidden": "hidden_sizes", "question_feature_dim": "feature_dim"}
    bias: Literal["distribution", "question", "both"] = "both"
    variant: Literal["iterative", "together"] = "iterative"
    loss: Literal["bce", "softmax_ce", "decompose"] = "bce"
    pseudo_label: Literal["published", "corrected", "softmax"] | None = None
    detach_pseudo_label: bool | None = None
    decompose_weight: float = 1.0
    weight_schedule: Literal["constant", "sin"] = "constant"
    question_role: str = "language_features"
    feature_dim: int | None = None
    hidden_sizes: tuple[int, ...] = (1024, 1024)
    num_question_types: int | None = None
    num_answers: int | None = None
    prior: tuple[tuple[float, ...], ...] | None = None
    init_seed: int | None = 0

    def validate(self) -> None:
        if self.detach_pseudo_label is not None and not isinstance(self.detach_pseudo_label, bool):
            self._fail("detach_pseudo_label", "must be True, False or None (the loss's default)")
        if self.pseudo_label is not None and self.pseudo_label not in typing.get_args(PseudoLabel):
            self._fail("pseudo_label", f"choose one of {typing.get_args(PseudoLabel)} or None")
        if self.loss != "bce" and self.pseudo_label not in (None, "softmax"):
            self._fail(
                "pseudo_label",
                f"loss={self.loss!r} builds its pseudo label from probabilities; use "
                "pseudo_label='softmax' (or None), or loss='bce' for the sigmoid forms",
            )
        w = self.decompose_weight
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            self._fail("decompose_weight", "must be a finite number")
        self._check_positive("decompose_weight", allow_zero=True)
        if self.weight_schedule != "constant" and self.loss != "decompose":
            self._fail(
                "weight_schedule",
                "only weighs the Decompose loss; set loss='decompose' or keep 'constant'",
            )
        _check_roles(self, "question_role")
        _check_dim(self, "feature_dim")
        sizes = self.hidden_sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            self._fail("hidden_sizes", "must be a list of layer widths, e.g. (1024, 1024)")
        if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in sizes):
            self._fail("hidden_sizes", "layer widths must be integers >= 1")
        self._normalise("hidden_sizes", tuple(sizes))
        _check_prior_fields(self)

    def num_types(self) -> int | None:
        """Rows of the prior table, if known from the config."""
        if self.prior is not None:
            return len(self.prior)
        return self.num_question_types

    def effective_pseudo_label(self) -> PseudoLabel:
        """``pseudo_label``, or the default of ``loss`` when ``None``."""
        if self.pseudo_label is not None:
            return self.pseudo_label
        return "published" if self.loss == "bce" else "softmax"

    def effective_detach(self) -> bool:
        """``detach_pseudo_label``, or the default of ``loss`` when ``None``."""
        if self.detach_pseudo_label is not None:
            return self.detach_pseudo_label
        return self.loss != "bce"

    @property
    def uses_prior(self) -> bool:
        return self.bias in ("distribution", "both")

    @property
    def uses_question_branch(self) -> bool:
        return self.bias in ("question", "both")


# ----------------------------------------------------------------------------------------
# implementations
# ----------------------------------------------------------------------------------------
class _PriorTableMixin(Intervention):
    """Holds the ``(num_question_types, num_answers)`` prior as buffers (saved with the
    weights): ``prior`` and ``prior_is_set``."""

    prior: torch.Tensor
    prior_is_set: torch.Tensor

    @property
    def uses_prior(self) -> bool:
        """These interventions read the question-type prior table (see :meth:`set_prior`)."""
        return True

    def _init_prior(self, num_answers: int, dtype: torch.dtype, device: torch.device) -> None:
        cfg = self.config
        rows = cfg.num_types() or 0
        if cfg.prior is not None:
            table = torch.tensor(cfg.prior, dtype=dtype, device=device)
            if table.shape[1] != num_answers:
                raise ConfigError(
                    f"{type(cfg).__name__}.prior has {table.shape[1]} columns but the model "
                    f"has {num_answers} answers; build the prior for this answer vocabulary."
                )
            is_set = True
        else:
            table = torch.zeros(rows, num_answers, dtype=dtype, device=device)
            is_set = False
        self.register_buffer("prior", table)
        self.register_buffer("prior_is_set", torch.tensor(is_set, device=device))

    def set_prior(self, table: torch.Tensor) -> None:
        """Install the prior table ``(num_question_types, num_answers)`` with entries in [0, 1].

        When the number of question types was not configured, the first table fixes it and
        is recorded in this intervention's own ``config.num_question_types`` (a copy: the
        caller's config is never changed), so saving and loading restore the shape.
        """
        cfg = self.config
        t = torch.as_tensor(table)
        if t.dim() != 2 or not t.is_floating_point():
            raise InputError(
                f"the prior must be a (num_question_types, num_answers) float tensor, got dtype "
                f"{t.dtype} and shape {tuple(t.shape)}; build it with question_type_prior()."
            )
        if t.shape[1] != self.prior.shape[1]:
            raise InputError(
                f"the prior has {t.shape[1]} answer columns but the model has "
                f"{self.prior.shape[1]} answers."
            )
        if not torch.isfinite(t).all() or bool((t < 0).any()) or bool((t > 1).any()):
            raise InputError(
                f"prior entries must be finite and in [0, 1] (got range [{float(t.min()):.4g}, "
                f"{float(t.max()):.4g}]); use mean soft scores per type (question_type_prior)."
            )
        rows = self.prior.shape[0]
        if rows and t.shape[0] != rows:
            raise InputError(
                f"the prior has {t.shape[0]} question types but this {type(cfg).__name__} was "
                f"built for {rows} (num_question_types); rebuild the wrapper with "
                f"num_question_types={t.shape[0]}."
            )
        if not rows:
            self.prior = t.detach().to(self.prior.device, self.prior.dtype).clone()
            self.config = cfg.replace(num_question_types=int(t.shape[0]))
        else:
            with torch.no_grad():
                self.prior.copy_(t.to(self.prior.device, self.prior.dtype))
        self.prior_is_set.fill_(True)

    def _batch_prior(self, batch: Mapping[str, Any], batch_size: int) -> torch.Tensor:
        """The prior rows of the batch's question types, ``(B, A)``."""
        name = type(self.config).__name__
        if not bool(self.prior_is_set):
            raise InterventionStateError(
                f"{name} has no question-type prior yet; compute it from the training data with "
                "question_type_prior(question_types, labels, num_types, num_answers) and install "
                "it with vl.set_bias_prior(prior) (or pass a small table as prior=...)."
            )
        qt = batch.get("question_type") if isinstance(batch, Mapping) else None
        if qt is None:
            raise InputError(
                f"{name} needs the batch key 'question_type' ((B,) long question-type ids that "
                f"index the prior rows); got keys {sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__}."
            )
        qt = torch.as_tensor(qt)
        if qt.is_floating_point() or qt.dim() != 1 or qt.shape[0] != batch_size:
            raise InputError(
                f"batch['question_type'] must be ({batch_size},) integer ids, got dtype {qt.dtype} "
                f"and shape {tuple(qt.shape)}."
            )
        num = self.prior.shape[0]
        if qt.numel() and (int(qt.min()) < 0 or int(qt.max()) >= num):
            raise InputError(
                f"batch['question_type'] holds ids in [{int(qt.min())}, {int(qt.max())}] but the "
                f"prior has {num} question types."
            )
        return self.prior[qt.to(self.prior.device).long()]


def _labels_of(batch: Mapping[str, Any], name: str) -> torch.Tensor:
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    if labels is None:
        raise InputError(f"{name} needs 'labels' in the batch (class ids (B,) or scores (B, A)).")
    return torch.as_tensor(labels)


def set_bias_prior(vl: Any, prior: torch.Tensor) -> None:
    """Install the question-type prior on every LMH / BiasProduct / GGE / Reweight intervention
    of ``vl`` (every intervention that :attr:`~causalvl.Intervention.uses_prior`).

    The same as ``vl.set_bias_prior(prior)``. The table becomes a buffer of the intervention,
    so ``vl.save_pretrained`` and :func:`causalvl.load` keep it.

    Args:
        vl: an :class:`~causalvl.IntervenedModel` (or one intervention).
        prior: ``(num_question_types, num_answers)`` in ``[0, 1]``, e.g. from
            :func:`question_type_prior`.

    Example:
        >>> import causalvl
        >>> vl = causalvl.intervene(causalvl.models.TinyVQA(vocab_size=9, num_answers=3),
        ...                         causalvl.LMHConfig())
        >>> set_bias_prior(vl, torch.tensor([[0.5, 0.5, 0.0]]))
        >>> vl.interventions["0_lmh"].prior.shape
        torch.Size([1, 3])
    """
    if isinstance(vl, Intervention):
        if not vl.uses_prior:
            raise ConfigError(
                f"set_bias_prior: {type(vl).__name__} uses no question-type prior; pass an "
                "LMH, BiasProduct, Reweight or GGE (bias='distribution' or 'both') intervention."
            )
        vl.set_prior(prior)
        return
    install = getattr(vl, "set_bias_prior", None)
    if not callable(install):
        raise ConfigError(
            f"set_bias_prior expects a wrapped model (causalvl.intervene) or an LMH / GGE "
            f"intervention, got {type(vl).__name__}."
        )
    install(prior)


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
        labels = _labels_of(batch, type(cfg).__name__).to(f.device)
        bias = self._batch_prior(batch, f.shape[0])
        gate = self.gate_values(output)
        if cfg.form == "bce":
            nll, entropy = lmh_bce_loss(f, labels, bias, gate, smoothing=self.smoothing_value())
        else:
            log_b = prior_log_probs(bias.float(), cfg.prior_floor)
            support = bias > 0 if cfg.support == "type" else None
            nll, entropy = lmh_softmax_loss(f, labels, log_b, gate, support)
        return {"lmh_nll": nll, "entropy": cfg.effective_entropy_weight() * entropy}


@implements(GGEConfig)
class GreedyGradientEnsemble(_PriorTableMixin):
    """Implementation of :class:`GGEConfig`.

    Parameters: ``c_1`` (:class:`BranchMLP` on the stop-gradient question feature) and ``c_2`` =
    Linear(A, A), present when ``bias`` is ``"question"`` or ``"both"``. Buffers: ``prior``,
    ``prior_is_set``.

    ``combine`` writes ``output.branch_logits["question"] = c_2(Z_q)`` and
    ``output.features["gge_question_hidden"] = Z_q = c_1(sg(e_q))`` ``(B, A)``.

    ``loss`` parts (``A * BCE`` with pseudo labels ``pl``; ``f`` = factual logits, ``b`` = prior
    rows, ``y`` = scores):

    ==============  ================================  ===========================================
    bias / variant  ``"gge_question"``                ``"gge_base"``
    ==============  ================================  ===========================================
    both/iterative  ``A BCE(q_out, pl(y, b))``        ``A BCE(f, pl(y, sigma(Z_q) + b))``
    both/together   ``A BCE(q_out, pl(y, b))``        ``A BCE(f, pl(y, sigma(q_out) + b))``
    question        ``A BCE(q_out, y)``               ``A BCE(f, pl(y, q_out))``
    distribution    (none)                            ``A BCE(f, pl(y, b))``
    ==============  ================================  ===========================================

    With ``loss="softmax_ce"`` every ``A BCE(x, pl(y, r))`` above becomes
    :func:`greedy_gradient_softmax_ce_loss` ``(x, y, r)``, ``sigma`` becomes ``softmax`` and
    ``A BCE(q_out, y)`` becomes ``CE(q_out, y)``; ``loss="decompose"`` trains the question
    branch the same way and the base model with :func:`gge_decompose_loss` ``(f, y, r, w)``.

    **Two-step training (GGE-iter).** :meth:`stages` returns ``(("gge_question",),
    ("gge_base",))``: the published recipe takes one optimizer step on ``gge_question``, then,
    without zeroing the gradients, a forward pass and a second step on ``gge_base`` (every
    part not named by an earlier stage, e.g. other interventions' losses, belongs to the last
    stage). The wrapper exposes them as ``vl.stages()`` and ``vl.objective(output, batch,
    stage=i)``, which ``causalvl.training.Trainer`` follows. A trainer that ignores the stages
    and steps on the summed objective gets the sum of both gradients in one step: the same
    gradient directions (the pseudo label is not detached, so ``c_1`` also learns from
    ``gge_base``), but ``gge_base`` sees ``c_1`` before rather than after its own update.
    """

    replaces_task_loss = True

    def __init__(self, config: GGEConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        refuse_generative(adapter, "GGEConfig")
        dtype, device = module_dtype_device(model)
        self.num_answers = config.num_answers or infer_num_answers(model, adapter)
        if config.uses_question_branch:
            dim = config.feature_dim or infer_feature_dim(model, adapter, config.question_role)
            seed = config.init_seed
            # with a seed, the default init's draws are discarded (and redrawn seeded)
            with torch.random.fork_rng(devices=[], enabled=seed is not None):
                self.c_1 = BranchMLP(dim, self.num_answers, config.hidden_sizes)
                self.c_2 = nn.Linear(self.num_answers, self.num_answers)
            _seeded_init(self.c_1, seed)
            _seeded_init(self.c_2, None if seed is None else seed + 1)
            self.c_1.to(device=device, dtype=dtype)
            self.c_2.to(device=device, dtype=dtype)
        else:
            self.c_1 = self.c_2 = None
        self._init_prior(self.num_answers, dtype, device)
        #: ``(epoch, num_epochs)`` of the current epoch (``set_epoch``); training-time state,
        #: not saved
        self.epoch: tuple[int, int] | None = None

    @property
    def capture_roles(self) -> tuple[str, ...]:
        return (self.config.question_role,) if self.config.uses_question_branch else ()

    @property
    def uses_prior(self) -> bool:
        """Only GGE with ``bias="distribution"`` or ``"both"`` reads the prior table."""
        return bool(self.config.uses_prior)

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Tell the loss which epoch (0-based) of ``num_epochs`` is being trained; the
        ``weight_schedule="sin"`` weight reads it. The Trainer calls this before every epoch."""
        gge_schedule_weight(epoch, num_epochs)  # validates both numbers
        self.epoch = (int(epoch), int(num_epochs))

    def decompose_weight(self) -> float:
        """``w`` of the Decompose loss at the current epoch."""
        cfg = self.config
        if cfg.weight_schedule == "constant":
            return float(cfg.decompose_weight)
        if self.epoch is None:
            raise InterventionStateError(
                "GGEConfig(weight_schedule='sin') needs the current epoch: call "
                "vl.set_epoch(epoch, num_epochs) before each epoch (causalvl.training.Trainer "
                "does), or use weight_schedule='constant'."
            )
        return float(cfg.decompose_weight) * gge_schedule_weight(*self.epoch)

    def stages(self) -> tuple[tuple[str, ...], ...]:
        """Loss parts grouped by optimizer step, in order.

        ``(("gge_question",), ("gge_base",))`` for GGE-iter (two steps per batch, each after
        its own forward pass); a single stage otherwise. Parts of the objective not listed in
        an earlier stage belong to the last one.
        """
        if self.config.bias == "both" and self.config.variant == "iterative":
            return (("gge_question",), ("gge_base",))
        if self.config.uses_question_branch:
            return (("gge_question", "gge_base"),)
        return (("gge_base",),)

    def combine(self, state: ForwardState) -> None:
        if self.c_1 is None:
            return
        e_q = state.feature(self.config.question_role)
        check_feature_width(
            e_q,
            self.c_1.net[0].in_features,
            self.config.question_role,
            owner="GGEConfig",
            field="feature_dim",
        )
        z_q = self.c_1(stop_gradient_into(e_q).to(self.c_2.weight.dtype))
        state.features["gge_question_hidden"] = z_q
        state.branch_logits["question"] = self.c_2(z_q)

    def _reference(self, r: torch.Tensor) -> torch.Tensor:
        return r.detach() if self.config.effective_detach() else r

    def _base_loss(self, f: torch.Tensor, y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """The base model's loss against the bias reference ``ref``, per ``config.loss``."""
        cfg = self.config
        if cfg.loss == "softmax_ce":
            return greedy_gradient_softmax_ce_loss(f, y, ref)
        if cfg.loss == "decompose":
            return gge_decompose_loss(f, y, ref, self.decompose_weight())
        return greedy_gradient_loss(f, y, ref, cfg.effective_pseudo_label())

    def _question_loss(
        self, q_out: torch.Tensor, y: torch.Tensor, b: torch.Tensor | None
    ) -> torch.Tensor:
        """The question branch's loss: against ``y`` (``bias="question"``) or against what the
        prior ``b`` leaves (``"both"``)."""
        cfg = self.config
        num = self.num_answers
        if cfg.loss == "bce":
            if b is None:
                return F.binary_cross_entropy_with_logits(q_out, y.to(q_out)) * num
            return greedy_gradient_loss(q_out, y, b, cfg.effective_pseudo_label())
        if b is None:
            return -(y.to(q_out) * F.log_softmax(q_out, dim=-1)).sum(-1).mean()
        return greedy_gradient_softmax_ce_loss(q_out, y, b)

    def _bias_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Branch logits as probabilities: sigmoid (``loss="bce"``) or softmax."""
        if self.config.effective_pseudo_label() == "softmax":
            return torch.softmax(logits, dim=-1)
        return torch.sigmoid(logits)

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.config
        f = output.factual_logits
        if f.dim() != 2 or f.shape[1] != self.num_answers:
            raise InputError(
                f"GGEConfig needs answer logits (B, {self.num_answers}); got {tuple(f.shape)}."
            )
        labels = _labels_of(batch, "GGEConfig").to(f.device)
        y = _as_scores(labels, self.num_answers, f.shape[0], where="GGEConfig").float()
        if cfg.bias == "distribution":
            b = self._batch_prior(batch, f.shape[0]).float()
            return {"gge_base": self._base_loss(f, y, b)}
        if "question" not in output.branch_logits or "gge_question_hidden" not in output.features:
            raise InterventionStateError(
                "the output has no GGE question branch; pass the output of the same wrapped "
                "model (vl(batch)) to vl.objective."
            )
        q_out = output.branch_logits["question"].float()
        z_q = output.features["gge_question_hidden"].float()
        if cfg.bias == "question":
            # "published" / "corrected" read the branch logits; "softmax" its probabilities
            ref = q_out
            if cfg.effective_pseudo_label() == "softmax":
                ref = torch.softmax(q_out, dim=-1)
            return {
                "gge_question": self._question_loss(q_out, y, None),
                "gge_base": self._base_loss(f, y, self._reference(ref)),
            }
        b = self._batch_prior(batch, f.shape[0]).float()
        source = z_q if cfg.variant == "iterative" else q_out
        ref = self._reference(self._bias_probs(source) + b)
        return {
            "gge_question": self._question_loss(q_out, y, b),
            "gge_base": self._base_loss(f, y, ref),
        }
