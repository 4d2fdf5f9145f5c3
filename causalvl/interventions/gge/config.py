"""Config of GGE (:class:`GGEConfig`, ``"gge"``) and the names of its loss forms
(``GGELoss``, ``PseudoLabel``, also used by :mod:`causalvl.interventions.losses`).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ...config import InterventionConfig
from ..checks import _check_optional_int, _check_prior_fields, _check_role

#: the GGE pseudo-label forms (see :func:`~causalvl.interventions.losses.gge_pseudo_label`)
PseudoLabel = Literal["published", "corrected", "softmax"]
#: the GGE loss forms (see :class:`GGEConfig`)
GGELoss = Literal["bce", "softmax_ce", "decompose"]

__all__ = ["GGEConfig", "GGELoss", "PseudoLabel"]


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
    loss: GGELoss = "bce"
    pseudo_label: PseudoLabel | None = None
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

    def unallocated_fields(self) -> frozenset[str]:
        # bias="distribution" builds no question branch
        if self.bias == "distribution":
            return frozenset({"hidden_sizes", "feature_dim"})
        return frozenset()

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
        _check_role(self, "question_role")
        _check_optional_int(self, "feature_dim")
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
