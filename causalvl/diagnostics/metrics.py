"""Pure metric functions on tensors (or anything ``torch.as_tensor`` accepts).

All rates are fractions in ``[0, 1]``. Shapes: ``preds`` ``(N,)`` long class ids; ``labels``
``(N,)`` long class ids or ``(N, A)`` float soft scores (VQA); ``groups`` ``(N,)`` long.

    >>> import torch
    >>> from causalvl.diagnostics.metrics import worst_group_accuracy
    >>> preds, labels = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0])
    >>> worst_group_accuracy(preds, labels, groups=torch.tensor([0, 0, 1, 1])).group
    1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..batch import correctness
from ..errors import InputError
from .results import BiasAlignment, GroupMetrics, GroupScore

#: the worst group is taken among groups of at least this many examples, in
#: :func:`causalvl.diagnose` and in the Trainer's evaluation (smaller groups are mostly noise)
DEFAULT_MIN_GROUP_SIZE = 20


def _as_1d(name: str, value: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.as_tensor(value).detach().cpu()
    if dtype is not None:
        t = t.to(dtype)
    if t.dim() != 1:
        raise InputError(f"{name} must have shape (N,), got {tuple(t.shape)}.")
    return t


def _same_length(**tensors: torch.Tensor) -> int:
    sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"inputs must have the same number of examples, got sizes {sizes}.")
    n = next(iter(sizes.values()))
    if n == 0:
        raise InputError("cannot compute a metric on zero examples; pass a non-empty batch.")
    return n


def accuracy(preds: Any, labels: Any) -> float:
    """Fraction of examples answered correctly (mean soft score for ``(N, A)`` labels)."""
    return float(correctness(preds, labels).mean())


def group_metrics(
    correct: Any,
    groups: Any,
    *,
    names: Mapping[int, str] | Callable[[int], str] | None = None,
    train_weights: Mapping[int, float] | None = None,
    group_source: str = "the batch key 'group'",
    min_group_size: int = 1,
) -> GroupMetrics:
    """Per-group accuracy, worst group and the three averages, from per-example correctness.

    Args:
        correct: ``(N,)`` correctness in [0, 1] (see :func:`correctness`).
        groups: ``(N,)`` integer group ids.
        names: group id -> readable name (mapping or function); default ``"group=<id>"``.
        train_weights: optional group id -> share of the training set, for the
            train-proportion weighted average (normalised over the groups present).
        group_source: how the groups were derived, shown in reports.
        min_group_size: the worst group is taken among groups of at least this many examples
            (:func:`causalvl.diagnose` uses 20); smaller groups are listed in
            ``small_groups``. With no group that large, the worst group is ``None``.

    Returns:
        :class:`GroupMetrics`; ties for the worst group go to the smallest group id.

    Example:
        >>> import torch
        >>> m = group_metrics(torch.tensor([1.0, 1, 0, 0, 1]), torch.tensor([0, 0, 0, 1, 1]),
        ...                   min_group_size=3)
        >>> m.worst_group.group, [g.group for g in m.small_groups]
        (0, [1])
    """
    correct = _as_1d("correct", correct, torch.float64)
    groups = _as_1d("groups", groups).long()
    _same_length(correct=correct, groups=groups)
    ids, inverse = torch.unique(groups, sorted=True, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(ids)).to(torch.float64)
    sums = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, inverse, correct)
    return _metrics_from_sums(
        ids.tolist(),
        sums,
        counts,
        names=names,
        train_weights=train_weights,
        group_source=group_source,
        min_group_size=min_group_size,
    )


def _check_min_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(
            f"min_group_size = {value!r} must be a positive integer (e.g. 20); use 1 to consider "
            "every group for the worst group."
        )
    return value


def _metrics_from_sums(
    ids: list[int],
    sums: torch.Tensor,
    counts: torch.Tensor,
    *,
    names: Mapping[int, str] | Callable[[int], str] | None,
    train_weights: Mapping[int, float] | None,
    group_source: str = "the batch key 'group'",
    min_group_size: int = 1,
) -> GroupMetrics:
    min_group_size = _check_min_size(min_group_size)
    accs = sums / counts

    def name_of(g: int) -> str:
        if names is None:
            return f"group={g}"
        if callable(names) and not isinstance(names, Mapping):
            return str(names(g))
        return str(names.get(g, f"group={g}"))

    per_group = tuple(
        GroupScore(group=int(g), name=name_of(int(g)), accuracy=float(a), n=int(c))
        for g, a, c in zip(ids, accs.tolist(), counts.tolist())
    )
    eligible = counts >= min_group_size
    small = tuple(g for g in per_group if g.n < min_group_size)
    worst = None
    if bool(eligible.any()):
        masked = torch.where(eligible, accs, torch.full_like(accs, math.inf))
        worst = per_group[int(torch.argmin(masked))]  # argmin returns the first minimum
    average = float(sums.sum() / counts.sum())
    train_avg = None
    if train_weights is not None:
        w = torch.tensor(
            [float(train_weights.get(g.group, 0.0)) for g in per_group], dtype=torch.float64
        )
        if float(w.sum()) <= 0:
            raise InputError(
                f"train_weights {dict(train_weights)} give no weight to the evaluated groups "
                f"{[g.group for g in per_group]}."
            )
        train_avg = float((w / w.sum() * accs).sum())
    return GroupMetrics(
        per_group=per_group,
        worst_group=worst,
        average_sample_weighted=average,
        average_over_groups=float(accs.mean()),
        worst_group_accuracy=None if worst is None else worst.accuracy,
        gap=None if worst is None else average - worst.accuracy,
        average_train_weighted=train_avg,
        group_source=group_source,
        min_group_size=min_group_size,
        small_groups=small,
    )


def group_accuracy(preds: Any, labels: Any, groups: Any) -> dict[int, float]:
    """Accuracy of each group: ``{group_id: fraction correct}``."""
    m = group_metrics(correctness(preds, labels), groups)
    return {g.group: g.accuracy for g in m.per_group}


def worst_group_accuracy(preds: Any, labels: Any, groups: Any, **kwargs: Any) -> GroupScore | None:
    """The group with the lowest accuracy (not the smallest group), as a :class:`GroupScore`.

    Keyword arguments go to :func:`group_metrics` (e.g. ``min_group_size=20``); ``None`` when
    no group has ``min_group_size`` examples."""
    return group_metrics(correctness(preds, labels), groups, **kwargs).worst_group


def bias_alignment(correct: Any, aligned: Any) -> BiasAlignment:
    """Accuracy on bias-aligned vs. bias-conflicting examples and their gap.

    Args:
        correct: ``(N,)`` correctness in [0, 1].
        aligned: ``(N,)`` bool, true where the answer agrees with the training prior.
    """
    correct = _as_1d("correct", correct, torch.float64)
    aligned = _as_1d("aligned", aligned).bool()
    _same_length(correct=correct, aligned=aligned)
    n_a, n_c = int(aligned.sum()), int((~aligned).sum())
    acc_a = float(correct[aligned].mean()) if n_a else None
    acc_c = float(correct[~aligned].mean()) if n_c else None
    gap = acc_a - acc_c if acc_a is not None and acc_c is not None else None
    return BiasAlignment(
        accuracy_aligned=acc_a,
        accuracy_conflicting=acc_c,
        gap=gap,
        n_aligned=n_a,
        n_conflicting=n_c,
    )


class GroupAccuracy:
    """Stateful per-group accuracy over batches: ``update()`` / ``compute()`` / ``reset()``.

    Keeps only per-group sums and counts, so it fits long evaluations and training loops
    (e.g. selecting checkpoints by worst-group accuracy).

    Args:
        names: group id -> readable name (mapping or function), passed to :class:`GroupMetrics`.
        train_weights: optional group id -> training share for the train-weighted average.
        min_group_size: groups smaller than this are left out of the worst group (default 1:
            every group counts).

    Example:
        >>> import torch
        >>> acc = GroupAccuracy()
        >>> acc.update(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 1]))
        >>> acc.update(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), torch.tensor([1]))
        >>> acc.compute().worst_group_accuracy
        0.5
    """

    def __init__(
        self,
        *,
        names: Mapping[int, str] | Callable[[int], str] | None = None,
        train_weights: Mapping[int, float] | None = None,
        min_group_size: int = 1,
    ) -> None:
        self.names = names
        self.train_weights = train_weights
        self.min_group_size = _check_min_size(min_group_size)
        self.reset()

    def reset(self) -> None:
        """Forget every example seen so far."""
        self._sums: dict[int, float] = {}
        self._counts: dict[int, int] = {}

    def update(self, preds: Any, labels: Any, groups: Any) -> None:
        """Add a batch: ``preds`` ``(B,)`` ids or ``(B, A)`` logits, ``labels`` ``(B,)`` ids or
        ``(B, A)`` soft scores, ``groups`` ``(B,)`` ids."""
        p = torch.as_tensor(preds).detach().cpu()
        if p.dim() == 2:
            p = p.argmax(-1)
        correct = correctness(p, labels)
        g = _as_1d("groups", groups).long()
        _same_length(correct=correct, groups=g)
        for gid, c in zip(g.tolist(), correct.tolist()):
            self._sums[gid] = self._sums.get(gid, 0.0) + c
            self._counts[gid] = self._counts.get(gid, 0) + 1

    def compute(self) -> GroupMetrics:
        """:class:`GroupMetrics` of everything seen since the last reset.

        Raises:
            InputError: when nothing was added yet.
        """
        if not self._counts:
            raise InputError("GroupAccuracy.compute() before any update(); add a batch first.")
        ids = sorted(self._counts)
        sums = torch.tensor([self._sums[g] for g in ids], dtype=torch.float64)
        counts = torch.tensor([self._counts[g] for g in ids], dtype=torch.float64)
        return _metrics_from_sums(
            ids,
            sums,
            counts,
            names=self.names,
            train_weights=self.train_weights,
            min_group_size=self.min_group_size,
        )


__all__ = [
    "DEFAULT_MIN_GROUP_SIZE",
    "GroupAccuracy",
    "accuracy",
    "bias_alignment",
    "correctness",
    "group_accuracy",
    "group_metrics",
    "worst_group_accuracy",
]
