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
# context replacement
# ---------------------------------------------------------------------------------------


def locate_region(
    composite: torch.Tensor,
    patch: torch.Tensor,
    *,
    atol: float = 1e-5,
    exclude: tuple[int, int] | None = None,
) -> tuple[int, int] | None:
    """Top-left ``(y, x)`` where ``patch`` ``(C, h, w)`` sits in ``composite`` ``(C, H, W)``.

    Returns the first exact match (up to ``atol``) in row-major order other than ``exclude``
    (used to skip the target's position when target and context look alike), or ``None``.
    """
    c, h, w = patch.shape
    if (
        composite.dim() != 3
        or composite.shape[0] != c
        or h > composite.shape[1]
        or w > composite.shape[2]
    ):
        return None
    windows = composite.unfold(1, h, 1).unfold(2, w, 1)  # (C, H-h+1, W-w+1, h, w)
    diff = (windows - patch[:, None, None]).abs().amax(dim=(0, 3, 4))
    for y, x in (diff <= atol).nonzero().tolist():
        if (y, x) != exclude:
            return int(y), int(x)
    return None


def context_boxes(batch: Mapping[str, Any]) -> torch.Tensor:
    """Where each example's context region sits in ``pixel_values``: ``(B, 4)`` long
    ``(y0, x0, y1, x1)`` (row/column slices).

    Uses the batch key ``boxes`` ``(B, 2, 4)`` in ``(x0, y0, x1, y1)`` pixel coordinates when
    present (region 1 is the context, as in :class:`~causalvl.datasets.context_shift.ContextShift`);
    otherwise finds ``region_pixels[:, 1]`` in the composite by exact match.

    Raises:
        InputError: when the batch has no region data or a context region cannot be found.
    """
    regions = batch.get("region_pixels")
    if not isinstance(regions, torch.Tensor) or regions.dim() != 5 or regions.shape[1] < 2:
        raise InputError(
            "context reliance needs 'region_pixels' of shape (B, 2, C, h, w) (region 0 target, "
            f"1 context); got {None if regions is None else tuple(regions.shape)}."
        )
    boxes = batch.get("boxes")
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 3 or boxes.shape[1] < 2 or boxes.shape[2] != 4:
            raise InputError(
                f"'boxes' must be (B, 2, 4) (x0, y0, x1, y1) per region, got {tuple(boxes.shape)}."
            )
        x0, y0, x1, y1 = boxes[:, 1].round().long().cpu().unbind(-1)
        return torch.stack([y0, x0, y1, x1], dim=1)
    composite = batch.get("pixel_values")
    if not isinstance(composite, torch.Tensor) or composite.dim() != 4:
        raise InputError("context reliance needs the composite image 'pixel_values' (B, C, H, W).")
    h, w = regions.shape[-2:]
    out = []
    for i in range(regions.shape[0]):
        image = composite[i].detach().cpu().float()
        target = locate_region(image, regions[i, 0].detach().cpu().float())
        loc = locate_region(image, regions[i, 1].detach().cpu().float(), exclude=target)
        if loc is None:
            raise InputError(
                f"example {i}: the context region region_pixels[{i}, 1] does not appear in "
                "pixel_values; add a 'boxes' key (B, 2, 4) with (x0, y0, x1, y1) per region "
                "so the context can be replaced."
            )
        out.append((loc[0], loc[1], loc[0] + h, loc[1] + w))
    return torch.tensor(out, dtype=torch.long)


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
    is present). Nothing in ``batch`` is modified.

    Args:
        batch: with ``region_pixels`` ``(B, 2, C, h, w)`` and ``pixel_values`` ``(B, C, H, W)``.
        mode: ``"swap"`` or ``"zeros"``.
        generator: seeds the derangement for ``"swap"``.
    """
    if mode not in ("swap", "zeros"):
        raise InputError(f"context replacement mode {mode!r} unknown; choose 'swap' or 'zeros'.")
    boxes = context_boxes(batch)  # also checks region_pixels
    regions = batch["region_pixels"]
    b = regions.shape[0]
    if mode == "swap":
        from ..adapters.base import derangement

        perm = derangement(b, generator).to(regions.device)
        new_ctx = regions[perm, 1]
    else:
        new_ctx = torch.zeros_like(regions[:, 1])
    out = dict(batch)
    regions = regions.clone()
    regions[:, 1] = new_ctx
    out["region_pixels"] = regions
    composite = batch.get("pixel_values")
    if isinstance(composite, torch.Tensor) and composite.dim() == 4:
        composite = composite.clone()
        for i in range(b):
            y0, x0, y1, x1 = (int(v) for v in boxes[i])
            patch = new_ctx[i]
            if patch.shape[-2:] != (y1 - y0, x1 - x0):
                patch = F.interpolate(
                    patch[None].float(),
                    size=(y1 - y0, x1 - x0),
                    mode="bilinear",
                    align_corners=False,
                )[0].to(composite.dtype)
            composite[i, :, y0:y1, x0:x1] = patch
        out["pixel_values"] = composite
    return out


__all__ = [
    "context_boxes",
    "counterfactual_flip_rate",
    "kl_divergence",
    "locate_region",
    "mean_kl",
    "prior_agreement",
    "replace_context",
]
