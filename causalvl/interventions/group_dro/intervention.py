"""Group DRO (Sagawa et al., ICLR 2020): minimise a weighted sum of per-group mean losses whose
weights ``q`` move online towards the groups with the highest loss.

Every training step (``kohpangwei/group_DRO``, ``loss.py`` ``LossComputer``):

1. per-example losses ``l_i`` (cross-entropy for class ids, answer-summed BCE for soft scores);
2. group means ``L_g = sum_{i in g} l_i / max(n_g^batch, 1)`` for the batch's ``group`` ids;
3. the adjusted losses ``L_g + C_g / sqrt(n_g)`` (the generalisation adjustment, with ``n_g``
   the training-set count of group ``g``), optionally divided by their sum
   (``normalize_loss``);
4. ``q_g <- q_g * exp(eta * adjusted_g)`` for the groups present in the batch (detached),
   then ``q <- q / sum(q)``: the weights are updated *before* they are used;
5. the loss ``sum_g q_g L_g``.

``q`` is a buffer of the intervention, so ``vl.save_pretrained`` / :func:`causalvl.load` and
the Trainer's checkpoints keep it, and ``fit(resume=True)`` continues with the same weights.
``q`` changes only in training mode (evaluation computes the loss with the current weights).

Example:
    >>> import torch, causalvl
    >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=3, image_size=8)
    >>> vl = causalvl.intervene(net, causalvl.GroupDROConfig(num_groups=2, eta=0.1))
    >>> batch = {"pixel_values": torch.rand(4, 3, 8, 8), "input_ids": torch.randint(1, 20, (4, 5)),
    ...          "labels": torch.tensor([0, 1, 2, 0]), "group": torch.tensor([0, 0, 1, 1])}
    >>> sorted(vl.objective(vl(batch), batch).parts)
    ['group_dro']
    >>> vl.interventions["0_group_dro"].group_weights.shape
    torch.Size([2])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...adapters.base import ModelAdapter
from ...batch import require_labels
from ...config import InterventionConfig
from ...errors import InputError
from ...losses import per_example_loss
from ...outputs import InterventionOutput
from ...runtime import module_device
from ..base import Intervention, implements
from ..losses import group_dro_update, group_mean_losses

__all__ = [
    "GroupDRO",
    "GroupDROConfig",
    "group_dro_update",
    "group_mean_losses",
    "per_example_loss",
]


# ----------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------
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
@implements(GroupDROConfig)
class GroupDRO(Intervention):
    """Implementation of :class:`GroupDROConfig`.

    Buffers (float32, saved with the weights): ``q`` ``(G,)`` the group weights (uniform at
    the start), ``adjustment`` ``(G,)`` ``C_g / sqrt(n_g)``, ``num_updates`` ``()`` the number
    of weight updates so far. ``loss`` returns ``{"group_dro": sum_g q_g L_g}`` and, in
    training mode, updates ``q`` first. Under ``torch.distributed`` the group sums and counts
    of the update are summed over the processes, so every rank keeps the same ``q``.
    """

    replaces_task_loss = True

    def __init__(self, config: GroupDROConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        g = int(config.num_groups)  # type: ignore[arg-type]
        device = module_device(model)
        self.register_buffer("q", torch.full((g,), 1.0 / g, device=device))
        self.register_buffer(
            "adjustment", torch.tensor(config.adjustments(), dtype=torch.float32, device=device)
        )
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long, device=device))

    @property
    def group_weights(self) -> torch.Tensor:
        """The current ``q`` ``(G,)`` (a detached copy)."""
        return self.q.detach().clone()

    def _groups(self, batch: Mapping[str, Any], batch_size: int) -> torch.Tensor:
        g = int(self.config.num_groups)
        groups = batch.get("group") if isinstance(batch, Mapping) else None
        if groups is None:
            keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise InputError(
                f"GroupDROConfig needs the batch key 'group': (B,) long group ids in [0, {g}) "
                f"(e.g. answer x spurious attribute); got keys {keys}. Add 'group' to every "
                "example of the training (and validation) data."
            )
        groups = torch.as_tensor(groups)
        if (
            groups.is_floating_point()
            or groups.is_complex()
            or groups.dtype == torch.bool
            or groups.dim() != 1
            or groups.shape[0] != batch_size
        ):
            raise InputError(
                f"batch['group'] must be ({batch_size},) integer group ids, got dtype "
                f"{groups.dtype} and shape {tuple(groups.shape)}."
            )
        if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= g):
            raise InputError(
                f"batch['group'] holds ids in [{int(groups.min())}, {int(groups.max())}] but "
                f"GroupDROConfig.num_groups = {g}; ids must lie in [0, {g - 1}] (raise "
                "num_groups, or renumber the groups)."
            )
        return groups.long()

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits = output.logits
        labels = require_labels(batch, "GroupDROConfig")
        losses = per_example_loss(logits, labels, what="Group DRO")
        groups = self._groups(batch, losses.shape[0]).to(losses.device)
        num = int(self.config.num_groups)
        group_loss, counts = group_mean_losses(losses, groups, num)
        if self.training:
            with torch.no_grad():
                stats_loss, stats_counts = group_loss.detach(), counts
                if _distributed():
                    import torch.distributed as dist

                    sums = torch.cat([group_loss.detach() * counts, counts])
                    dist.all_reduce(sums)
                    stats_counts = sums[num:]
                    stats_loss = sums[:num] / stats_counts.clamp_min(1)
                new_q = group_dro_update(
                    self.q.float(),
                    stats_loss.float(),
                    stats_counts > 0,
                    float(self.config.eta),
                    adjustment=self.adjustment.float(),
                    normalize_loss=bool(self.config.normalize_loss),
                )
                self.q.copy_(new_q.to(self.q.dtype))
                self.num_updates.add_(1)
        robust = (group_loss * self.q.detach().to(group_loss)).sum()
        return {"group_dro": robust}

    def extra_repr(self) -> str:
        return f"num_groups={self.config.num_groups}, eta={self.config.eta}"


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
