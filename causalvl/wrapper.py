"""``causalvl.intervene``: wrap any vision-language model with causal interventions."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .adapters.base import ModelAdapter, get_adapter, literal_targets, record_regex_targets
from .adapters.state import (
    adapter_for_load,
    adapter_metadata,
    restore_adapter_state,
    save_adapter_state,
)
from .config import InterventionConfig, as_config_list, atomic_destination, atomic_write_text
from .errors import (
    AlreadyIntervenedError,
    CausalVLError,
    CheckpointError,
    ConfigError,
    InputError,
    InterventionStateError,
    NoMatchingModuleError,
    UnsupportedModelError,
)
from .hooks import HookManager, did_not_run_message, get_primary
from .interventions.base import (
    ForwardState,
    HookContext,
    Intervention,
    implementation_for,
    takes_over_generation,
    uses_legacy_install,
    warn_legacy_install,
    warn_undeclared_generate,
)
from .losses import task_loss
from .outputs import InterventionOutput, ObjectiveOutput

CONFIG_NAME = "intervention_config.json"
WEIGHTS_NAME = "intervention_weights.safetensors"


class _CallableModule(nn.Module):
    """Holds a plain callable so it can be wrapped like an ``nn.Module``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **inputs: Any) -> Any:
        return self.fn(*args, **inputs)


@dataclass(frozen=True)
class _CallPlan:
    """How a forward takes its inputs: names of positional-only parameters (in order), names
    it accepts by keyword, and whether it has ``*args`` / ``**kwargs``."""

    positional_only: tuple[str, ...]
    keywords: frozenset[str]
    var_positional: bool
    var_keyword: bool

    @property
    def plain(self) -> bool:
        """Every input can go by keyword (the common case: ``model(**inputs)``)."""
        return not self.positional_only and (self.var_keyword or not self.var_positional)


_PLANS: weakref.WeakKeyDictionary[Any, _CallPlan] = weakref.WeakKeyDictionary()


def _call_plan(model: nn.Module) -> _CallPlan | None:
    """The :class:`_CallPlan` of ``model``'s forward (``None`` when it has no signature)."""
    target = model.fn if isinstance(model, _CallableModule) else getattr(model, "forward", model)
    ident = getattr(target, "__func__", target)
    try:
        cached = _PLANS.get(ident)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = inspect.Parameter
    plan = _CallPlan(
        positional_only=tuple(p.name for p in params if p.kind is kinds.POSITIONAL_ONLY),
        keywords=frozenset(
            p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        ),
        var_positional=any(p.kind is kinds.VAR_POSITIONAL for p in params),
        var_keyword=any(p.kind is kinds.VAR_KEYWORD for p in params),
    )
    with contextlib.suppress(TypeError):
        _PLANS[ident] = plan
    return plan


def _wrap_hint(model: nn.Module, keys: Iterable[str]) -> str:
    call = ", ".join(f"kw[{k!r}]" for k in keys)
    name = "fn" if isinstance(model, _CallableModule) else "model"
    return (
        f"Wrap it so that it takes keywords, e.g. causalvl.intervene(lambda **kw: {name}({call}), "
        "config, adapter=causalvl.GenericAdapter(...)), or give its forward named parameters."
    )


def _call_model(model: nn.Module, inputs: Mapping[str, Any]) -> Any:
    """Call ``model`` with ``inputs`` the way its forward takes them: by keyword, and
    positional-only parameters by position (matched by name)."""
    plan = _call_plan(model)
    if plan is None or plan.plain:
        return model(**inputs)
    rest = dict(inputs)
    args = []
    for i, name in enumerate(plan.positional_only):
        if name not in rest:
            later = [n for n in plan.positional_only[i + 1 :] if n in rest]
            if later:
                raise InputError(
                    f"{type(model).__name__}'s forward takes {list(plan.positional_only)} by "
                    f"position only; input {name!r} is missing, so {later} cannot be placed. "
                    "Pass every positional-only input."
                )
            break
        args.append(rest.pop(name))
    unplaced = [k for k in rest if k not in plan.keywords]
    if unplaced and not plan.var_keyword:
        raise InputError(
            f"{type(model).__name__}'s forward cannot take inputs {unplaced} by name (its "
            f"parameters: positional-only {list(plan.positional_only)}, by keyword "
            f"{sorted(plan.keywords)}{', *args' if plan.var_positional else ''}); causalvl "
            "passes inputs by name and cannot tell which position each one belongs to. "
            + _wrap_hint(model, inputs)
        )
    return model(*args, **rest)


class IntervenedModel(nn.Module):
    """A base model wrapped with causal interventions. Build it with :func:`intervene`.

    Calling it with the base model's keyword inputs returns an :class:`InterventionOutput`.
    Intervention parameters are submodules (``vl.interventions``), so ``.to()``,
    ``.parameters()`` and ``state_dict()`` cover them; the base model is ``vl.base_model``.
    """

    def __init__(
        self,
        base_model: nn.Module,
        configs: list[InterventionConfig],
        adapter: ModelAdapter,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.adapter = adapter
        self.interventions = nn.ModuleDict()
        with record_regex_targets() as regex_targets:
            for i, cfg in enumerate(configs):
                impl = implementation_for(cfg)(cfg, base_model, adapter)
                if uses_legacy_install(impl):
                    warn_legacy_install(impl)
                warn_undeclared_generate(impl)
                self.interventions[f"{i}_{cfg.type}"] = impl
            self._roles = self._resolve_capture_roles()
        # targets given as regular expressions are saved as the exact paths they resolved to
        self._regex_targets = dict(regex_targets)
        self._check_call_plan()
        self._disabled = False
        self._generator = torch.Generator().manual_seed(seed)
        # start in the base model's mode: wrapping an eval-mode model gives an eval-mode wrapper
        self.train(bool(getattr(base_model, "training", False)))

    @property
    def configs(self) -> list[InterventionConfig]:
        """The config each intervention runs with, in order: the frozen config it was built
        from, or the copy that records what fitting fixed (e.g. the prior's shape after
        :meth:`set_bias_prior`). :meth:`save_pretrained` writes these."""
        return [impl.config for impl in self._impls()]

    # -- plumbing -------------------------------------------------------------------------
    def _resolve_capture_roles(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for impl in self._impls():
            for role in impl.capture_roles:
                if role not in out:
                    out[role] = self.adapter.resolve(role, self.base_model)[0]
        return out

    def _check_call_plan(self) -> None:
        """Refuse, up front, a ``*args`` forward that cannot take the declared inputs."""
        plan = _call_plan(self.base_model)
        if plan is None or plan.var_keyword or not plan.var_positional:
            return
        declared = dict.fromkeys(
            (*self.adapter.vision_keys, *self.adapter.language_keys, *self.adapter.required_keys)
        )
        unplaced = [k for k in declared if k not in plan.keywords | set(plan.positional_only)]
        if unplaced:
            raise ConfigError(
                f"{type(self.unwrap()).__name__}'s forward takes *args and none of the inputs "
                f"{unplaced} by name; causalvl passes inputs by name and cannot tell which "
                "position each one belongs to. " + _wrap_hint(self.base_model, declared)
            )

    def _impls(self) -> list[Intervention]:
        return list(self.interventions.values())  # type: ignore[arg-type]

    def _gather_inputs(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if len(args) > 1 or (args and not isinstance(args[0], Mapping)):
            raise InputError(
                "pass the model inputs as keyword arguments (vl(**inputs)) or as one mapping "
                f"(vl(batch)); got {len(args)} positional argument(s)."
            )
        merged = {**(args[0] if args else {}), **kwargs}
        if not merged:
            raise InputError("no inputs given; call vl(**processor(images=..., text=...)).")
        inputs = self.adapter.model_inputs(merged)
        if not inputs:
            raise InputError(
                f"none of the given keys {sorted(merged)} is an input of "
                f"{type(self.base_model).__name__}; expected e.g. {list(self.adapter.required_keys)}."
            )
        self.adapter.validate_inputs(inputs)
        return inputs

    def _install(self, hooks: HookManager, context: HookContext) -> None:
        """Every intervention's edit hooks for the call that ``context`` belongs to."""
        for impl in self._impls():
            if uses_legacy_install(impl):
                impl.install(hooks, context.legacy_box())  # type: ignore[arg-type]
            else:
                impl.install(hooks, context)

    def _run_base(self, inputs: Mapping[str, Any]) -> tuple[Any, torch.Tensor]:
        raw = _call_model(self.base_model, inputs)
        return raw, self.adapter.logits(raw, inputs)

    # -- forward --------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> InterventionOutput:
        """Run the factual pass, any counterfactual passes, and combine them.

        Args:
            **kwargs: the base model's keyword inputs (a single mapping positional argument is
                accepted too; labels and other metadata keys are ignored).

        Returns:
            InterventionOutput: ``logits`` (the intervened prediction), ``factual_logits``,
            ``counterfactual_logits``, ``effects``, ``branch_logits``, ``features``.
        """
        inputs = self._gather_inputs(args, kwargs)
        if self._disabled or not len(self.interventions):
            raw, logits = self._run_base(inputs)
            return InterventionOutput(logits=logits, factual_logits=logits, raw_output=raw)

        raw_features: dict[str, torch.Tensor] = {}
        context = HookContext(inputs=inputs)  # one per call: nothing leaks into the next
        with HookManager() as hooks:
            self._install(hooks, context)
            capture = HookManager()
            try:
                for role, path in self._roles.items():
                    hooks_fn = _capture_hook(raw_features, role)
                    capture.add_forward_hook(self.base_model.get_submodule(path), hooks_fn)
                raw, logits = self._run_base(inputs)
            finally:
                capture.remove()
            for role, path in self._roles.items():
                if role not in raw_features:
                    raise InterventionStateError(
                        did_not_run_message(self.base_model, path, f"role {role!r}")
                    )

            def run(other: Mapping[str, Any]) -> torch.Tensor:
                with context.counterfactual_pass(other):
                    return self._run_base(other)[1]

            state = ForwardState(
                inputs=inputs,
                adapter=self.adapter,
                training=self.training,
                factual_logits=logits,
                logits=logits,
                raw_output=raw,
                run=run,
                generator=self._generator,
                raw_features=raw_features,
                features={r: self.adapter.pool(r, f, inputs) for r, f in raw_features.items()},
                context=context,
            )
            for impl in self._impls():
                impl.combine(state)
        return state.freeze()

    # -- training objective ----------------------------------------------------------------
    def objective(
        self, output: InterventionOutput, batch: Mapping[str, Any], *, stage: int | None = None
    ) -> ObjectiveOutput:
        """The training loss of the stacked interventions, with its named parts.

        The task loss on ``output.logits`` (``"task"``: cross-entropy for class-id labels,
        answer-summed BCE for soft scores) is included unless an intervention replaces it.

        Args:
            output: the wrapper's output on ``batch``.
            batch: the batch (``labels`` and the metadata the interventions read).
            stage: ``None`` sums every part. An index into :meth:`stages` sums only that
                optimizer stage's parts (the last stage takes every part not named by an
                earlier one); ``parts`` always lists every part, for logging.
        """
        parts: dict[str, torch.Tensor] = {}
        if not any(impl.replaces_task_loss for impl in self._impls()) or self._disabled:
            parts["task"] = task_loss(output.logits, batch, kind=self.adapter.kind)
        if not self._disabled:
            for name, impl in self.interventions.items():
                for part, value in impl.loss(output, batch).items():
                    key = part if part not in parts else f"{name}.{part}"
                    parts[key] = value
        if not parts:
            raise InterventionStateError("no loss parts: nothing to train.")
        selected = list(parts)
        if stage is not None:
            stages = self.stages()
            if not isinstance(stage, int) or not 0 <= stage < len(stages):
                raise InterventionStateError(
                    f"stage={stage!r} is out of range: this model has {len(stages)} optimizer "
                    f"stage(s) {stages}."
                )
            earlier = {n for s in stages[:stage] for n in s}
            if stage < len(stages) - 1:
                selected = [k for k in parts if k in stages[stage]]
            else:
                selected = [k for k in parts if k not in earlier]
            if not selected:
                raise InterventionStateError(
                    f"optimizer stage {stage} ({stages[stage]}) matches none of the loss parts "
                    f"{sorted(parts)}."
                )
        loss = torch.stack([parts[k].reshape(()) for k in selected]).sum()
        return ObjectiveOutput(loss=loss, parts={k: v.detach() for k, v in parts.items()})

    def stages(self) -> tuple[tuple[str, ...], ...]:
        """Loss parts grouped by optimizer step, in order, for interventions trained in several
        steps per batch (GGE-iter: ``(("gge_question",), ("gge_base",))``); ``((),)`` (one
        stage with every part) otherwise. A trainer takes one forward pass and optimizer step
        per stage, with ``objective(output, batch, stage=i)``."""
        if not self._disabled:
            for impl in self._impls():
                found = tuple(tuple(s) for s in impl.stages())
                if len(found) > 1:
                    return found
        return ((),)

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Tell the interventions which epoch (0-based) of ``num_epochs`` is being trained, for
        losses weighted by an epoch schedule (``GGEConfig(weight_schedule="sin")``).
        ``causalvl.training.Trainer`` calls it before every epoch; a hand-written loop calls
        it itself. Interventions without a schedule ignore it."""
        for impl in self._impls():
            impl.set_epoch(epoch, num_epochs)

    @property
    def needs_prior(self) -> bool:
        """Whether an intervention needs a fitted answer prior (:meth:`set_bias_prior`):
        LMH, BiasProduct, Reweight, GGE with a distribution bias."""
        return any(impl.uses_prior for impl in self._impls())

    def set_bias_prior(self, prior: torch.Tensor) -> None:
        """Install the ``(num_question_types, num_answers)`` answer prior (entries in
        ``[0, 1]``, e.g. from :func:`causalvl.question_type_prior`) on every intervention that
        :attr:`~causalvl.Intervention.uses_prior`. It becomes a buffer, saved by
        :meth:`save_pretrained`.

        Raises:
            ConfigError: no intervention uses a prior (:attr:`needs_prior` is false).
            InputError: the table has the wrong shape, dtype or range.
        """
        targets = [impl for impl in self._impls() if impl.uses_prior]
        if not targets:
            raise ConfigError(
                "set_bias_prior: the wrapped model has no intervention that uses a "
                "question-type prior (LMHConfig, BiasProductConfig, ReweightConfig, GGEConfig "
                "with bias='distribution' or 'both')."
            )
        for impl in targets:
            impl.set_prior(prior)

    # -- state ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def disable_interventions(self) -> Iterator[IntervenedModel]:
        """Run the plain factual forward inside the block; restored on exit, also on errors."""
        previous = self._disabled
        self._disabled = True
        try:
            yield self
        finally:
            self._disabled = previous

    def unwrap(self) -> nn.Module | Callable[..., Any]:
        """The untouched base model (or the callable that was wrapped)."""
        if isinstance(self.base_model, _CallableModule):
            return self.base_model.fn
        return self.base_model

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Generate with the base model; an intervention that
        :attr:`~causalvl.Intervention.takes_over_generation` (counterfactual decoding) runs the
        decoding loop instead, and the others may add logits processors
        (:meth:`~causalvl.Intervention.logits_processors`). The edit hooks of every
        intervention (e.g. a backdoor adjustment) are active during generation, on every
        branch, as in :meth:`forward`."""
        if not self._disabled:
            for impl in self._impls():
                if takes_over_generation(impl):
                    with self._edit_hooks(kwargs):
                        return impl.generate(self.base_model, self.adapter, *args, **kwargs)
        if not hasattr(self.base_model, "generate"):
            raise InterventionStateError(f"{type(self.base_model).__name__} cannot generate.")
        if self._disabled:
            return self.base_model.generate(*args, **kwargs)
        extra = [
            proc
            for impl in self._impls()
            for proc in impl.logits_processors(self.base_model, self.adapter, kwargs)
        ]
        if extra:
            kwargs["logits_processor"] = [*(kwargs.get("logits_processor") or []), *extra]
        with self._edit_hooks(kwargs):
            return self.base_model.generate(*args, **kwargs)

    @contextlib.contextmanager
    def _edit_hooks(self, inputs: Mapping[str, Any]) -> Iterator[None]:
        """Every intervention's edit hooks on the base model for the block; removed on exit."""
        context = HookContext(inputs=dict(inputs), pass_name="generate")
        with HookManager() as hooks:
            self._install(hooks, context)
            yield

    def _generators(self) -> dict[str, torch.Generator]:
        gens = {"wrapper": self._generator}
        for name, impl in self.interventions.items():
            for attr, value in sorted(vars(impl).items()):
                if isinstance(value, torch.Generator):
                    gens[f"{name}/{attr}"] = value
        return gens

    def rng_state(self) -> dict[str, torch.Tensor]:
        """The states of the wrapper's own random generators (the one behind ``"shuffle"`` /
        ``"noise"`` counterfactual inputs, and any generator an intervention holds), by name.

        :class:`~causalvl.Trainer` saves them in every checkpoint with the global RNG states and
        restores them on resume, so a resumed run draws the same counterfactual inputs.
        """
        return {k: g.get_state() for k, g in self._generators().items()}

    def set_rng_state(self, states: Mapping[str, torch.Tensor]) -> None:
        """Restore generator states returned by :meth:`rng_state`.

        Generators without a saved state keep theirs.

        Raises:
            CheckpointError: a name this wrapper has no generator for, or a state of another
                size or dtype (nothing is restored then).
        """
        gens = self._generators()
        unknown = sorted(set(states) - set(gens))
        if unknown:
            raise CheckpointError(
                f"RNG states {unknown} belong to no generator of this wrapper (it has "
                f"{sorted(gens)}); the state was saved for another intervention stack."
            )
        for key, value in states.items():
            live = gens[key].get_state()
            if (
                not isinstance(value, torch.Tensor)
                or value.dtype != live.dtype
                or value.shape != live.shape
            ):
                got = (
                    f"{value.dtype} {tuple(value.shape)}"
                    if isinstance(value, torch.Tensor)
                    else type(value).__name__
                )
                raise CheckpointError(
                    f"RNG state {key!r} is {got}; the generator's state is {live.dtype} "
                    f"{tuple(live.shape)}. The saved state is corrupted."
                )
        for key, value in states.items():
            gens[key].set_state(value.detach().cpu().contiguous())

    def intervention_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the interventions only (not the base model)."""
        return self.interventions.parameters()

    # -- save / load ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``intervention_config.json`` and ``intervention_weights.safetensors``.

        Only intervention parameters and buffers are written (never the base model); both
        files are written atomically (mode ``0o666`` less the umask). Module targets given as
        regular expressions are written as the exact module paths they resolved to (a saved
        file is never read as a regex), and the weights carry a SHA-256 digest that
        :func:`load` checks. A :class:`~causalvl.GenericAdapter` is described in the config
        (so :func:`load` rebuilds it), and a vision mean fitted with
        ``vl.adapter.fit_vision_mean`` goes to ``adapter_state.safetensors``. Returns the
        directory.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            k: v.detach().cpu().contiguous().clone()
            for k, v in self.interventions.state_dict().items()
        }
        metadata = {
            "format": "pt",
            "causalvl_version": __version__,
            "sha256": tensors_digest(tensors),
        }
        with atomic_destination(directory / WEIGHTS_NAME) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        save_adapter_state(self.adapter, directory)
        exact = getattr(self, "_regex_targets", {})
        saved = []
        # each intervention's own config: normalised, with what fitting recorded (the
        # prior's row count, the dictionary's names); runtime tensors are in the weights
        for impl in self.interventions.values():
            d = impl.config.to_dict()
            saved.append({k: exact.get(v, v) if isinstance(v, str) else v for k, v in d.items()})
        meta = {
            "causalvl_version": __version__,
            **adapter_metadata(self.adapter),
            "interventions": saved,
        }
        atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, directory: str | os.PathLike, *, adapter: ModelAdapter | str = "auto"
    ) -> IntervenedModel:
        """Same as :func:`causalvl.load`."""
        return load(directory, model, adapter=adapter)

    def extra_repr(self) -> str:
        return f"adapter={self.adapter.describe()}"


def _capture_hook(store: dict[str, torch.Tensor], role: str) -> Callable[..., None]:
    def _causalvl_capture_hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        store[role] = get_primary(output)

    return _causalvl_capture_hook


def intervene(
    model: nn.Module | Callable[..., Any],
    config: InterventionConfig | Iterable[InterventionConfig],
    *,
    adapter: ModelAdapter | str = "auto",
    seed: int = 0,
) -> IntervenedModel:
    """Wrap ``model`` with one or several interventions.

    Args:
        model: a Hugging Face VL model, any ``nn.Module``, or a plain callable taking keyword
            inputs (the latter two with a :class:`~causalvl.GenericAdapter`).
        config: one intervention config or a list; they are applied in order.
        adapter: ``"auto"`` (found by ``model.config.model_type``), a family name, or an
            adapter instance.
        seed: seeds the wrapper's own generator (shuffle / noise counterfactual inputs).

    Returns:
        IntervenedModel: an ``nn.Module`` whose forward returns an
        :class:`~causalvl.InterventionOutput`. The user's model is not modified.

    Raises:
        AlreadyIntervenedError: ``model`` is already wrapped.
        UnsupportedModelError: no adapter knows the model and none was given.

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
        >>> vl = causalvl.intervene(net, causalvl.IdentityConfig())
        >>> batch = {"pixel_values": torch.rand(2, 3, 8, 8),
        ...          "input_ids": torch.randint(1, 20, (2, 5))}
        >>> torch.equal(vl(**batch).logits, net(**batch))
        True
    """
    if isinstance(model, IntervenedModel):
        raise AlreadyIntervenedError(
            "this model is already wrapped by causalvl.intervene; pass all configs in one call "
            "(intervene(model, [cfg1, cfg2])) or call .unwrap() first."
        )
    configs = as_config_list(config)
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise ConfigError(
                f"cannot wrap a {type(model).__name__}; pass an nn.Module or a callable."
            )
        if isinstance(adapter, str):
            raise ConfigError(
                "a plain callable needs an explicit adapter: "
                "intervene(fn, cfg, adapter=causalvl.GenericAdapter(vision_keys=[...], language_keys=[...]))."
            )
        model = _CallableModule(model)
    bound = get_adapter(model, adapter)
    return IntervenedModel(model, configs, bound, seed=seed)


#: the largest ``intervention_config.json`` that :func:`load` reads
MAX_CONFIG_BYTES = 256 * 2**20
#: size fields (``hidden_sizes``, ``*_dim``, ``num_*``) up to this value need no evidence; larger ones
#: must be a dimension of a saved tensor of that intervention or of the model
SMALL_SIZE = 64
MAX_HIDDEN_LAYERS = 16


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order): what
    :meth:`IntervenedModel.save_pretrained` stores and :func:`load` checks to detect
    bit-flipped weights."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_saved_configs(cfg_path: Path) -> tuple[dict[str, Any], list[InterventionConfig]]:
    """Parse ``intervention_config.json`` into its object and the configs; every failure is a
    CheckpointError naming the file."""
    what = f"{cfg_path} is corrupted or not an intervention config"
    try:
        size = cfg_path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(
                f"{cfg_path} is {size} bytes; an intervention config is at most "
                f"{MAX_CONFIG_BYTES} bytes. The file is corrupted or not an intervention config."
            )
        raw = cfg_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{cfg_path} cannot be read ({exc.strerror}).") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"{what}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})."
        ) from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{what}: invalid JSON ({exc}).") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{what}: the JSON is nested too deeply.") from exc
    except ValueError as exc:  # an integer longer than Python converts
        raise CheckpointError(f"{what}: {str(exc)[:200]}.") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("interventions"), list):
        raise CheckpointError(f"{what}: expected an object with an 'interventions' list.")
    if not meta["interventions"]:
        raise CheckpointError(f"{what}: the 'interventions' list is empty.")
    configs = []
    for i, d in enumerate(meta["interventions"]):
        try:
            configs.append(InterventionConfig.from_dict(d))
        except (ConfigError, TypeError, ValueError, KeyError, RecursionError) as exc:
            msg = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
            raise CheckpointError(f"{what}: interventions[{i}]: {msg[:500]}") from exc
    return meta, configs


def _is_size_field(name: str) -> bool:
    return name == "hidden_sizes" or name.endswith("_dim") or name.startswith("num_")


def _check_sizes(
    cfg_path: Path,
    configs: list[InterventionConfig],
    shapes: Mapping[str, tuple[int, ...]],
    model: Any,
) -> None:
    """Refuse sizes read from a file that no saved tensor (and no model tensor) has, before
    anything is allocated: ``"hidden_sizes": [10**12]`` would otherwise try to build a huge layer."""
    model_dims: set[int] = set()
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            model_dims.update(int(d) for d in t.shape)
    for i, cfg in enumerate(configs):
        prefix = f"{i}_{cfg.type}."
        dims = set(model_dims)
        for key, shape in shapes.items():
            if key.startswith(prefix):
                dims.update(shape)
        unused = cfg.unallocated_fields()
        for name, value in cfg.to_dict().items():
            if not _is_size_field(name) or value is None or name in unused:
                continue
            values = value if isinstance(value, list) else [value]
            if name == "hidden_sizes" and len(values) > MAX_HIDDEN_LAYERS:
                raise CheckpointError(
                    f"{cfg_path}: interventions[{i}].{name} lists {len(values)} layers; at most "
                    f"{MAX_HIDDEN_LAYERS} are accepted from a file. The file is corrupted."
                )
            for v in values:
                big = isinstance(v, int) and not isinstance(v, bool) and v > SMALL_SIZE
                if big and v not in dims:
                    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
                    raise CheckpointError(
                        f"{cfg_path}: interventions[{i}].{name} = {shown} is not a dimension "
                        f"of any saved tensor of this intervention nor of the model "
                        f"({type(model).__name__}); refusing to allocate it. The file is "
                        "corrupted or belongs to another model."
                    )


def _read_weight_shapes(w_path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(w_path), framework="pt", device="cpu") as f:
            shapes = {k: tuple(int(d) for d in f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{w_path} is corrupted or not a safetensors file: {exc}") from exc
    return shapes, metadata


def _check_weights(
    w_path: Path, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """Refuse tensors of another kind of dtype or holding NaN; warn about a precision change."""
    for key, value in tensors.items():
        want = expected[key]
        if value.dtype != want.dtype:
            same_kind = (value.is_floating_point() and want.is_floating_point()) or (
                value.is_complex() and want.is_complex()
            )
            if not same_kind:
                raise CheckpointError(
                    f"{w_path}: tensor {key!r} is {value.dtype}, the model expects "
                    f"{want.dtype}; refusing to cast it. The file is corrupted or belongs to "
                    "another model."
                )
            warnings.warn(
                f"{w_path}: tensor {key!r} was saved as {value.dtype} and is cast to the "
                f"model's {want.dtype}.",
                UserWarning,
                stacklevel=3,
            )
        if value.is_floating_point() or value.is_complex():
            nan = int(torch.isnan(value).sum())
            if nan:
                raise CheckpointError(
                    f"{w_path}: tensor {key!r} holds {nan} NaN value(s) of {value.numel()}; the "
                    "file is corrupted (or was saved after training diverged). Save again from "
                    "a healthy model."
                )


def load(
    directory: str | os.PathLike, model: nn.Module, *, adapter: ModelAdapter | str = "auto"
) -> IntervenedModel:
    """Restore interventions saved with :meth:`IntervenedModel.save_pretrained` onto ``model``.

    The files are treated as untrusted: module targets in the config are matched as role
    names, exact paths or dotted suffixes (never compiled as regular expressions); size fields
    (``hidden_sizes``, ``*_dim``, ``num_*``) larger than 64 must be a dimension of a saved tensor of
    that intervention or of the model before anything is built; weights are checked against
    the SHA-256 digest saved with them, and tensors of another dtype kind or holding NaN are
    refused.

    Raises:
        CheckpointError: a file is missing, unreadable, corrupted or tampered with, or the
            saved interventions do not match ``model``; the message names the file and field.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (cfg_path, w_path):
        try:
            present = path.is_file()
        except (OSError, ValueError):
            present = False
        if not present:
            raise CheckpointError(
                f"{path} is missing; a saved intervention folder holds {CONFIG_NAME} and {WEIGHTS_NAME}."
            )
    meta, configs = _read_saved_configs(cfg_path)
    shapes, metadata = _read_weight_shapes(w_path)
    _check_sizes(cfg_path, configs, shapes, model)
    adapter = adapter_for_load(meta, model, adapter, cfg_path)
    try:
        with literal_targets():
            vl = intervene(model, configs, adapter=adapter)
    except (AlreadyIntervenedError, UnsupportedModelError):
        raise
    except (CausalVLError, TypeError, ValueError, OverflowError, RuntimeError, MemoryError) as exc:
        raise CheckpointError(
            f"{cfg_path}: the saved interventions cannot be built on {type(model).__name__}: {exc}"
        ) from exc
    try:
        tensors = load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{w_path} is corrupted or not a safetensors file: {exc}") from exc
    digest = metadata.get("sha256")
    if digest is not None and digest != tensors_digest(tensors):
        raise CheckpointError(
            f"{w_path}: the weights do not match the SHA-256 digest saved with them; the file "
            "was corrupted (a flipped bit, a truncated copy) or edited. Save it again."
        )
    expected = vl.interventions.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{w_path} does not match the configured interventions: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{w_path}: tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(expected[key].shape)} (saved for a different model size?)."
            )
    _check_weights(w_path, tensors, expected)
    vl.interventions.load_state_dict(tensors, strict=True)
    restore_adapter_state(vl.adapter, directory)
    return vl


@dataclass(frozen=True)
class TargetInfo:
    """One role of a model: the module path it resolves to and the module's type."""

    role: str
    path: str | None
    module_type: str | None
    error: str | None = None
    #: whether the module's forward ran on the ``inputs`` given to :func:`inspect_targets`
    #: (``None`` when no inputs were given)
    ran: bool | None = None


def inspect_targets(
    model: nn.Module | IntervenedModel,
    *,
    adapter: ModelAdapter | str = "auto",
    inputs: Mapping[str, Any] | None = None,
) -> list[TargetInfo]:
    """List the adapter's roles and the module each resolves to.

    A module can exist and still never run: some models call a submodule's parts one by one
    (BridgeTower calls ``text_model.embeddings`` and the layers, never ``text_model``). Pass
    ``inputs`` (one batch) to run the model once, without gradients, and fill ``ran`` (and
    ``error``) for each role.

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
        >>> [t.role for t in causalvl.inspect_targets(net)]
        ['fused', 'language_features', 'vision_features']
        >>> batch = {"pixel_values": torch.rand(1, 3, 8, 8), "input_ids": torch.tensor([[1, 2]])}
        >>> [t.ran for t in causalvl.inspect_targets(net, inputs=batch)]
        [True, True, True]
    """
    if isinstance(model, IntervenedModel):
        bound, base = model.adapter, model.base_model
    else:
        if not isinstance(model, nn.Module) and callable(model):
            model = _CallableModule(model)
        bound, base = get_adapter(model, adapter), model
    found: list[tuple[str, str | None, nn.Module | None, str | None]] = []
    several: dict[str, TargetInfo] = {}
    for role in sorted(bound.roles):
        try:
            path, module = bound.resolve(role, base)
            found.append((role, path, module, None))
        except NoMatchingModuleError as exc:
            many = _all_matches(base, bound.roles.get(role, role))
            if len(many) > 1:  # a role naming several blocks (CATT's attention_layers)
                kinds = sorted({type(m).__name__ for _, m in many})
                several[role] = TargetInfo(
                    role, bound.roles[role], f"{len(many)} x {'/'.join(kinds)}"
                )
            found.append((role, None, None, str(exc)))
    ran: set[str] = set()
    if inputs is not None:
        if not isinstance(inputs, Mapping):
            raise InputError(
                f"inspect_targets(inputs=...) takes one batch (a mapping), got "
                f"{type(inputs).__name__}."
            )
        model_inputs = bound.model_inputs(inputs)
        bound.validate_inputs(model_inputs)

        def _mark(path: str) -> Callable[..., None]:
            def _causalvl_ran_hook(module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
                ran.add(path)

            return _causalvl_ran_hook

        with HookManager() as hooks, torch.no_grad():
            for _, path, module, _ in found:
                if module is not None:
                    hooks.add_forward_hook(module, _mark(path))
            _call_model(base, model_inputs)
    out = []
    for role, path, module, error in found:
        if role in several:
            out.append(several[role])
            continue
        if module is None:
            out.append(TargetInfo(role, None, None, error))
            continue
        did_run = None if inputs is None else path in ran
        if did_run is False:
            error = did_not_run_message(base, path, f"role {role!r}")
        out.append(TargetInfo(role, path, type(module).__name__, error, did_run))
    return out


def _all_matches(model: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    try:
        regex = re.compile(pattern)
    except re.error:
        return []
    return [(n, m) for n, m in model.named_modules() if n and regex.fullmatch(n)]


__all__ = [
    "MAX_CONFIG_BYTES",
    "IntervenedModel",
    "TargetInfo",
    "inspect_targets",
    "intervene",
    "load",
    "tensors_digest",
]
