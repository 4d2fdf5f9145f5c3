"""Learning-rate schedules as pure functions of (epoch, step).

A schedule here has no state of its own: the lr multiplier of every step is computed from the
epoch, the global step and the config, so a resumed run lands on exactly the same lr as an
uninterrupted one. :func:`lr_factor` is what the trainer applies before each optimizer step
(``group["lr"] = group["initial_lr"] * factor``).

    >>> from causalvl.training import TrainConfig
    >>> from causalvl.training.schedules import lr_factor
    >>> cfg = TrainConfig(epochs=24, schedule="ban")
    >>> [round(lr_factor(cfg, epoch=e, step=0, total_steps=24), 4) for e in (0, 1, 6, 13, 14, 16, 23)]
    [0.5, 0.75, 2.0, 2.0, 0.5, 0.125, 0.002]
"""

from __future__ import annotations

import bisect
import math

from .config import BAN_WARMUP, TrainConfig


def ban_factor(
    epoch: int,
    *,
    warmup: tuple[float, float, int] = BAN_WARMUP,
    milestones: tuple[int, ...] = (14, 16, 18, 20, 22),
    gamma: float = 0.25,
) -> float:
    """The CF-VQA / RUBi ``BanOptimizer`` multiplier of the base lr at ``epoch`` (0-based).

    Epochs ``0 .. n-1`` use ``linspace(start, end, n)[epoch]`` (default ×0.5, ×0.75, ..., ×2.0);
    later epochs keep ``end`` and multiply it by ``gamma`` at every milestone ``m`` with
    ``n <= m <= epoch`` (milestones inside the warm-up are ignored, as in the original).
    """
    start, end, n = warmup
    if epoch < n:
        return start + (end - start) * (epoch / (n - 1) if n > 1 else 1.0)
    passed = sum(1 for m in milestones if n <= m <= epoch)
    return end * gamma**passed


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    """Warm-up length of ``"warmup_cosine"`` in steps."""
    if config.warmup_steps is not None:
        return min(config.warmup_steps, total_steps)
    return min(int(round(config.warmup_fraction * total_steps)), total_steps)


def lr_factor(config: TrainConfig, *, epoch: int, step: int, total_steps: int) -> float:
    """Multiplier of the base lr for the optimizer step ``step`` (0-based, global) in ``epoch``.

    Args:
        config: the training config (``schedule`` and its parameters).
        epoch: the current epoch (0-based).
        step: the global step index about to be taken (0-based).
        total_steps: ``epochs * steps_per_epoch`` (used by ``"warmup_cosine"``).
    """
    name = config.schedule
    if name == "constant":
        return 1.0
    if name == "step":
        return config.gamma() ** bisect.bisect_right(list(config.milestones()), epoch)
    if name == "ban":
        return ban_factor(epoch, milestones=config.milestones(), gamma=config.gamma())
    # warmup_cosine
    warm = warmup_steps(config, total_steps)
    if step < warm:
        return (step + 1) / warm
    span = max(1, total_steps - warm)
    progress = min(1.0, (step - warm) / span)
    floor = config.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


__all__ = ["ban_factor", "lr_factor", "warmup_steps"]
