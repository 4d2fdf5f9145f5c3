"""Resampling: draw training examples so that chosen metadata cells are equally likely.

``TrainConfig(sampler="balanced")`` draws, with replacement, each example with probability
proportional to ``1 / n(cell)``, where the cell is the example's combination of
``balance_keys`` (default: question type and answer). Every cell present in the data then has
the same expected share of each epoch; within a question type every answer is equally likely,
which removes the answer prior the question type predicts (the resampling twin of
:class:`~causalvl.ReweightConfig`'s inverse-prior weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError


def _column(data: Any, key: str) -> torch.Tensor:
    tensors = getattr(data, "tensors", None)
    if callable(tensors):
        table = tensors()
        if isinstance(table, Mapping) and key in table:
            return torch.as_tensor(table[key])
    values = []
    for i in range(len(data)):
        item = data[i]
        if not isinstance(item, Mapping) or key not in item:
            found = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise InputError(
                f"balanced sampling needs the key {key!r} in every example; example {i} has "
                f"{found}. Set TrainConfig.balance_keys to keys the data has, e.g. ('labels',)."
            )
        values.append(torch.as_tensor(item[key]))
    return torch.stack(values)


def balanced_weights(data: Any, keys: Sequence[str] = ("question_type", "labels")) -> torch.Tensor:
    """Per-example sampling weights ``1 / n(cell)`` over the combinations of ``keys``.

    Args:
        data: a map-style dataset of dicts (``data.tensors()`` is used when it has one).
        keys: metadata keys with one integer per example (e.g. ``question_type``, ``labels``,
            ``group``).

    Returns:
        ``(N,)`` float64 weights summing to the number of cells: each cell's total weight is 1.

    Example::

        >>> data = [{"labels": torch.tensor(a)} for a in (0, 0, 0, 1)]
        >>> balanced_weights(data, ("labels",)).tolist()
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 1.0]
    """
    if len(data) == 0:
        raise InputError("balanced sampling got an empty dataset.")
    columns = []
    for key in keys:
        col = _column(data, key)
        if col.dim() != 1 or col.is_floating_point():
            raise InputError(
                f"balanced sampling needs one integer per example in {key!r}; got dtype "
                f"{col.dtype} and shape {tuple(col.shape)} (soft-score labels cannot be "
                "balanced: balance on 'question_type' or 'group' instead)."
            )
        columns.append(col.long())
    cells = torch.stack(columns, 1)
    _, inverse, counts = torch.unique(cells, dim=0, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].double()


__all__ = ["balanced_weights"]
