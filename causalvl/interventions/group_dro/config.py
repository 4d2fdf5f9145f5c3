"""Config of Group DRO (:class:`GroupDROConfig`, ``"group_dro"``).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ...config import InterventionConfig

__all__ = ["GroupDROConfig"]


@dataclass(kw_only=True)
class GroupDROConfig(InterventionConfig):
    """Group DRO (Sagawa et al., 2020): train on ``sum_g q_g L_g`` with online group weights
    ``q`` that grow on the groups with the highest mean loss. The task loss is replaced;
    ``logits`` stay the model's own (the loss is taken on the current ``output.logits``).

    Args:
        num_groups: ``G``; every batch's ``group`` ids must lie in ``[0, G)``. May be left out
            when ``group_counts`` is given (then ``G = len(group_counts)``).
        eta: the step size of the weight update (official ``--robust_step_size``, 0.01).
        generalization_adjustment: ``C`` (a number for every group, or one number per group):
            ``C_g / sqrt(n_g)`` is added to each group's loss in the weight update, favouring
            small groups (official ``--generalization_adjustment``; its README runs use 0).
            Needs ``group_counts``.
        group_counts: ``n_g``, the **training-set** count of every group (e.g.
            ``torch.bincount(train_groups, minlength=G).tolist()``).
        normalize_loss: divide the adjusted group losses by their sum before the update
            (official ``--normalize_loss``).

    The batch passed to ``objective`` needs ``labels`` and ``group`` ``(B,)`` long. Group DRO
    only helps a model that cannot fit its training set; pair it with strong weight decay
    (``TrainConfig.weight_decay``) or early stopping on a worst-group validation split
    (``select_metric="val/worst_group_accuracy"``), as in the paper.

    Differences from the official code: the weights of groups absent from a batch are not
    multiplied at all (the official code multiplies them by ``exp(eta * C_g / sqrt(n_g))``,
    which differs only when ``C > 0``); a per-group ``C`` with some zeros adjusts the other
    groups (the official code then silently adjusts none); the reported loss is ``sum_g q_g
    L_g`` without the constant adjustment (the gradient is the same).

    Example:
        >>> cfg = GroupDROConfig(group_counts=(90, 10), generalization_adjustment=1.0)
        >>> cfg.num_groups, [round(a, 4) for a in cfg.adjustments()]
        (2, [0.1054, 0.3162])
    """

    type = "group_dro"
    num_groups: int | None = None
    eta: float = 0.01
    generalization_adjustment: float | tuple[float, ...] = 0.0
    group_counts: tuple[int, ...] | None = None
    normalize_loss: bool = False

    def validate(self) -> None:
        if self.group_counts is not None:
            counts = self.group_counts
            if isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence) or not counts:
                self._fail("group_counts", "must be a non-empty list of training-set group counts")
            if any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in counts):
                self._fail("group_counts", "counts must be integers >= 0")
            self._normalise("group_counts", tuple(counts))
            if self.num_groups is None:
                self._normalise("num_groups", len(self.group_counts))
        if self.num_groups is None:
            self._fail(
                "num_groups",
                "pass the number of groups (batch['group'] ids lie in [0, num_groups)), or "
                "group_counts",
            )
        self._check_int("num_groups", minimum=1)
        if self.group_counts is not None and len(self.group_counts) != self.num_groups:
            self._fail(
                "group_counts",
                f"has {len(self.group_counts)} entries but num_groups = {self.num_groups}",
            )
        self._check_positive("eta", allow_zero=True)
        if not isinstance(self.normalize_loss, bool):
            self._fail("normalize_loss", "must be True or False")
        adj = self.generalization_adjustment
        if isinstance(adj, (int, float)) and not isinstance(adj, bool):
            self._check_positive("generalization_adjustment", allow_zero=True)
            values = (float(adj),) * self.num_groups
        elif isinstance(adj, Sequence) and not isinstance(adj, (str, bytes)):
            if len(adj) != self.num_groups:
                self._fail(
                    "generalization_adjustment",
                    f"needs one number per group ({self.num_groups}) or a single number",
                )
            ok = all(
                isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
                for a in adj
            )
            if not ok or any(a < 0 for a in adj):
                self._fail("generalization_adjustment", "entries must be finite numbers >= 0")
            self._normalise("generalization_adjustment", tuple(float(a) for a in adj))
            values = self.generalization_adjustment
        else:
            self._fail("generalization_adjustment", "must be a number >= 0 or a list of them")
        if any(v > 0 for v in values):
            if self.group_counts is None:
                self._fail(
                    "generalization_adjustment",
                    "C / sqrt(n_g) needs the training-set group counts; pass group_counts "
                    "(e.g. torch.bincount(train_groups, minlength=num_groups).tolist())",
                )
            empty = [
                g for g, (v, n) in enumerate(zip(values, self.group_counts)) if v > 0 and n == 0
            ]
            if empty:
                self._fail(
                    "group_counts",
                    f"groups {empty} have no training example, so C / sqrt(n_g) is infinite; "
                    "set their generalization_adjustment to 0 or drop the groups",
                )

    def adjustments(self) -> tuple[float, ...]:
        """``C_g / sqrt(n_g)`` per group (zeros without an adjustment)."""
        adj = self.generalization_adjustment
        values = adj if isinstance(adj, tuple) else (float(adj),) * int(self.num_groups or 0)
        if self.group_counts is None:
            return tuple(0.0 for _ in values)
        return tuple(v / math.sqrt(n) if v > 0 else 0.0 for v, n in zip(values, self.group_counts))


# ----------------------------------------------------------------------------------------
# implementation
# ----------------------------------------------------------------------------------------
