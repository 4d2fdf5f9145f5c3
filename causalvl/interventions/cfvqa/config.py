"""Config of CF-VQA (:class:`CFVQAConfig`, ``"cfvqa"``) and its deprecated name
:class:`CounterfactualConfig`.

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ...config import InterventionConfig
from ...errors import ConfigError, warn_at_caller
from ..checks import _check_hidden, _check_optional_int, _check_role

__all__ = ["CFVQAConfig", "CounterfactualConfig"]


@dataclass(kw_only=True)
class CFVQAConfig(InterventionConfig):
    """CF-VQA: predict by the total indirect effect of the question (Niu et al., CVPR 2021).

    Adds a question-only branch on the captured question feature and, in the complete graph, a
    vision-only branch on the captured vision feature (both read their feature through
    :func:`~causalvl.interventions.branches.stop_gradient_into`, so the encoders get no
    gradient from them), an output head ``Linear(A, A)`` per branch, and one learned scalar
    ``c`` that stands in for every blocked branch. Training minimises

    ``L = CE(h(Z_k, Z_q, Z_v), a) + λ_q CE(logits_q, a) + λ_v CE(logits_v, a) + λ_kl L_kl``

    with ``L_kl = mean_b Σ_a −softmax(h(Z_k,Z_q,Z_v))_a · log softmax(h(c, Z_q, c))_a``, both
    distributions computed from detached branch scores so that only ``c`` learns from it. The
    logged ``"kl"`` is this cross-entropy form (the KL plus the entropy of the detached target),
    as in the published code; its gradient equals the KL's. Inference predicts by
    ``TIE = h(Z_k, Z_q, Z_v) − h(c, Z_q, c)``.

    Args:
        fusion: ``"harmonic"`` (default), ``"sum"`` or ``"rubi"`` (see
            :func:`~causalvl.interventions.fusion.fuse`).
        graph: ``"complete"`` (Q->A, V->A and K->A) or ``"simple"`` (no V->A branch).
            ``fusion="rubi"`` has no vision slot and needs ``graph="simple"``; contrastive models
            (CLIP, SigLIP) have no answer space an image alone could score, so they need
            ``graph="simple"`` too (a :class:`~causalvl.ConfigError` says so).
        inference: what ``output.logits`` holds, in training and evaluation alike: ``"tie"``
            (the CF-VQA answer), ``"te"`` (the fused TE, i.e. the plain ensemble) or
            ``"factual"`` (the base logits).
        num_answers: answer count ``A`` (default: read from the model); unused for contrastive
            models, whose branch scores each candidate text from its own feature.
        question_role / vision_role: roles (or module paths) of the question and image features.
        question_feature_dim / vision_feature_dim: widths of those features (default: inferred).
        hidden_sizes: hidden widths of the branch MLPs; the published heads use
            ``(1024, 1024)``. Formerly ``hidden`` (accepted with a ``FutureWarning`` for one
            release).
        question_loss_weight / vision_loss_weight / kl_weight: ``λ_q``, ``λ_v``, ``λ_kl``.
        c_init: initial value of ``c`` (published: 0.0).
        branch_warmup_epochs: train only the branch heads (``"question_ce"`` /
            ``"vision_ce"``, on stop-gradient features) for this many first epochs, so the
            question branch holds the prior before the base model learns; 0 (published) trains
            everything from the start. See
            :class:`~causalvl.interventions.branches.BranchWarmup`.

    Labels: class ids ``(B,)`` use softmax CE; VQA soft scores ``(B, A)`` use the soft-target
    CE of :func:`~causalvl.losses.answer_cross_entropy`.

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        >>> vl = causalvl.intervene(net, causalvl.CFVQAConfig(hidden_sizes=(32,)))
        >>> batch = {"pixel_values": torch.rand(2, 3, 8, 8),
        ...          "input_ids": torch.randint(1, 20, (2, 5)), "labels": torch.tensor([0, 3])}
        >>> out = vl(**batch)
        >>> sorted(vl.objective(out, batch).parts)
        ['fused_ce', 'kl', 'question_ce', 'vision_ce']
        >>> torch.allclose(out.logits, out.effects["tie"])
        True
    """

    type = "cfvqa"
    _renamed = {"hidden": "hidden_sizes"}
    fusion: Literal["rubi", "harmonic", "sum"] = "harmonic"
    graph: Literal["complete", "simple"] = "complete"
    inference: Literal["tie", "te", "factual"] = "tie"
    num_answers: int | None = None
    question_role: str = "language_features"
    vision_role: str = "vision_features"
    question_feature_dim: int | None = None
    vision_feature_dim: int | None = None
    hidden_sizes: tuple[int, ...] = (1024, 1024)
    question_loss_weight: float = 1.0
    vision_loss_weight: float = 1.0
    kl_weight: float = 1.0
    c_init: float = 0.0
    branch_warmup_epochs: int = 0

    def validate(self) -> None:
        self._check_int("branch_warmup_epochs", minimum=0)
        _check_optional_int(self, "num_answers", "question_feature_dim", "vision_feature_dim")
        _check_role(self, "question_role", "vision_role")
        _check_hidden(self)
        self._check_positive(
            "question_loss_weight", "vision_loss_weight", "kl_weight", allow_zero=True
        )
        if (
            not isinstance(self.c_init, (int, float))
            or isinstance(self.c_init, bool)
            or not math.isfinite(self.c_init)
        ):
            self._fail("c_init", "must be a finite number")
        if self.fusion == "rubi" and self.graph == "complete":
            raise ConfigError(
                "CFVQAConfig(fusion='rubi', graph='complete') is invalid: the RUBi mask "
                "h = Z_k * sigmoid(Z_q) has no vision slot. Set graph='simple' (or use fusion="
                "'harmonic' / 'sum' for the complete graph)."
            )


class CounterfactualConfig(CFVQAConfig):
    """Deprecated name of :class:`CFVQAConfig` (the CF-VQA config); constructing it warns.

    It keeps the type key ``"cfvqa"``, so saved files load, as :class:`CFVQAConfig`: a
    reloaded config equals ``CFVQAConfig(...)`` with the same fields, not the deprecated
    instance (configs compare by class and fields)."""

    def __post_init__(self) -> None:
        warn_at_caller(
            "CounterfactualConfig is deprecated and will be removed in the next release; use "
            "causalvl.CFVQAConfig (same fields, same saved type 'cfvqa')."
        )
        super().__post_init__()
