"""Losses against a batch's answers: the one place where a label becomes a loss.

Two conventions exist in the literature and both are here, named:

* ``soft="bce"`` — binary cross-entropy per answer, summed over the answers (the VQA
  convention of Anderson et al. and of LMH / GGE code): the plain task loss;
* ``soft="softmax"`` — softmax cross-entropy against the normalised soft scores (CF-VQA and
  RUBi train their fused and branch logits with it).

Class-id labels ``(B,)`` give ordinary cross-entropy under both. Contrastive models without
labels are trained with InfoNCE, matching pairs on the diagonal (:func:`info_nce`).

    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0]])
    >>> bool(torch.allclose(task_loss(z, {"labels": torch.tensor([0])}),
    ...                     per_example_loss(z, torch.tensor([0])).mean()))
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .batch import labels_of
from .errors import InputError

#: clamps a normalising sum away from zero
EPS = 1e-12

SoftLoss = Literal["bce", "softmax"]


def _checked_labels(logits: torch.Tensor, labels: torch.Tensor, what: str) -> torch.Tensor:
    labels = torch.as_tensor(labels).to(logits.device)
    if labels.is_floating_point():
        if labels.shape != logits.shape:
            raise InputError(
                f"{what}: soft-score labels of shape {tuple(labels.shape)} do not match logits "
                f"{tuple(logits.shape)}; pass class ids (B,) or scores (B, num_answers)."
            )
        return labels
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise InputError(
            f"{what}: class-id labels must have shape ({logits.shape[0]},), got "
            f"{tuple(labels.shape)}."
        )
    return labels.long()


def per_example_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    soft: SoftLoss = "bce",
    what: str = "the task loss",
) -> torch.Tensor:
    """The unreduced task loss ``(B,)`` in float32: cross-entropy for class ids ``(B,)``; for
    soft scores ``(B, A)``, BCE summed over the answers (``soft="bce"``) or softmax
    cross-entropy against ``y / Σ_a y`` (``soft="softmax"``).

    Example:
        >>> round(float(per_example_loss(torch.zeros(1, 4), torch.tensor([2]))[0]), 4)  # log 4
        1.3863
    """
    if logits.dim() != 2:
        raise InputError(
            f"{what} needs answer logits (B, num_answers); got shape {tuple(logits.shape)} "
            "(contrastive models are not supported)."
        )
    f = logits.float()
    labels = _checked_labels(f, labels, what)
    if not labels.is_floating_point():
        return F.cross_entropy(f, labels, reduction="none")
    y = labels.float()
    if soft == "bce":
        return F.binary_cross_entropy_with_logits(f, y, reduction="none").sum(-1)
    target = y / y.sum(-1, keepdim=True).clamp_min(EPS)
    return -(target * F.log_softmax(f, dim=-1)).sum(-1)


def info_nce(
    logits: torch.Tensor, *, num_pairs: int | None = None, symmetric: bool = True
) -> torch.Tensor:
    """InfoNCE on image-text logits ``(num_images, num_texts)``: the first ``num_pairs`` images
    match the first ``num_pairs`` texts (the diagonal); extra columns are negatives only.

    ``symmetric=True`` averages the image->text and text->image directions (CLIP);
    ``False`` takes the image->text direction alone.
    """
    if logits.dim() != 2:
        raise InputError(f"InfoNCE needs (images, texts) logits, got {tuple(logits.shape)}.")
    n = min(logits.shape) if num_pairs is None else int(num_pairs)
    if not 0 < n <= min(logits.shape):
        raise InputError(
            f"num_pairs={num_pairs} does not fit logits of shape {tuple(logits.shape)}."
        )
    target = torch.arange(n, device=logits.device)
    i2t = F.cross_entropy(logits[:n], target)
    if not symmetric:
        return i2t
    return 0.5 * (i2t + F.cross_entropy(logits[:, :n].t(), target))


def task_loss(
    logits: torch.Tensor,
    batch: Mapping[str, Any] | None,
    *,
    kind: str = "classifier",
    soft: SoftLoss = "bce",
    symmetric: bool = True,
    what: str = "the task loss",
) -> torch.Tensor:
    """The task loss of ``logits`` against ``batch["labels"]`` (a 0-d tensor).

    * class ids ``(B,)`` -> cross-entropy;
    * soft scores ``(B, A)`` -> ``soft="bce"``: BCE summed over answers, averaged over the
      batch (the VQA convention); ``soft="softmax"``: soft-target cross-entropy (rows whose
      scores are all zero contribute zero; the published CF-VQA code instead samples one
      answer per question in proportion to its score, which has this expectation);
    * no labels and square contrastive logits -> :func:`info_nce` (``symmetric``).

    Args:
        logits: ``(B, A)`` (or ``(num_images, num_texts)``).
        batch: a mapping with ``"labels"`` (or ``None``).
        kind: the adapter kind, ``"classifier"`` or ``"contrastive"``.
        soft: the loss for soft scores.
        symmetric: InfoNCE in both directions (otherwise image -> text).
        what: names the loss in error messages.

    Example:
        >>> z = torch.tensor([[2.0, 0.0]])
        >>> a = task_loss(z, {"labels": torch.tensor([0])}, soft="softmax")
        >>> b = task_loss(z, {"labels": torch.tensor([[1.0, 0.0]])}, soft="softmax")
        >>> bool(torch.allclose(a, b))
        True
    """
    labels = labels_of(batch)
    if labels is None:
        if kind == "contrastive" and logits.dim() == 2 and logits.shape[0] == logits.shape[1]:
            return info_nce(logits, symmetric=symmetric)
        raise InputError(
            f"the batch has no 'labels'; {what} needs class ids (B,) or soft scores (B, A) "
            "under 'labels'."
        )
    labels = _checked_labels(logits, labels, what)
    if not labels.is_floating_point():
        return F.cross_entropy(logits, labels)
    y = labels.to(logits.dtype)
    if soft == "bce":
        return F.binary_cross_entropy_with_logits(logits, y) * logits.shape[-1]
    target = y / y.sum(-1, keepdim=True).clamp_min(EPS)
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def answer_cross_entropy(
    logits: torch.Tensor, batch: Mapping[str, Any] | None, *, kind: str = "classifier"
) -> torch.Tensor:
    """The cross-entropy CF-VQA and RUBi train their fused and branch logits with:
    :func:`task_loss` with ``soft="softmax"`` and image -> text InfoNCE.

    Example:
        >>> z = torch.tensor([[2.0, 0.0]])
        >>> a = answer_cross_entropy(z, {"labels": torch.tensor([0])})
        >>> b = answer_cross_entropy(z, {"labels": torch.tensor([[1.0, 0.0]])})
        >>> bool(torch.allclose(a, b))
        True
    """
    return task_loss(
        logits,
        batch,
        kind=kind,
        soft="softmax",
        symmetric=False,
        what="the branch loss (CF-VQA / RUBi)",
    )


__all__ = ["EPS", "answer_cross_entropy", "info_nce", "per_example_loss", "task_loss"]
