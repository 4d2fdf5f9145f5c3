"""Counterfactual inference against language priors.

* :class:`CFVQAConfig` (``"cfvqa"``) -- CF-VQA (Niu et al., CVPR 2021): question-only
  and vision-only branch heads on the model's own features, a fusion with the base logits, and
  the prediction by the total *indirect* effect ``TIE = Z_{q,v,k} − Z_{q,v*,k*}`` (what is left
  of the answer once the question's direct effect is taken out).
* :class:`PriorSubtractionConfig` (``"prior_subtraction"``) -- the model-agnostic version for
  models without a separable question branch (ViLT, CLIP, any ``nn.Module``): run the model
  again with the image removed and subtract that prediction,
  ``(1 + α)·factual − α·counterfactual``.

Both are used through :func:`causalvl.intervene`; formulas are in ``docs/concepts.md``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...adapters.base import ModelAdapter
from ...errors import ConfigError, NoMatchingModuleError
from ...losses import answer_cross_entropy
from ...outputs import InterventionOutput
from ...runtime import module_dtype_device
from ..base import ForwardState, Intervention, implements
from ..branches import (
    AnswerBranch,
    BranchWarmup,
    build_branch,
    refuse_generative,
)
from ..fusion import effects, fuse
from ..seeding import init_rng
from .config import CFVQAConfig, CounterfactualConfig

logger = logging.getLogger(__name__)


@implements(CFVQAConfig)
class Counterfactual(BranchWarmup, Intervention):
    """Implementation of :class:`CFVQAConfig`.

    Output (every mode): ``logits`` = TIE / TE / factual per ``inference``; ``effects`` =
    ``{"te", "nde", "tie", "nie"}`` from :func:`~causalvl.interventions.fusion.effects`;
    ``branch_logits`` = ``{"question": Z_q, "question_head": logits_q, "fused":
    h(Z_k, Z_q, Z_v)}`` plus ``"vision"`` / ``"vision_head"`` in the complete graph. The base
    logits ``Z_k`` are the current prediction when this intervention runs (the factual logits
    unless an earlier intervention changed them).
    """

    replaces_task_loss = True

    def __init__(self, config: CFVQAConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        refuse_generative(adapter, "CFVQAConfig")
        self.kind = adapter.kind
        if adapter.kind == "contrastive" and config.graph == "complete":
            raise ConfigError(
                f"CFVQAConfig(graph='complete') cannot be used with the contrastive "
                f"{adapter.family or 'generic'} adapter: its answers are the candidate texts, and "
                "an image alone cannot score a candidate it never sees. Use graph='simple' "
                "(question branch per candidate text)."
            )
        if adapter.kind == "contrastive" and config.num_answers is not None:
            warnings.warn(
                f"CFVQAConfig.num_answers={config.num_answers} is ignored for contrastive "
                "models (the answers are the candidate texts of each batch).",
                UserWarning,
                stacklevel=2,
            )
        self.complete = config.graph == "complete"
        with init_rng(config.init_seed):  # the branch heads
            self.question = build_branch(
                model,
                adapter,
                config.question_role,
                config.question_feature_dim,
                config.num_answers,
                config.hidden_sizes,
            )
            self.vision = None
            if self.complete:
                try:
                    self.vision = build_branch(
                        model,
                        adapter,
                        config.vision_role,
                        config.vision_feature_dim,
                        config.num_answers,
                        config.hidden_sizes,
                    )
                except NoMatchingModuleError as exc:
                    roles = sorted(getattr(adapter, "roles", None) or {})
                    why = str(exc).rstrip(".")
                    if config.vision_role not in roles:
                        why = (
                            f"the adapter has no {config.vision_role!r} role (its roles: "
                            f"{', '.join(roles) or 'none'}) and {why}"
                        )
                    raise NoMatchingModuleError(
                        f"CFVQAConfig(graph='complete') (the default) needs the image "
                        f"feature for its V->A branch, but {why}. Either give the adapter that role, e.g. "
                        f"GenericAdapter(roles={{{config.vision_role!r}: 'image_encoder', ...}}), or "
                        "set graph='simple', which needs only the question feature."
                    ) from exc
        self.c = nn.Parameter(torch.tensor(float(config.c_init)))
        dtype, device = module_dtype_device(model)
        self.to(device=device, dtype=dtype)

    @property
    def image_blind_reason(self) -> str | None:
        if self.config.inference != "tie":
            return None
        return (
            "CF-VQA answers with the TIE, the part of the prediction that goes through the "
            "image; with the image removed the TIE has no meaningful answer to agree with (the "
            "question-only answer is its NDE)"
        )

    @property
    def capture_roles(self) -> tuple[str, ...]:
        roles = (self.config.question_role,)
        return (*roles, self.config.vision_role) if self.complete else roles

    def combine(self, state: ForwardState) -> None:
        cfg = self.config
        z_k = state.logits
        z_q = self.question.scores(state.feature(cfg.question_role), z_k, cfg.question_role)
        branches = {"question": z_q, "question_head": self.question.predict(z_q)}
        z_v = None
        if self.vision is not None:
            z_v = self.vision.scores(state.feature(cfg.vision_role), z_k, cfg.vision_role)
            branches.update(vision=z_v, vision_head=self.vision.predict(z_v))
        fused = fuse(z_k, z_q, z_v, mode=cfg.fusion)
        eff = effects(z_k, z_q, z_v, c=self.c.to(z_k.dtype), mode=cfg.fusion)
        branches["fused"] = fused
        state.branch_logits.update(branches)
        state.effects.update(eff)
        state.logits = z_k if cfg.inference == "factual" else eff[cfg.inference]

    def kl_term(self, fused: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        """``mean_b Σ_a −sg(p_te)_a log p_nde(a)`` with ``p_nde = softmax(h(c, sg Z_q, c))``.

        Only ``c`` receives gradient. Shapes: ``fused`` and ``z_q`` ``(B, A)``; returns 0-d.
        """
        z_q = z_q.detach()
        cc = self.c.to(z_q.dtype) * torch.ones_like(z_q)
        nde = fuse(cc, z_q, cc if self.complete else None, mode=self.config.fusion)
        p_te = F.softmax(fused.detach(), dim=-1)
        return -(p_te * F.log_softmax(nde, dim=-1)).sum(-1).mean()

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"fused_ce", "question_ce", "vision_ce" (complete graph), "kl"}``, each already
        multiplied by its weight (their sum is this intervention's loss)."""
        cfg = self.config
        br = output.branch_logits
        fused = br["fused"]
        parts = {
            "fused_ce": answer_cross_entropy(fused, batch, kind=self.kind),
            "question_ce": cfg.question_loss_weight
            * answer_cross_entropy(br["question_head"], batch, kind=self.kind),
        }
        if self.complete:
            parts["vision_ce"] = cfg.vision_loss_weight * answer_cross_entropy(
                br["vision_head"], batch, kind=self.kind
            )
        if self.warming_up():
            return {k: v for k, v in parts.items() if k in ("question_ce", "vision_ce")}
        parts["kl"] = cfg.kl_weight * self.kl_term(fused, br["question"])
        return parts

    def extra_repr(self) -> str:
        cfg = self.config
        return f"fusion={cfg.fusion!r}, graph={cfg.graph!r}, inference={cfg.inference!r}"


__all__ = ["AnswerBranch", "CFVQAConfig", "Counterfactual", "CounterfactualConfig", "build_branch"]
