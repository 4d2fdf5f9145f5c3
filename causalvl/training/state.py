"""``TrainState``: everything a training run needs to continue where it stopped.

One object is both what a checkpoint holds and what a resume restores: the counters (epochs
completed, optimizer steps), the metrics history, the best-so-far and early-stopping count,
the learning-rate factor, and the snapshots of the live objects (model and objective weights,
optimizer and GradScaler state, random generator states). :meth:`TrainState.to_checkpoint` and
:meth:`TrainState.from_checkpoint` translate it to and from the on-disk
:class:`~causalvl.training.checkpoint.Checkpoint` (layout in ``checkpoint.py``; the field names
of ``checkpoint.json`` are unchanged since format 1, so older checkpoints resume).

    >>> state = TrainState()
    >>> state.update_best(0.5, epoch=1, mode="max", min_delta=0.0)
    True
    >>> state.update_best(0.5, epoch=2, mode="max", min_delta=0.0)  # a tie is no improvement
    False
    >>> state.best_epoch, state.bad_epochs
    (1, 1)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .checkpoint import Checkpoint, validate_train_state

#: Key prefixes of :attr:`Checkpoint.extra_tensors`.
RNG_PREFIX = "rng/"
OBJECTIVE_PREFIX = "objective/"


def is_improvement(
    value: float, best: float | None, *, mode: Literal["max", "min"], min_delta: float
) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (strictly: a change of
    exactly ``min_delta`` is not an improvement). The first non-NaN value always improves on
    ``None`` (or NaN); a NaN value never improves.

    >>> is_improvement(0.7, 0.5, mode="max", min_delta=0.25), is_improvement(0.8, 0.5, mode="max", min_delta=0.25)
    (False, True)
    >>> is_improvement(0.2, 0.5, mode="min", min_delta=0.0)
    True
    """
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    if mode == "max":
        return value > best + min_delta
    return value < best - min_delta


@dataclass
class TrainState:
    """The state of a training run after ``epoch`` completed epochs.

    Attributes:
        epoch: epochs completed (the next epoch to train, 0-based).
        step: optimizer steps taken (a GGE-iter batch with two optimizer stages counts once).
        history: one metrics row per completed epoch (see :class:`~causalvl.TrainResult`).
        best_value, best_epoch: the best value of the selection metric so far and its 1-based
            epoch (``None`` before any).
        bad_epochs: epochs since the last improvement (early stopping).
        lr_factor: the learning-rate factor of the last step taken.
        model: the model's ``state_dict`` (``None`` outside a snapshot).
        objective: the objective's ``state_dict`` when it is an ``nn.Module``.
        optimizer: the optimizer's ``state_dict`` (``None`` outside a snapshot).
        scaler: the GradScaler's ``state_dict`` (float16 mixed precision only).
        rng: random generator states by name: ``data`` / ``loader`` (the trainer's sampler
            and DataLoader generators), ``torch_cpu/rank<r>``, ``torch_cuda/<i>/rank<r>``
            (global generators of every rank) and ``model/<name>`` (the wrapper's own
            generators, :meth:`~causalvl.IntervenedModel.rng_state`).
        world_size: processes of the run that wrote the state.
        config: the :class:`~causalvl.TrainConfig` of that run, as a dict.
    """

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    lr_factor: float = 1.0
    model: dict[str, torch.Tensor] | None = None
    objective: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    world_size: int = 1
    config: dict[str, Any] = field(default_factory=dict)

    # -- selection --------------------------------------------------------------------------
    def update_best(
        self, value: float, *, epoch: int, mode: Literal["max", "min"], min_delta: float
    ) -> bool:
        """Record the selection metric of 1-based ``epoch``; returns whether it improved (then
        it becomes the best and ``bad_epochs`` restarts at 0, else ``bad_epochs`` grows)."""
        if is_improvement(value, self.best_value, mode=mode, min_delta=min_delta):
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def patience_exhausted(self, patience: int | None) -> bool:
        """Whether early stopping with ``patience`` epochs has triggered."""
        return patience is not None and self.bad_epochs >= patience

    # -- checkpoint <-> state ---------------------------------------------------------------
    def to_checkpoint(self) -> Checkpoint:
        """The on-disk form (``checkpoint.json`` fields ``epoch``, ``step``, ``history``,
        ``best``, ``bad_epochs``, ``scheduler``, ``world_size``, ``config``, ``scaler``; RNG
        states as ``rng/<name>`` and objective weights as ``objective/<name>`` tensors)."""
        if self.model is None:
            raise ValueError("TrainState.to_checkpoint needs a snapshot with the model weights.")
        extra = {RNG_PREFIX + k: v for k, v in self.rng.items()}
        extra.update({OBJECTIVE_PREFIX + k: v for k, v in self.objective.items()})
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best": {
                "metric": self.config.get("select_metric"),
                "value": self.best_value,
                "epoch": self.best_epoch,
            },
            "bad_epochs": self.bad_epochs,
            "scheduler": {"name": self.config.get("schedule"), "factor": self.lr_factor},
            "world_size": self.world_size,
            "config": self.config,
            "scaler": self.scaler,
        }
        return Checkpoint(
            model=self.model, optimizer=self.optimizer, extra_tensors=extra, state=state
        )

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, directory: str | os.PathLike, *, epochs: int
    ) -> TrainState:
        """Read a checkpoint (written by this version or an earlier one) back into a state.

        Args:
            checkpoint: what :func:`~causalvl.training.load_checkpoint` returned.
            directory: where it was read from (named in errors).
            epochs: ``TrainConfig.epochs`` of the run that continues it.

        Raises:
            CheckpointError: a field is missing, malformed or out of range.
        """
        raw = validate_train_state(checkpoint.state, directory, epochs=epochs)
        best = raw.get("best") or {}
        scheduler = raw.get("scheduler")
        factor = scheduler.get("factor") if isinstance(scheduler, Mapping) else None
        extra = checkpoint.extra_tensors
        return cls(
            epoch=int(raw["epoch"]),
            step=int(raw["step"]),
            history=[dict(h) for h in raw.get("history", [])],
            best_value=best.get("value"),
            best_epoch=best.get("epoch"),
            bad_epochs=int(raw.get("bad_epochs", 0)),
            lr_factor=float(factor) if isinstance(factor, (int, float)) else 1.0,
            model=dict(checkpoint.model),
            objective=strip_prefix(extra, OBJECTIVE_PREFIX),
            optimizer=checkpoint.optimizer,
            scaler=dict(raw["scaler"]) if raw.get("scaler") else None,
            rng=strip_prefix(extra, RNG_PREFIX),
            world_size=_int_or(raw.get("world_size"), 1),
            config=dict(raw["config"]) if isinstance(raw.get("config"), Mapping) else {},
        )

    def counters(self) -> TrainState:
        """A copy without the snapshots (model, objective, optimizer, scaler, RNG states)."""
        return TrainState(
            epoch=self.epoch,
            step=self.step,
            history=[dict(h) for h in self.history],
            best_value=self.best_value,
            best_epoch=self.best_epoch,
            bad_epochs=self.bad_epochs,
            lr_factor=self.lr_factor,
            world_size=self.world_size,
            config=dict(self.config),
        )


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def strip_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose key starts with ``prefix``, keyed without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


__all__ = ["TrainState", "is_improvement", "strip_prefix"]
