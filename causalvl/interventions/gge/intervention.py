"""GGE (Greedy Gradient Ensemble, Han et al., ICCV 2021): train the model on what a
question-only branch and / or the question-type prior cannot explain.

The pure loss functions are in :mod:`causalvl.interventions.losses`; ``docs/ensembles.md``
transcribes the official formulas.
"""

from __future__ import annotations

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
    BranchMLP,
    _seeded_init,
    check_feature_width,
    infer_feature_dim,
    infer_num_answers,
    refuse_generative,
    stop_gradient_into,
)
from ..losses import (
    _as_scores,
    gge_decompose_loss,
    gge_schedule_weight,
    greedy_gradient_loss,
    greedy_gradient_softmax_ce_loss,
)
from ..prior import _PriorTableMixin
from .config import GGEConfig

__all__ = ["GGEConfig", "GreedyGradientEnsemble"]


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
        labels = require_labels(batch, "GGEConfig").to(f.device)
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
