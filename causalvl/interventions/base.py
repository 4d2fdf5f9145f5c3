"""The intervention base class and the per-forward state interventions work on.

An :class:`Intervention` is an ``nn.Module`` built from its config for one base model and
adapter. During :meth:`causalvl.IntervenedModel.forward` it may

* install edit hooks on the factual pass (:meth:`Intervention.install`), e.g. the backdoor
  adjustment replacing a feature by its deconfounded value;
* ask for role features to be captured (``capture_roles``);
* combine the factual pass with counterfactual passes or branch heads
  (:meth:`Intervention.combine`), writing ``state.logits``, ``state.effects``, ...;
* define its training loss (:meth:`Intervention.loss`).

Implementations register themselves for their config class with :func:`implements`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..adapters.base import ModelAdapter
from ..config import InterventionConfig
from ..errors import ConfigError
from ..hooks import HookManager
from ..outputs import InterventionOutput

_IMPLEMENTATIONS: dict[type[InterventionConfig], type[Intervention]] = {}


def implements(
    config_class: type[InterventionConfig],
) -> Callable[[type[Intervention]], type[Intervention]]:
    """Class decorator: ``@implements(MyConfig) class MyIntervention(Intervention): ...``."""

    def deco(cls: type[Intervention]) -> type[Intervention]:
        cls.config_class = config_class
        _IMPLEMENTATIONS[config_class] = cls
        return cls

    return deco


def implementation_for(config: InterventionConfig) -> type[Intervention]:
    from . import load_builtin

    load_builtin()
    for klass in type(config).__mro__:
        if klass in _IMPLEMENTATIONS:
            return _IMPLEMENTATIONS[klass]
    raise ConfigError(
        f"no implementation registered for {type(config).__name__}; decorate one with "
        "@causalvl.interventions.base.implements(ConfigClass)."
    )


@dataclass
class ForwardState:
    """What interventions read and write during one wrapped forward.

    Attributes:
        inputs: the model inputs of this call (never modified).
        adapter: the bound adapter.
        training: whether the wrapper is in training mode.
        factual_logits: the base model's logits on ``inputs``.
        logits: the current prediction; interventions overwrite it in order.
        raw_output: the base model's own output object of the factual pass.
        features: pooled role features ``(batch, dim)`` captured in the factual pass.
        raw_features: the same features before pooling.
        counterfactual_logits / effects / branch_logits: as in :class:`InterventionOutput`.
        run: ``run(inputs) -> logits`` runs the base model (edit hooks active) on other inputs.
        generator: the wrapper's random generator (shuffle / noise counterfactuals).
    """

    inputs: Mapping[str, Any]
    adapter: ModelAdapter
    training: bool
    factual_logits: torch.Tensor
    logits: torch.Tensor
    raw_output: Any
    run: Callable[[Mapping[str, Any]], torch.Tensor]
    generator: torch.Generator
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    raw_features: dict[str, torch.Tensor] = field(default_factory=dict)
    counterfactual_logits: torch.Tensor | None = None
    effects: dict[str, torch.Tensor] = field(default_factory=dict)
    branch_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    _cf_cache: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)

    def counterfactual(self, remove: str = "vision", mode: str = "zeros") -> torch.Tensor:
        """Logits of the base model on inputs with ``remove`` replaced (memoised per call)."""
        key = (remove, mode)
        if key not in self._cf_cache:
            cf_inputs = self.adapter.counterfactual_inputs(
                self.inputs, remove=remove, mode=mode, generator=self.generator
            )
            self._cf_cache[key] = self.run(cf_inputs)
        return self._cf_cache[key]

    def feature(self, role: str) -> torch.Tensor:
        """The pooled feature of ``role``; raises if the role was not captured."""
        if role not in self.features:
            raise ConfigError(
                f"role {role!r} was not captured; captured roles: {sorted(self.features)}. "
                "List it in the intervention's capture_roles, or map it in the adapter's roles."
            )
        return self.features[role]

    def freeze(self) -> InterventionOutput:
        return InterventionOutput(
            logits=self.logits,
            factual_logits=self.factual_logits,
            counterfactual_logits=self.counterfactual_logits,
            effects=self.effects,
            branch_logits=self.branch_logits,
            features=self.features,
            raw_output=self.raw_output,
        )


class Intervention(nn.Module):
    """Base class of intervention implementations.

    Args:
        config: the validated config.
        model: the base model (read to size parameters; never modified).
        adapter: the adapter bound to ``model``.

    Class attributes:
        replaces_task_loss: the intervention's :meth:`loss` includes the task loss (e.g. CF-VQA's
            fused cross-entropy), so the wrapper does not add its own.
    """

    config_class: ClassVar[type[InterventionConfig]]
    replaces_task_loss: ClassVar[bool] = False

    def __init__(self, config: InterventionConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__()
        self.config = config

    @property
    def capture_roles(self) -> tuple[str, ...]:
        """Roles whose features this intervention reads from ``state.features``."""
        return ()

    def install(self, hooks: HookManager, state_box: dict[str, Any]) -> None:
        """Register edit hooks on the base model for this forward (default: none).

        ``state_box`` is a dict shared by every hook of the call (``state_box["inputs"]`` holds
        the model inputs); hooks must be added through ``hooks`` so they are removed."""

    @property
    def image_blind_reason(self) -> str | None:
        """Why this intervention's evaluation logits have no meaningful image-blind counterpart,
        or ``None`` (the default) when removing the image gives a prediction worth comparing.

        Diagnostics report image-blind agreement as not applicable, with this reason, instead
        of a misleading number (e.g. CF-VQA's TIE with the image removed)."""
        return None

    def combine(self, state: ForwardState) -> None:
        """Update ``state`` after the factual pass (default: nothing)."""

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Named training-loss parts (default: none)."""
        return {}

    def extra_repr(self) -> str:
        return f"type={self.config.type!r}"
