"""Compositional scores: Winoground text / image / group scores and foil accuracy.

Winoground (Thrush et al., 2022) pairs two images ``i0, i1`` with two captions ``c0, c1`` made
of the same words in a different order; ``c0`` describes ``i0`` and ``c1`` describes ``i1``.
With ``s(c, i)`` the image-text score:

* text score: ``s(c0, i0) > s(c1, i0)`` and ``s(c1, i1) > s(c0, i1)``;
* image score: ``s(c0, i0) > s(c0, i1)`` and ``s(c1, i1) > s(c1, i0)``;
* group score: both.

Comparisons are strict, so ties count as failures (a constant scorer scores 0).

    >>> import torch
    >>> from causalvl.diagnostics.compositional import winoground_scores
    >>> s = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])   # (N, caption, image)
    >>> r = winoground_scores(s)
    >>> r.text_score, r.image_score, r.group_score
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import InputError
from .results import CompositionalScores

ScoreFn = Callable[[Any, Any], Any]


def winoground_outcomes(scores: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example text, image and group success, each ``(N,)`` bool.

    Args:
        scores: ``(N, 2, 2)`` with ``scores[k, c, i] = s(caption c, image i)`` (or one
            ``(2, 2)`` example).
    """
    s = torch.as_tensor(scores).detach().cpu().to(torch.float64)
    if s.dim() == 2:
        s = s[None]
    if s.dim() != 3 or s.shape[1:] != (2, 2) or s.shape[0] == 0:
        raise InputError(
            f"Winoground scores must be (N, 2, 2) indexed [example, caption, image], got "
            f"{tuple(s.shape)}."
        )
    c0i0, c0i1, c1i0, c1i1 = s[:, 0, 0], s[:, 0, 1], s[:, 1, 0], s[:, 1, 1]
    text = (c0i0 > c1i0) & (c1i1 > c0i1)
    image = (c0i0 > c0i1) & (c1i1 > c1i0)
    return text, image, text & image


def winoground_scores(scores: Any) -> CompositionalScores:
    """Winoground text, image and group scores of ``(N, 2, 2)`` [example, caption, image] scores."""
    text, image, group = winoground_outcomes(scores)
    return CompositionalScores(
        text_score=float(text.double().mean()),
        image_score=float(image.double().mean()),
        group_score=float(group.double().mean()),
        n_pairs=int(text.numel()),
    )


def foil_accuracy(true_scores: Any, foil_scores: Any) -> float:
    """Fraction of examples whose true caption scores strictly above its foil.

    Args:
        true_scores: ``(N,)`` score of each image with its true caption.
        foil_scores: ``(N,)`` score of the same image with the foil caption.
    """
    t = torch.as_tensor(true_scores).detach().cpu().to(torch.float64).reshape(-1)
    f = torch.as_tensor(foil_scores).detach().cpu().to(torch.float64).reshape(-1)
    if t.shape != f.shape or t.numel() == 0:
        raise InputError(
            f"true_scores and foil_scores must be non-empty and of equal length, got "
            f"{tuple(t.shape)} and {tuple(f.shape)}."
        )
    return float((t > f).double().mean())


def score_matrix(score: ScoreFn, images: Any, captions: Any) -> torch.Tensor:
    """Call ``score(images, captions)`` and check it returns ``(n_img, n_cap)``."""
    out = torch.as_tensor(score(images, captions)).detach().cpu().to(torch.float64)
    n_img, n_cap = len(images), len(captions)
    if tuple(out.shape) != (n_img, n_cap):
        raise InputError(
            f"the scoring function must return (n_images, n_captions) = ({n_img}, {n_cap}), got "
            f"{tuple(out.shape)}."
        )
    return out


def compositional_scores(
    score: ScoreFn,
    *,
    pairs: Sequence[tuple[Any, Any]] | None = None,
    foils: Sequence[tuple[Any, Any, Any]] | None = None,
) -> CompositionalScores:
    """Winoground scores and foil accuracy from any image-text scoring function.

    Args:
        score: ``score(images, captions) -> (n_img, n_cap)`` similarity matrix (e.g. CLIP logits
            per image). ``images`` is whatever the function takes, indexed along dim 0.
        pairs: Winoground examples ``(images (2, ...), captions [c0, c1])`` where caption
            ``j`` describes image ``j``.
        foils: ``(image (1, ...), true caption, foil caption)`` triples.

    Example:
        >>> import torch
        >>> emb = {"a dog on grass": torch.tensor([1.0, 0.0]), "grass on a dog": torch.tensor([0.0, 1.0])}
        >>> def score(images, captions):
        ...     return images @ torch.stack([emb[c] for c in captions]).T
        >>> pair = (torch.eye(2), ["a dog on grass", "grass on a dog"])
        >>> compositional_scores(score, pairs=[pair]).group_score
        1.0
    """
    if not pairs and not foils:
        raise InputError("compositional_scores needs Winoground pairs, foils, or both.")
    fields: dict[str, Any] = {}
    if pairs:
        mats = []
        for k, (images, captions) in enumerate(pairs):
            if len(images) != 2 or len(captions) != 2:
                raise InputError(
                    f"Winoground example {k} must have 2 images and 2 captions, got "
                    f"{len(images)} and {len(captions)}."
                )
            mats.append(score_matrix(score, images, captions).T)  # -> [caption, image]
        r = winoground_scores(torch.stack(mats))
        fields.update(
            text_score=r.text_score,
            image_score=r.image_score,
            group_score=r.group_score,
            n_pairs=r.n_pairs,
        )
    if foils:
        true_s, foil_s = [], []
        for image, true_caption, foil_caption in foils:
            m = score_matrix(score, image, [true_caption, foil_caption])
            true_s.append(m[0, 0])
            foil_s.append(m[0, 1])
        fields.update(
            foil_accuracy=foil_accuracy(torch.stack(true_s), torch.stack(foil_s)),
            n_foils=len(foils),
        )
    return CompositionalScores(**fields)


__all__ = [
    "compositional_scores",
    "foil_accuracy",
    "score_matrix",
    "winoground_outcomes",
    "winoground_scores",
]
