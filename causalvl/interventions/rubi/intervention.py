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
from typing import Any

import torch
from torch import nn

from ...adapters.base import ModelAdapter
from ...losses import answer_cross_entropy
from ...outputs import InterventionOutput
from ...runtime import module_dtype_device
from ..base import ForwardState, Intervention, implements
from ..branches import (
    BranchWarmup,
    build_branch,
    refuse_generative,
)
from ..fusion import fuse
from ..seeding import init_rng
from .config import RUBiConfig


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
