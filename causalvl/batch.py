"""What a batch is: its metadata keys, where a model output keeps its logits, and what counts
as a correct answer for the batch's labels.

Datasets yield flat dicts; model inputs and metadata share one dict. The adapter passes a model
only its own input keys; objectives, the Trainer and the diagnostics read the metadata keys
below. Every part of causalvl takes these meanings from here.

    >>> import torch
    >>> correctness(torch.tensor([0, 1]), torch.tensor([0, 0]))
    tensor([1., 0.], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .errors import InputError

#: metadata key -> its meaning; never passed to a model's forward
METADATA: Mapping[str, str] = {
    "labels": "(B,) long class ids, or (B, A) float VQA soft scores",
    "group": "(B,) long group id for per-group and worst-group accuracy",
    "group_id": "(B,) long group id (an alias some loaders write)",
    "bias_aligned": "(B,) bool: the answer agrees with the training prior of its question type",
    "question_type": "(B,) long question type id (LMH / GGE / reweighting priors)",
    "context_class": "(B,) long context object class (context-shift data)",
    "position": "(B,) long position of the correct candidate (pair and foil benchmarks)",
    "image_index": "(B,) long index of the image in its source",
    "image_label": "(B,) long class of the image",
    "colour": "(B,) long tint colour id (prior-shift data)",
    "left_class": "(B,) long class of the left image (comparative pairs)",
    "right_class": "(B,) long class of the right image (comparative pairs)",
    "statement_type": "(B,) long statement type id (comparative pairs)",
    "target_position": "(B,) long position of the target object (context-shift data)",
}

#: the keys of :data:`METADATA`
METADATA_KEYS = frozenset(METADATA)


def labels_of(batch: Any) -> torch.Tensor | None:
    """The batch's ``labels`` (``None`` when it has none)."""
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    return None if labels is None else torch.as_tensor(labels)


def require_labels(batch: Any, owner: str) -> torch.Tensor:
    """The batch's ``labels``; an :class:`~causalvl.errors.InputError` naming ``owner`` when
    the batch has none."""
    labels = labels_of(batch)
    if labels is None:
        raise InputError(
            f"{owner} needs 'labels' in the batch (class ids (B,) or soft scores (B, A))."
        )
    return labels


def tensor_inputs(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``batch`` that are not metadata: the inputs of a plain module."""
    return {k: v for k, v in batch.items() if torch.is_tensor(v) and k not in METADATA_KEYS}


def collate_of(data: Any) -> Callable[[list[Any]], Any] | None:
    """The dataset's own ``collate`` (datasets of causalvl define one), or ``None`` for torch's
    default collation."""
    fn = getattr(data, "collate", None)
    return fn if callable(fn) else None


def ordered_loader(data: Any, batch_size: int) -> Any:
    """A ``DataLoader`` over ``data`` in its own order (no shuffling), with the dataset's
    collate: the loader of every pass that scores each example once."""
    from torch.utils.data import DataLoader

    return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_of(data))


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor of a (nested) batch to ``device``; everything else is kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def logits_of(out: Any) -> torch.Tensor:
    """The logits in a model output: a tensor itself, or its ``logits`` / ``logits_per_image``
    field (attribute or key: an :class:`~causalvl.InterventionOutput`, a Hugging Face
    ``ModelOutput``, a dict)."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("logits", "logits_per_image"):
        value = getattr(out, name, None)
        if value is None and isinstance(out, Mapping):
            value = out.get(name)
        if isinstance(value, torch.Tensor):
            return value
    raise InputError(
        f"cannot find logits in a {type(out).__name__} model output; return a tensor or an "
        "output with a 'logits' field, or pass predict=lambda model, batch: logits."
    )


def correctness(preds: Any, labels: Any) -> torch.Tensor:
    """Per-example correctness of predicted class ids, ``(N,)`` float64 in ``[0, 1]``.

    Args:
        preds: ``(N,)`` predicted class ids.
        labels: ``(N,)`` class ids (correct = 1.0 when equal), or ``(N, A)`` soft scores
            (correct = the score of the predicted answer, clamped to [0, 1]: the VQA accuracy).
    """
    preds = torch.as_tensor(preds).detach().cpu()
    if preds.dim() != 1:
        raise InputError(f"preds must have shape (N,), got {tuple(preds.shape)}.")
    preds = preds.long()
    labels = torch.as_tensor(labels).detach().cpu()
    if labels.dim() not in (1, 2):
        raise InputError(
            f"labels must be (N,) class ids or (N, A) soft scores, got shape {tuple(labels.shape)}."
        )
    if labels.shape[0] != preds.shape[0]:
        raise InputError(
            "inputs must have the same number of examples, got sizes "
            f"{{'preds': {preds.shape[0]}, 'labels': {labels.shape[0]}}}."
        )
    if preds.shape[0] == 0:
        raise InputError("cannot compute a metric on zero examples; pass a non-empty batch.")
    if labels.dim() == 2:
        if int(preds.max()) >= labels.shape[1] or int(preds.min()) < 0:
            raise InputError(
                f"predicted ids must index the {labels.shape[1]} soft-score columns, got range "
                f"[{int(preds.min())}, {int(preds.max())}]."
            )
        return labels.to(torch.float64).gather(1, preds[:, None])[:, 0].clamp(0.0, 1.0)
    return (preds == labels.long()).to(torch.float64)


def batch_correctness(logits: torch.Tensor, batch: Any) -> torch.Tensor | None:
    """:func:`correctness` of the argmax of ``logits`` ``(B, A)`` against the batch's labels,
    or ``None`` when the batch defines no answer. Without labels, square contrastive logits
    are scored against the diagonal (the matching text).

    This is the accuracy the Trainer logs and :func:`causalvl.diagnose` reports.

        >>> batch_correctness(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), {"labels": torch.tensor([0, 0])})
        tensor([1., 0.], dtype=torch.float64)
    """
    if logits.dim() != 2 or logits.shape[0] == 0:
        return None
    pred = logits.detach().argmax(-1).cpu()
    labels = labels_of(batch)
    if labels is None:
        if logits.shape[0] == logits.shape[1]:
            return correctness(pred, torch.arange(logits.shape[0]))
        return None
    if labels.is_floating_point() and labels.shape == logits.shape:
        return correctness(pred, labels)
    if labels.dim() == 1 and labels.shape[0] == logits.shape[0]:
        return correctness(pred, labels)
    return None


__all__ = [
    "METADATA",
    "METADATA_KEYS",
    "batch_correctness",
    "collate_of",
    "correctness",
    "labels_of",
    "require_labels",
    "logits_of",
    "ordered_loader",
    "tensor_inputs",
    "to_device",
]
