"""RUBi (Cadene et al., NeurIPS 2019): a question-only branch masks the logits during training.

The question-only branch ``Z_q = MLP(sg(e_q))`` reads the question feature through
:func:`~causalvl.interventions.branches.stop_gradient_into`. Training uses the masked logits
``Z_k ⊙ σ(Z_q)``: examples the question alone already answers get their loss shrunk, so the
base model learns more from the ones it cannot answer from the question. Inference uses the base
logits ``Z_k`` unchanged (the published metric and checkpoint choice).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...adapters.base import ModelAdapter
from ...config import InterventionConfig
from ...losses import answer_cross_entropy
from ...outputs import InterventionOutput
from ...runtime import module_dtype_device
from ..base import ForwardState, Intervention, implements
from ..branches import (
    BranchWarmup,
    _check_hidden,
    _check_optional_int,
    _check_role,
    build_branch,
    refuse_generative,
)
from ..fusion import fuse
from ..seeding import init_rng


@dataclass(kw_only=True)
class RUBiConfig(InterventionConfig):
    """RUBi: reduce unimodal biases with a question-only mask during training.

    ``logits_rubi = Z_k ⊙ σ(Z_q)``, ``logits_q = Linear_{A→A}(Z_q)`` and

    ``L = CE(logits_rubi, a) + λ_q · CE(logits_q, a)``.

    ``Z_k`` (the base model) gets gradient only through the first term; the question MLP from
    both; the ``A→A`` classifier from the second only; the question encoder from neither.

    Args:
        num_answers: answer count ``A`` (default: read from the model); unused for contrastive
            models, where the branch scores each candidate text from its own feature and has no
            ``A→A`` classifier (``logits_q = Z_q``).
        question_role: role (or module path) of the question feature.
        feature_dim: width of that feature (default: inferred). Formerly
            ``question_feature_dim`` (accepted with a ``FutureWarning`` for one release).
        hidden_sizes: hidden widths of the question MLP (published: ``(1024, 1024)``).
            Formerly ``hidden`` (accepted with a ``FutureWarning`` for one release).
        question_loss_weight: ``λ_q`` (published: 1.0).
        branch_warmup_epochs: train only the question branch (``"question_ce"``, on the
            stop-gradient feature) for this many first epochs, so that it holds the prior
            before the base model learns; 0 (published) trains both from the start. See
            :class:`~causalvl.interventions.branches.BranchWarmup`.

    Output: ``logits`` = ``factual_logits`` (inference uses the base model);
    ``branch_logits`` = ``{"question": Z_q, "question_head": logits_q, "fused": logits_rubi}``.
    Labels: class ids ``(B,)`` or VQA soft scores ``(B, A)`` (soft-target CE).

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        >>> vl = causalvl.intervene(net, causalvl.RUBiConfig(hidden_sizes=(32,)))
        >>> batch = {"pixel_values": torch.rand(2, 3, 8, 8),
        ...          "input_ids": torch.randint(1, 20, (2, 5)), "labels": torch.tensor([0, 3])}
        >>> out = vl(**batch)
        >>> sorted(vl.objective(out, batch).parts)
        ['question_ce', 'rubi_ce']
        >>> torch.equal(out.logits, out.factual_logits)
        True
    """

    type = "rubi"
    _renamed = {"hidden": "hidden_sizes", "question_feature_dim": "feature_dim"}
    num_answers: int | None = None
    question_role: str = "language_features"
    feature_dim: int | None = None
    hidden_sizes: tuple[int, ...] = (1024, 1024)
    question_loss_weight: float = 1.0
    branch_warmup_epochs: int = 0

    def validate(self) -> None:
        self._check_int("branch_warmup_epochs", minimum=0)
        _check_optional_int(self, "num_answers", "feature_dim")
        _check_role(self, "question_role")
        _check_hidden(self)
        self._check_positive("question_loss_weight", allow_zero=True)


@implements(RUBiConfig)
class RUBi(BranchWarmup, Intervention):
    """Implementation of :class:`RUBiConfig`."""

    replaces_task_loss = True

    def __init__(self, config: RUBiConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        refuse_generative(adapter, "RUBiConfig")
        self.kind = adapter.kind
        if adapter.kind == "contrastive" and config.num_answers is not None:
            warnings.warn(
                f"RUBiConfig.num_answers={config.num_answers} is ignored for contrastive models "
                "(the answers are the candidate texts of each batch).",
                UserWarning,
                stacklevel=2,
            )
        with init_rng(config.init_seed):  # the question branch
            self.question = build_branch(
                model,
                adapter,
                config.question_role,
                config.feature_dim,
                config.num_answers,
                config.hidden_sizes,
            )
        dtype, device = module_dtype_device(model)
        self.to(device=device, dtype=dtype)

    @property
    def capture_roles(self) -> tuple[str, ...]:
        return (self.config.question_role,)

    def combine(self, state: ForwardState) -> None:
        role = self.config.question_role
        z_k = state.logits
        z_q = self.question.scores(state.feature(role), z_k, role)
        state.branch_logits.update(
            question=z_q,
            question_head=self.question.predict(z_q),
            fused=fuse(z_k, z_q, mode="rubi"),
        )

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"rubi_ce": CE(Z_k ⊙ σ(Z_q)), "question_ce": λ_q CE(logits_q)}``."""
        br = output.branch_logits
        question = self.config.question_loss_weight * answer_cross_entropy(
            br["question_head"], batch, kind=self.kind
        )
        if self.warming_up():
            return {"question_ce": question}
        return {
            "rubi_ce": answer_cross_entropy(br["fused"], batch, kind=self.kind),
            "question_ce": question,
        }


__all__ = ["RUBi", "RUBiConfig"]
