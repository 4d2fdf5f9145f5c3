"""Configs of LMH (:class:`LMHConfig`, ``"lmh"``) and BiasProduct (:class:`BiasProductConfig`,
``"bias_product"``).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ...config import InterventionConfig
from ..checks import _check_optional_int, _check_prior_fields, _check_role

__all__ = ["DEFAULT_ENTROPY_WEIGHT", "BiasProductConfig", "LMHConfig"]


#: default entropy penalty of each LMH form (VQA-CP for "bce"; MNLI/BERT for "softmax")
DEFAULT_ENTROPY_WEIGHT = {"bce": 0.36, "softmax": 0.03}


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
