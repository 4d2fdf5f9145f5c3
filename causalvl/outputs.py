"""Result dataclasses returned by wrapped models and objectives.

Both are frozen and have the same fields on every call: no ``return_dict`` switch, no tuple/dict
duality. Mapping fields are read-only views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

EFFECT_KEYS = ("te", "nde", "tie", "nie", "prior")
"""Keys of :attr:`InterventionOutput.effects` (see docs/concepts.md for their definitions).

A key means the same quantity whichever intervention writes it: ``te`` = Z(q, v) − Z(q*, v*),
``nde`` = Z(q, v*) − Z(q*, v*), ``tie`` = Z(q, v) − Z(q, v*) (the effect of the image with the
question held fixed), ``nie`` the natural indirect effect, ``prior`` = Z(q, v*) (the
image-blind prediction itself, not a difference)."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class InterventionOutput:
    """What :class:`~causalvl.IntervenedModel` returns.

    Attributes:
        logits: what the wrapped model predicts now, ``(batch, num_answers)`` for answer heads or
            ``(num_images, num_texts)`` for contrastive models. In eval mode these are the
            debiased scores (e.g. CF-VQA's TIE); with interventions disabled, the factual logits.
        factual_logits: the base model's own logits on the real inputs.
        counterfactual_logits: the base model's logits on counterfactual inputs (vision or
            language removed), or ``None`` when no counterfactual pass ran.
        effects: causal effects keyed by ``"te"``, ``"nde"``, ``"tie"``, ``"nie"``, and the
            image-blind prediction ``"prior"`` (each shaped like ``logits``; see
            :data:`EFFECT_KEYS`: one key, one quantity across interventions); empty when the
            interventions define none.
        branch_logits: logits of auxiliary branches, e.g. ``"question"`` and ``"vision"``
            (CF-VQA, RUBi, GGE) or ``"fused"`` (the training-time fused logits).
        features: role features captured during the factual pass, e.g. ``"vision_features"``
            ``(batch, dim)``; also any intervention internals worth inspecting.
        raw_output: the base model's own output object of the factual pass (excluded from
            equality and repr).
    """

    logits: torch.Tensor
    factual_logits: torch.Tensor
    counterfactual_logits: torch.Tensor | None = None
    effects: Mapping[str, torch.Tensor] = field(default_factory=dict)
    branch_logits: Mapping[str, torch.Tensor] = field(default_factory=dict)
    features: Mapping[str, torch.Tensor] = field(default_factory=dict)
    raw_output: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("effects", "branch_logits", "features"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))


@dataclass(frozen=True)
class ObjectiveOutput:
    """A training loss and its named parts.

    Attributes:
        loss: the scalar to call ``backward()`` on.
        parts: named scalar parts (detached), e.g. ``{"fused_ce": ..., "question_ce": ...,
            "kl": ...}``, for logs and reports. Their sum equals ``loss`` unless a part is
            documented as logged-only.
    """

    loss: torch.Tensor
    parts: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", _frozen(self.parts))

    def as_floats(self) -> dict[str, float]:
        """``{"loss": ..., **parts}`` as Python floats, for logging."""
        out = {"loss": float(self.loss.detach())}
        out.update({k: float(v.detach()) for k, v in self.parts.items()})
        return out
