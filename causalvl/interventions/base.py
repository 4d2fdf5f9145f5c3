"""The intervention protocol: what an intervention declares and what it works on.

An :class:`Intervention` is an ``nn.Module`` built from its config for one base model and
adapter. :class:`causalvl.IntervenedModel` drives it through these methods, all declared (with
defaults) on the base class, so a custom intervention overrides only what it needs:

========================  ========================================================================
``capture_roles``         roles whose pooled features the factual pass captures (``state.features``)
``install(hooks, ctx)``   edit hooks on the base model for one call, with a :class:`HookContext`
``combine(state)``        read the passes, write ``state.logits`` / ``effects`` / ... (a
                          :class:`ForwardState`)
``loss(output, batch)``   named training-loss parts
``replaces_task_loss``    the loss includes the task loss (the wrapper adds none of its own)
``stages()``              loss parts grouped by optimizer step (GGE-iter); one stage by default
``set_epoch(e, n)``       the epoch being trained, for epoch-scheduled losses
``uses_prior``            it needs a fitted ``(question types, answers)`` prior table, installed
                          with :meth:`set_prior` (``vl.set_bias_prior(prior)``)
``takes_over_generation`` ``vl.generate`` runs :meth:`generate` (counterfactual decoding)
``logits_processors()``   extra logits processors for a plain ``generate``
``image_blind_reason``    why an image-blind comparison is meaningless for it (diagnostics)
========================  ========================================================================

Implementations register themselves for their config class with :func:`implements`; the
built-in ones are found through :data:`BUILTIN_IMPLEMENTATIONS`, a table of ``"module:Class"``
strings resolved on first use (so importing one config imports no other family).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..adapters.base import ModelAdapter
from ..config import InterventionConfig
from ..errors import ConfigError, InterventionStateError, warn_at_caller
from ..hooks import HookManager
from ..outputs import InterventionOutput
from ..runtime import module_dtype_device  # noqa: F401  (its former home; kept for imports)

__all__ = [
    "BUILTIN_IMPLEMENTATIONS",
    "ForwardState",
    "HookContext",
    "Intervention",
    "implementation_for",
    "implements",
]

#: built-in intervention type key -> ``"module:Class"`` of its implementation (resolved lazily)
BUILTIN_IMPLEMENTATIONS: dict[str, str] = {
    "identity": "causalvl.interventions.identity.intervention:Identity",
    "cfvqa": "causalvl.interventions.cfvqa.intervention:Counterfactual",
    "prior_subtraction": "causalvl.interventions.prior_subtraction.intervention:PriorSubtraction",
    "rubi": "causalvl.interventions.rubi.intervention:RUBi",
    "lmh": "causalvl.interventions.lmh.intervention:LearnedMixin",
    "bias_product": "causalvl.interventions.lmh.intervention:LearnedMixin",
    "gge": "causalvl.interventions.gge.intervention:GreedyGradientEnsemble",
    "reweight": "causalvl.interventions.reweight.intervention:Reweight",
    "group_dro": "causalvl.interventions.group_dro.intervention:GroupDRO",
    "backdoor": "causalvl.interventions.backdoor.intervention:BackdoorAdjustment",
    "catt": "causalvl.interventions.catt.intervention:CausalAttention",
    "counterfactual_decoding": "causalvl.decoding.intervention:CounterfactualDecoding",
}

_IMPLEMENTATIONS: dict[type[InterventionConfig], type[Intervention]] = {}


def implements(
    config_class: type[InterventionConfig],
) -> Callable[[type[Intervention]], type[Intervention]]:
    """Class decorator that makes ``cls`` the implementation of ``config_class``.

    ``causalvl.intervene(model, config)`` builds ``cls(config, model, adapter)`` for every
    config that is an instance of ``config_class`` (or of a subclass without its own
    implementation).

    Example:
        >>> from dataclasses import dataclass
        >>> import causalvl
        >>> @dataclass(kw_only=True)
        ... class HalfConfig(causalvl.InterventionConfig):
        ...     type = "doc_half"
        >>> @causalvl.implements(HalfConfig)
        ... class Half(causalvl.Intervention):
        ...     def combine(self, state):
        ...         state.logits = state.logits / 2
        >>> net = causalvl.models.TinyVQA(vocab_size=9, num_answers=3, image_size=8)
        >>> type(causalvl.intervene(net, HalfConfig()).interventions["0_doc_half"]).__name__
        'Half'
    """
    if not (isinstance(config_class, type) and issubclass(config_class, InterventionConfig)):
        raise ConfigError(
            f"@implements expects an InterventionConfig subclass, got {config_class!r}; "
            "declare the config as @dataclass(kw_only=True) class MyConfig(InterventionConfig)."
        )

    def deco(cls: type[Intervention]) -> type[Intervention]:
        if not (isinstance(cls, type) and issubclass(cls, Intervention)):
            raise ConfigError(
                f"@implements({config_class.__name__}) decorates {cls!r}, which is not an "
                "Intervention subclass; derive it from causalvl.Intervention."
            )
        cls.config_class = config_class
        _IMPLEMENTATIONS[config_class] = cls
        return cls

    return deco


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def implementation_for(config: InterventionConfig) -> type[Intervention]:
    """The :class:`Intervention` class registered for ``config`` (by :func:`implements`, or in
    :data:`BUILTIN_IMPLEMENTATIONS` for the built-in types)."""
    for klass in type(config).__mro__:
        if klass in _IMPLEMENTATIONS:
            return _IMPLEMENTATIONS[klass]
    builtin = BUILTIN_IMPLEMENTATIONS.get(config.type)
    if builtin is not None:
        _resolve(builtin)  # importing the module runs its @implements
        for klass in type(config).__mro__:
            if klass in _IMPLEMENTATIONS:
                return _IMPLEMENTATIONS[klass]
    raise ConfigError(
        f"no implementation registered for {type(config).__name__}; decorate one with "
        "@causalvl.implements(ConfigClass) (a subclass of causalvl.Intervention)."
    )


@dataclass(eq=False)
class HookContext:
    """What the edit hooks of one :meth:`causalvl.IntervenedModel.forward` call share.

    The wrapper creates a fresh context for every call (and for every ``generate``) and
    passes it to :meth:`Intervention.install`; hooks read it when they run, and
    :meth:`Intervention.combine` finds it again as ``state.context``. Nothing survives the
    call: a second forward, or a forward that raised half-way, starts with empty storage.

    Attributes:
        inputs: the model inputs of the pass being run: the factual inputs, or those of a
            counterfactual pass while one runs.
        is_factual: whether the pass being run is the factual one.
        pass_name: ``"factual"``, ``"generate"``, or the counterfactual pass's name
            (``"counterfactual"`` unless the caller names it).
        factual_inputs: the inputs of the call (never changed).

    Example:
        >>> ctx = HookContext(inputs={"x": 1})
        >>> ctx.storage("me")["seen"] = ctx.is_factual
        >>> with ctx.counterfactual_pass({"x": 0}):
        ...     ctx.inputs, ctx.is_factual
        ({'x': 0}, False)
        >>> ctx.inputs, ctx.storage("me")
        ({'x': 1}, {'seen': True})
    """

    inputs: Mapping[str, Any]
    is_factual: bool = True
    pass_name: str = "factual"
    factual_inputs: Mapping[str, Any] | None = None
    _storage: dict[Any, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.factual_inputs is None:
            self.factual_inputs = self.inputs

    def storage(self, owner: Any) -> dict[str, Any]:
        """Scratch storage of ``owner`` (usually the intervention itself) for this call only."""
        return self._storage.setdefault(owner, {})

    @contextlib.contextmanager
    def counterfactual_pass(
        self, inputs: Mapping[str, Any], name: str = "counterfactual"
    ) -> Iterator[HookContext]:
        """Mark the block as a counterfactual pass on ``inputs``; restored on exit (also on
        errors)."""
        previous = (self.inputs, self.is_factual, self.pass_name)
        self.inputs, self.is_factual, self.pass_name = inputs, False, name
        try:
            yield self
        finally:
            self.inputs, self.is_factual, self.pass_name = previous

    # -- the former state_box dict, for install(hooks, box) written before HookContext -----
    # (an implementation whose parameter is not named ``state_box`` receives the context
    # itself and indexes it like the old dict; it works, with a warning, for one release)
    def _legacy(self) -> MutableMapping[str, Any]:
        warn_at_caller(
            "indexing the hook context like the former state_box dict is deprecated; use "
            "context.inputs / context.is_factual / context.storage(self) (see "
            "docs/howto_custom_intervention.md)."
        )
        return self.legacy_box()

    def __getitem__(self, key: str) -> Any:
        return self._legacy()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._legacy()[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._legacy()

    def get(self, key: str, default: Any = None) -> Any:
        return self._legacy().get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        return self._legacy().setdefault(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        return self._legacy().pop(key, *default)

    def legacy_box(self) -> MutableMapping[str, Any]:
        """The dict-like ``state_box`` that ``install(hooks, state_box)`` implementations
        receive: ``box["inputs"]`` is the current pass's inputs; other keys are shared by
        every such implementation for this call only."""
        return _LegacyStateBox(self)


class _LegacyStateBox(MutableMapping[str, Any]):
    """The dict of the former ``install(hooks, state_box)`` protocol, backed by a context."""

    def __init__(self, context: HookContext) -> None:
        self._context = context
        self._data = context.storage(_LegacyStateBox)

    def __getitem__(self, key: str) -> Any:
        if key == "inputs":
            return self._context.inputs
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "inputs":
            raise InterventionStateError(
                "state_box['inputs'] is set by the wrapper for each pass and cannot be "
                "replaced; keep your own values under other keys."
            )
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(["inputs", *self._data])

    def __len__(self) -> int:
        return 1 + len(self._data)

    # the HookContext API too, so an old-style subclass calling super().install(hooks, box) on
    # a built-in intervention keeps working
    @property
    def inputs(self) -> Mapping[str, Any]:
        return self._context.inputs

    @property
    def is_factual(self) -> bool:
        return self._context.is_factual

    @property
    def pass_name(self) -> str:
        return self._context.pass_name

    @property
    def factual_inputs(self) -> Mapping[str, Any] | None:
        return self._context.factual_inputs

    def storage(self, owner: Any) -> dict[str, Any]:
        return self._context.storage(owner)

    def counterfactual_pass(
        self, inputs: Mapping[str, Any], name: str = "counterfactual"
    ) -> contextlib.AbstractContextManager[HookContext]:
        return self._context.counterfactual_pass(inputs, name)


def uses_legacy_install(impl: Intervention) -> bool:
    """Whether ``impl`` implements the former ``install(hooks, state_box)`` signature."""
    return _legacy_signature(type(impl))


@functools.cache
def _legacy_signature(cls: type[Intervention]) -> bool:
    method = cls.install
    if method is Intervention.install:
        return False
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return False
    if len(params) < 3:
        return False
    second = params[2]
    annotation = second.annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return second.name == "state_box" or str(text).startswith("dict")


def takes_over_generation(impl: Intervention) -> bool:
    """Whether ``vl.generate`` hands the decoding loop to ``impl``: it says so
    (:attr:`Intervention.takes_over_generation`), or it overrides :meth:`Intervention.generate`
    without saying so (the former protocol, kept for one release)."""
    return impl.takes_over_generation or type(impl).generate is not Intervention.generate


def warn_undeclared_generate(impl: Intervention) -> None:
    if type(impl).generate is not Intervention.generate and not impl.takes_over_generation:
        warn_at_caller(
            f"{type(impl).__name__} defines generate() without takes_over_generation = True; "
            "vl.generate still hands it the decoding loop, but set the class attribute "
            "takes_over_generation = True (it will be required in the next release)."
        )


def warn_legacy_install(impl: Intervention) -> None:
    warn_at_caller(
        f"{type(impl).__name__}.install(hooks, state_box) uses the former hook protocol; "
        "declare it as install(self, hooks, context: causalvl.HookContext) and read "
        "context.inputs / context.is_factual / context.storage(self) instead. The dict-like "
        "state_box keeps working for one release."
    )


@dataclass
class ForwardState:
    """What interventions read and write in :meth:`Intervention.combine`, for one wrapped
    forward.

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
        run: ``run(inputs) -> logits`` runs the base model (edit hooks active) on other inputs,
            as a counterfactual pass (``context.is_factual`` is false while it runs).
        generator: the wrapper's random generator (shuffle / noise counterfactuals).
        context: the :class:`HookContext` of this call: what the edit hooks stored
            (``state.context.storage(self)``).
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
    context: HookContext = None  # type: ignore[assignment]  # made in __post_init__
    _cf_cache: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.context is None:
            self.context = HookContext(inputs=self.inputs)

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
    """Base class of intervention implementations: the whole protocol, with defaults.

    Args:
        config: the validated config.
        model: the base model (read to size parameters; never modified).
        adapter: the adapter bound to ``model``.

    Class attributes:
        replaces_task_loss: the intervention's :meth:`loss` includes the task loss (e.g. CF-VQA's
            fused cross-entropy), so the wrapper does not add its own.
        takes_over_generation: ``vl.generate(...)`` calls :meth:`generate` of this
            intervention instead of the base model's ``generate`` (counterfactual decoding).

    A complete worked example is in ``docs/howto_custom_intervention.md``.
    """

    config_class: ClassVar[type[InterventionConfig]]
    replaces_task_loss: ClassVar[bool] = False
    takes_over_generation: ClassVar[bool] = False

    def __init__(self, config: InterventionConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__()
        self.config = config

    # -- the forward pass ------------------------------------------------------------------
    @property
    def capture_roles(self) -> tuple[str, ...]:
        """Roles whose features this intervention reads from ``state.features``."""
        return ()

    def install(self, hooks: HookManager, context: HookContext) -> None:
        """Register edit hooks on the base model for one call (default: none).

        Hooks must be added through ``hooks`` (they are removed when the call ends, also on
        errors). A hook reads ``context.inputs`` (the inputs of the pass being run) and
        ``context.is_factual``, and keeps what :meth:`combine` needs in
        ``context.storage(self)``, never on ``self``."""

    def combine(self, state: ForwardState) -> None:
        """Update ``state`` after the factual pass (default: nothing)."""

    # -- training --------------------------------------------------------------------------
    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Named training-loss parts (default: none)."""
        return {}

    def stages(self) -> tuple[tuple[str, ...], ...]:
        """Loss parts grouped by optimizer step, in order; ``((),)`` (one stage with every
        part, the default) unless the intervention trains in several steps per batch."""
        return ((),)

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """The epoch (0-based) of ``num_epochs`` being trained (default: ignored)."""

    # -- fitted data -----------------------------------------------------------------------
    @property
    def uses_prior(self) -> bool:
        """Whether this intervention needs a ``(num_question_types, num_answers)`` answer
        prior fitted on the training data, installed with :meth:`set_prior` (default: no)."""
        return False

    def set_prior(self, prior: torch.Tensor) -> None:
        """Install the fitted prior table (only for interventions that :attr:`uses_prior`)."""
        raise InterventionStateError(
            f"{type(self).__name__} uses no answer prior (uses_prior is False); "
            "set_bias_prior applies to LMH, BiasProduct, Reweight and GGE with a distribution bias."
        )

    # -- generation ------------------------------------------------------------------------
    def generate(
        self, base_model: nn.Module, adapter: ModelAdapter, *args: Any, **kwargs: Any
    ) -> Any:
        """Generate in place of the base model's ``generate`` (only called when
        :attr:`takes_over_generation` is true)."""
        raise InterventionStateError(
            f"{type(self).__name__} does not take over generation "
            "(takes_over_generation is False); call vl.generate, which uses the base model's."
        )

    def logits_processors(
        self, base_model: nn.Module, adapter: ModelAdapter, inputs: Mapping[str, Any]
    ) -> list[Any]:
        """Logits processors to add to a plain ``vl.generate`` call (default: none)."""
        return []

    # -- diagnostics -----------------------------------------------------------------------
    @property
    def image_blind_reason(self) -> str | None:
        """Why this intervention's evaluation logits have no meaningful image-blind counterpart,
        or ``None`` (the default) when removing the image gives a prediction worth comparing.

        Diagnostics report image-blind agreement as not applicable, with this reason, instead
        of a misleading number (e.g. CF-VQA's TIE with the image removed)."""
        return None

    def extra_repr(self) -> str:
        return f"type={self.config.type!r}"
