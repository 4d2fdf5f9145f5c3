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

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...adapters.base import ModelAdapter
from ...batch import require_labels
from ...errors import InputError
from ...losses import per_example_loss
from ...outputs import InterventionOutput
from ...runtime import module_device
from ..base import Intervention, implements
from ..losses import group_dro_update, group_mean_losses
from .config import GroupDROConfig

__all__ = [
    "GroupDRO",
    "GroupDROConfig",
    "group_dro_update",
    "group_mean_losses",
    "per_example_loss",
]


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
