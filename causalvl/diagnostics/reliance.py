"""Reliance on the language prior and on context: pure functions and batch edits.

A model *relies on the language prior* when its answer barely depends on the image: it agrees
with its own image-blind prediction, its answer distribution hardly moves when the image is
removed (small KL), and it rarely changes its answer when the image is swapped for another
example's. A model *relies on context* when replacing only the context region (leaving the
target untouched) changes its answer.

    >>> import torch
    >>> from causalvl.diagnostics.reliance import prior_agreement, counterfactual_flip_rate
    >>> prior_agreement(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0]))
    0.5
    >>> counterfactual_flip_rate(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0]))
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..adapters.transforms import CONTEXT_MODES, apply_transform, context_boxes, locate_region
from ..errors import InputError

ContextMode = Literal["swap", "zeros"]


def _preds(name: str, x: Any) -> torch.Tensor:
    t = torch.as_tensor(x).detach().cpu()
    if t.dim() == 2:  # logits
        t = t.argmax(-1)
    if t.dim() != 1:
        raise InputError(f"{name} must be (N,) class ids or (N, A) logits, got {tuple(t.shape)}.")
    return t.long()


def prior_agreement(preds: Any, prior_preds: Any) -> float:
    """Fraction of examples whose prediction equals the image-blind (prior) prediction.

    Args:
        preds: ``(N,)`` ids or ``(N, A)`` logits of the factual pass.
        prior_preds: ``(N,)`` ids or ``(N, A)`` logits without the image.
    """
    a, b = _preds("preds", preds), _preds("prior_preds", prior_preds)
    if a.shape != b.shape or a.numel() == 0:
        raise InputError(
            f"preds and prior_preds must be non-empty and of equal length, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}."
        )
    return float((a == b).double().mean())


def counterfactual_flip_rate(factual: Any, counterfactual: Any) -> float:
    """Fraction of examples whose predicted answer changes under a counterfactual input.

    Args:
        factual: ``(N,)`` ids or ``(N, A)`` logits on the original inputs.
        counterfactual: the same on edited inputs (swapped image, replaced context, ...).
    """
    return 1.0 - prior_agreement(factual, counterfactual)


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-example ``KL(softmax(p) ‖ softmax(q))`` in nats, shape ``(N,)``, float64, >= 0.

    Args:
        p_logits, q_logits: ``(N, A)`` logits (the factual and the image-blind pass).
    """
    if p_logits.shape != q_logits.shape or p_logits.dim() != 2:
        raise InputError(
            f"KL needs two (N, A) logit tensors of the same shape, got {tuple(p_logits.shape)} "
            f"and {tuple(q_logits.shape)}."
        )
    logp = F.log_softmax(p_logits.detach().double(), dim=-1)
    logq = F.log_softmax(q_logits.detach().double(), dim=-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return kl.clamp_min(0.0)


def mean_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """Mean over examples of ``KL(softmax(p) ‖ softmax(q))`` in nats."""
    return float(kl_divergence(p_logits, q_logits).mean())


# ---------------------------------------------------------------------------------------
# context replacement: the "context_swap" / "context_zeros" input transforms
# (causalvl.adapters.transforms, which also holds locate_region and context_boxes)
# ---------------------------------------------------------------------------------------


def replace_context(
    batch: Mapping[str, Any],
    *,
    mode: ContextMode = "swap",
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """A copy of ``batch`` whose context region is replaced; the target region is unchanged.

    ``mode="swap"``: each example gets another example's context (a seeded within-batch
    derangement); ``mode="zeros"``: the context becomes zeros. Both ``region_pixels[:, 1]`` and
    the matching pixels of the composite ``pixel_values`` are replaced (when the composite
    is present). Nothing in ``batch`` is modified. The same edit is the input transform
    ``"context_swap"`` / ``"context_zeros"`` of :mod:`causalvl.adapters.transforms`.

    Args:
        batch: with ``region_pixels`` ``(B, 2, C, h, w)`` and ``pixel_values`` ``(B, C, H, W)``.
        mode: ``"swap"`` or ``"zeros"``.
        generator: seeds the derangement for ``"swap"``.
    """
    if mode not in CONTEXT_MODES:
        raise InputError(f"context replacement mode {mode!r} unknown; choose 'swap' or 'zeros'.")
    return apply_transform(CONTEXT_MODES[mode], None, batch, generator=generator)


__all__ = [
    "context_boxes",
    "counterfactual_flip_rate",
    "kl_divergence",
    "locate_region",
    "mean_kl",
    "prior_agreement",
    "replace_context",
]
