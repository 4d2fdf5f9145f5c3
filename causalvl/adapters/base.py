"""Model adapters: what a wrapped model's inputs mean and where its features live.

An adapter tells causalvl, for one model family,

* which input keys carry vision and which carry language (``vision_keys``, ``language_keys``);
* which module gives which feature (``roles``: role name -> module path);
* how to read the answer logits from the model's output (:meth:`ModelAdapter.logits`);
* which input transforms it supports (:meth:`ModelAdapter.supports`).

What a family *is* lives in its frozen :class:`~causalvl.adapters.spec.AdapterSpec` (the adapter
classes read their spec); how inputs are *edited* (removing the image, the text, the context)
lives in the one registry of input transforms, :mod:`causalvl.adapters.transforms`, which
:meth:`ModelAdapter.transform` and the older :meth:`ModelAdapter.counterfactual_inputs` run. The
adapter's only fitted state is the vision mean (:meth:`ModelAdapter.fit_vision_mean`), saved and
restored by :mod:`causalvl.adapters.state`.

Family adapters are found by ``model.config.model_type`` (see :func:`get_adapter`, and the table
in :mod:`causalvl.adapters.registry`); any other ``nn.Module`` or callable is described with
:class:`GenericAdapter`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import difflib
import inspect
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..batch import METADATA_KEYS
from ..errors import (
    ConfigError,
    InputError,
    InterventionStateError,
    NoMatchingModuleError,
    UnsupportedModelError,
)
from . import transforms as _transforms
from .registry import _REGISTRY, adapter_class, is_registered, known_families, register_adapter
from .spec import MIRRORED_FIELDS, AdapterSpec
from .transforms import derangement

RemoveKind = Literal["vision", "language"]
#: ``mode`` values of :meth:`ModelAdapter.counterfactual_inputs` for each ``remove``
VISION_MODES = tuple(m for r, m in _transforms.COUNTERFACTUAL_MODES if r == "vision")
LANGUAGE_MODES = tuple(m for r, m in _transforms.COUNTERFACTUAL_MODES if r == "language")


class ModelAdapter:
    """Describes one model family to causalvl. Subclass it to support a new family.

    A subclass sets ``spec`` (an :class:`~causalvl.adapters.spec.AdapterSpec`); its fields are
    also readable as attributes (``adapter.vision_keys``, ...). A subclass may instead set those
    class attributes directly, and its spec is then built from them (and its parent's spec).
    Setting one of them on an instance (``adapter.language_keys = ()``) rebuilds that
    instance's spec (``spec.replace(language_keys=())``), so the two always agree.

    Class attributes (mirrors of the spec):
        family: registry key (``model.config.model_type``).
        kind: ``"classifier"`` (logits ``(batch, num_answers)``) or ``"contrastive"``
            (logits ``(num_images, num_texts)``; the language input is a set of candidate texts).
        vision_keys / language_keys: input keys of each modality.
        required_keys: keys the forward cannot run without.
        roles: role name -> module path (relative to the model).
        vision_mask_key: an input key that masks vision out (the ``vision_attention_mask``
            transform, ``mode="mask"``), if any.
    """

    #: the frozen description of the family (see :class:`~causalvl.adapters.spec.AdapterSpec`)
    spec: ClassVar[AdapterSpec] = AdapterSpec()
    family: ClassVar[str] = ""
    kind: ClassVar[Literal["classifier", "contrastive"]] = "classifier"
    vision_keys: tuple[str, ...] = ()
    language_keys: tuple[str, ...] = ()
    required_keys: tuple[str, ...] = ()
    roles: Mapping[str, str] = {}
    vision_mask_key: str | None = None
    #: float input keys whose dtype must match the model's floating dtype
    float_keys: tuple[str, ...] = ()
    #: other inputs passed to the model unchanged (neither vision nor language)
    extra_keys: tuple[str, ...] = ()
    #: role -> ``"batch_first"`` / ``"sequence_first"`` layout of its 3-D feature
    feature_layouts: Mapping[str, str] = {}
    #: the model generates text (next-token logits ``(batch, length, vocab)``), so it has no
    #: fixed answer set for discriminative objectives (CF-VQA, RUBi, LMH, GGE)
    generative: ClassVar[bool] = False
    #: rank each input must have when present (checked by :meth:`validate_inputs`)
    input_ranks: ClassVar[Mapping[str, int]] = {
        "input_ids": 2,
        "attention_mask": 2,
        "token_type_ids": 2,
    }
    #: vision / language keys whose first dimension is not the batch (e.g. Qwen2-VL's patches)
    unbatched_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("spec")
        if isinstance(own, AdapterSpec):
            # the spec is the source; its fields are mirrored as class attributes
            for name in MIRRORED_FIELDS:
                value = getattr(own, name)
                value = dict(value) if isinstance(value, Mapping) else value
                if name in cls.__dict__ and cls.__dict__[name] != value:
                    raise ConfigError(
                        f"{cls.__name__} sets both spec and {name} = {cls.__dict__[name]!r}, "
                        f"which disagree (the spec says {value!r}); set it once, in the spec: "
                        f"spec = ....replace({name}=...)."
                    )
                setattr(cls, name, value)
        else:
            # written with class attributes: the parent's spec with those attributes applied
            parent = next(c.__dict__["spec"] for c in cls.__mro__[1:] if "spec" in c.__dict__)
            cls.spec = AdapterSpec.from_attributes(cls, base=parent)

    def __setattr__(self, name: str, value: Any) -> None:
        # a mirrored attribute set on an instance (adapter.language_keys = ()) also rebuilds
        # the instance's spec, which the input transforms read: the two cannot disagree
        object.__setattr__(self, name, value)
        if name in MIRRORED_FIELDS and (value is not None or name == "vision_mask_key"):
            spec = self.__dict__.get("spec", type(self).spec)
            value = dict(value) if isinstance(value, Mapping) else value
            object.__setattr__(self, "spec", spec.replace(**{name: value}))

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        #: fitted state: ``{vision input key: mean of shape (1, ...)}`` (see fit_vision_mean)
        self.vision_mean: dict[str, torch.Tensor] = {}

    # -- binding --------------------------------------------------------------------------
    def bind(self, model: nn.Module) -> ModelAdapter:
        """A copy of this adapter bound to ``model`` (the user's adapter object is not mutated)."""
        bound = copy.copy(self)
        for cache in ("_found_layouts", "_batch_first_flags", "_warned_undeclared"):
            bound.__dict__.pop(cache, None)  # per-model state starts afresh
        bound.vision_mean = dict(self.vision_mean)
        if any(name in bound.__dict__ for name in MIRRORED_FIELDS):
            # attributes set on the instance (e.g. in a subclass's __init__) describe it too
            bound.spec = AdapterSpec.from_attributes(bound, base=type(bound).spec)  # type: ignore[misc]
        bound.model = model
        bound._check_roles(model)
        return bound

    def _check_roles(self, model: nn.Module) -> None:
        for role, path in self.roles.items():
            if path is not None and not isinstance(path, str):
                raise ConfigError(f"role {role!r} maps to {path!r}; module paths are strings.")

    @property
    def input_keys(self) -> frozenset[str] | None:
        """Keys the model's forward accepts (``None``: accepts anything)."""
        if self.model is None:
            return None
        # inspect.signature costs more than a small model's forward: compute it once per
        # forward function (a reassigned ``model.forward`` is seen and re-inspected)
        forward = getattr(self.model, "forward", self.model)
        ident = getattr(forward, "__func__", forward)
        has_config = hasattr(self.model, "config")
        cached = self.__dict__.get("_forward_keys_cache")
        if cached is not None and cached[0] is ident and cached[1] == has_config:
            return cached[2]
        keys = _forward_keys(self.model)
        self._forward_keys_cache = (ident, has_config, keys)
        return keys

    @property
    def pad_token_id(self) -> int:
        """The pad token id: the first integer ``pad_token_id`` on the spec's
        ``pad_token_from`` paths (e.g. ``config``, ``config.text_config``), else 0."""
        for path in self.spec.pad_token_from:
            source: Any = self.model
            for part in path.split("."):
                source = getattr(source, part, None)
            pad = getattr(source, "pad_token_id", None)
            if isinstance(pad, int):
                return pad
        return 0

    @property
    def special_token_ids(self) -> frozenset[int]:
        """Token ids kept when the language part is removed (CLS/SEP/BOS/EOS/PAD)."""
        ids: set[int] = set()
        cfg = getattr(self.model, "config", None)
        for source in (cfg, getattr(cfg, "text_config", None)):
            for name in (
                "bos_token_id",
                "eos_token_id",
                "pad_token_id",
                "sep_token_id",
                "cls_token_id",
            ):
                value = getattr(source, name, None)
                if isinstance(value, int):
                    ids.add(value)
        return frozenset(ids)

    # -- inputs ---------------------------------------------------------------------------
    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``batch`` the model's forward takes (labels and metadata dropped)."""
        if not isinstance(batch, Mapping):
            raise InputError(
                f"a batch must be a mapping of input names to tensors, got {type(batch).__name__}."
            )
        keys = self.input_keys
        declared = (
            set(self.vision_keys)
            | set(self.language_keys)
            | set(self.required_keys)
            | set(self.extra_keys)
        )
        if keys is None:
            if not declared:
                return dict(batch)
            self._warn_undeclared([k for k in batch if k not in declared])
            return {k: v for k, v in batch.items() if k in declared}
        accepted = (keys | declared) - {"labels", "return_loss", "return_dict"}
        return {k: v for k, v in batch.items() if k in accepted}

    def _warn_undeclared(self, dropped: list[str]) -> None:
        """Warn (once per key) that inputs of a ``forward(**kwargs)`` model were dropped."""
        unknown = [k for k in dropped if k not in METADATA_KEYS]
        warned = self.__dict__.setdefault("_warned_undeclared", set())
        new = [k for k in unknown if k not in warned]
        if not new:
            return
        warned.update(new)
        warnings.warn(
            f"inputs {new} are not declared by the {self.family or 'generic'} adapter and are "
            "not passed to the model (its forward takes **kwargs, so causalvl cannot tell "
            "model inputs from metadata). To pass them, declare them: "
            f"GenericAdapter(..., extra_keys={new}); to silence this, drop them from the batch.",
            UserWarning,
            stacklevel=4,
        )

    def validate_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Raise :class:`InputError` for missing keys, empty batches or wrong dtypes."""
        name = self.family or "generic"
        missing = [k for k in self.required_keys if k not in inputs or inputs[k] is None]
        if missing:
            raise InputError(
                f"the {name} adapter needs inputs {list(self.required_keys)}; missing {missing}. "
                f"Got keys {sorted(inputs)}. Build inputs with the model's processor, or describe "
                "your model's inputs with causalvl.GenericAdapter(vision_keys=..., language_keys=...)."
            )
        for key, value in inputs.items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.dim() > 0 and value.shape[0] == 0:
                raise InputError(f"input {key!r} is an empty batch (shape {tuple(value.shape)}).")
            if (
                key in self.language_keys
                and key.endswith("input_ids")
                and value.is_floating_point()
            ):
                raise InputError(
                    f"input {key!r} has dtype {value.dtype}; token ids must be integers "
                    "(torch.long). Did you pass embeddings under the ids key?"
                )
            if key in self.float_keys and not value.is_floating_point():
                raise InputError(
                    f"input {key!r} has dtype {value.dtype}; it must be a floating tensor "
                    "(convert with .float() or use the model's image processor)."
                )
            rank = self.input_ranks.get(key)
            if rank is not None and value.dim() != rank:
                raise InputError(
                    f"input {key!r} has shape {tuple(value.shape)} ({value.dim()}-D); the "
                    f"{name} adapter expects a {rank}-D tensor. Build inputs with the model's "
                    "processor (one row per example), or reshape, e.g. input_ids of shape "
                    "(batch, length)."
                )
        self._check_batch_sizes(inputs)

    def _batch_groups(self) -> list[tuple[str, ...]]:
        """Groups of input keys that must share their first (batch) dimension."""
        vision = tuple(k for k in self.vision_keys if k not in self.unbatched_keys)
        language = tuple(k for k in self.language_keys if k not in self.unbatched_keys)
        if self.kind == "contrastive":  # images and candidate texts are separate batches
            return [vision, language]
        return [vision + language]

    def _check_batch_sizes(self, inputs: Mapping[str, Any]) -> None:
        for group in self._batch_groups():
            sizes = {
                k: int(v.shape[0])
                for k in group
                if isinstance(v := inputs.get(k), torch.Tensor) and v.dim() > 0
            }
            if len(set(sizes.values())) > 1:
                raise InputError(
                    f"inputs disagree on the batch size: {sizes} (first dimension of each). "
                    "Every vision and language input needs one row per example; repeat the "
                    "image (e.g. pixel_values.expand(batch, ...)) or the text so they match."
                    + (
                        " (A model that scores every image against a set of candidate texts, "
                        "logits (num_images, num_texts), is GenericAdapter(kind='contrastive').)"
                        if isinstance(self, GenericAdapter) and self.kind != "contrastive"
                        else ""
                    )
                )
        ids = next(
            (
                k
                for k in self.language_keys
                if k.endswith("input_ids") and isinstance(inputs.get(k), torch.Tensor)
            ),
            None,
        )
        if ids is not None:
            shape = tuple(inputs[ids].shape)
            for k in ("attention_mask", "token_type_ids"):
                v = inputs.get(k)
                if (
                    k in self.language_keys
                    and isinstance(v, torch.Tensor)
                    and tuple(v.shape) != shape
                ):
                    raise InputError(
                        f"input {k!r} has shape {tuple(v.shape)} but {ids!r} has {shape}; a "
                        "per-token input needs one entry per token."
                    )

    def batch_size(self, inputs: Mapping[str, Any]) -> int:
        for key in (*self.vision_keys, *self.language_keys, *inputs):
            value = inputs.get(key)
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return int(value.shape[0])
        raise InputError(f"no batched tensor among inputs {sorted(inputs)}.")

    # -- outputs --------------------------------------------------------------------------
    def logits(self, output: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The answer logits in the model's output. Default: a tensor output, or its
        ``logits`` field."""
        field = self.spec.logits_field
        if field is not None:
            value = _field(output, field)
            if isinstance(value, torch.Tensor):
                return value
            raise UnsupportedModelError(
                f"the {self.family or 'generic'} adapter reads the logits from the output field "
                f"{field!r}, and a {type(output).__name__} output has none; pass "
                "GenericAdapter(logits=lambda out: ...) to say where they are."
            )
        if isinstance(output, torch.Tensor):
            return output
        for name in ("logits", "logits_per_image", "question_answering_score"):
            value = _field(output, name)
            if isinstance(value, torch.Tensor):
                return value
        raise UnsupportedModelError(
            f"cannot find logits in a model output of type {type(output).__name__}; pass "
            "GenericAdapter(logits=lambda out: ...) to say where they are."
        )

    def pool(self, role: str, feature: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """Reduce a captured feature to one vector per example, ``(batch, dim)``.

        ``(B, D)`` is kept; ``(B, N, D)`` is averaged over N (masked by the attention mask of the
        role's modality when the lengths agree); ``(B, D, H, W)`` is averaged over H and W.
        A sequence-first ``(N, B, D)`` feature is transposed first (see :meth:`feature_layout`).
        """
        if feature.dim() == 2:
            return feature
        if feature.dim() == 3:
            if self.feature_layout(role, feature, inputs) == "sequence_first":
                feature = feature.transpose(0, 1)
            mask = self._pool_mask(role, inputs, feature.shape[1])
            if mask is not None:
                mask = mask.to(feature.dtype).unsqueeze(-1)
                return (feature * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            return feature.mean(1)
        if feature.dim() == 4:
            return feature.mean(dim=(2, 3))
        raise InputError(f"cannot pool role {role!r} feature of shape {tuple(feature.shape)}.")

    def feature_layout(
        self, role: str, feature: torch.Tensor, inputs: Mapping[str, Any]
    ) -> Literal["batch_first", "sequence_first"]:
        """Whether a 3-D feature of ``role`` is ``(B, N, D)`` or ``(N, B, D)``.

        In order: the adapter's ``feature_layouts[role]``; the role module's own ``batch_first``
        flag (``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN``, ``nn.MultiheadAttention``,
        ``nn.Transformer*``); ``"batch_first"`` for the built-in families (Hugging Face models
        are batch-first); for a generic adapter, the dimension that equals the batch size. When
        both do (sequence length == batch size) the layout found on an earlier call is reused;
        with none, :class:`InputError` asks for ``GenericAdapter(feature_layouts=...)``.
        """
        declared = self.feature_layouts.get(role)
        if declared is not None:
            return declared  # type: ignore[return-value]
        flag = self._module_batch_first(role)
        if flag is not None:
            return "batch_first" if flag else "sequence_first"
        if not isinstance(self, GenericAdapter):
            return "batch_first"
        batch = self._modality_batch(role, inputs)
        known = self.__dict__.setdefault("_found_layouts", {})
        if batch is None:
            return known.get(role, "batch_first")
        first, second = int(feature.shape[0]) == batch, int(feature.shape[1]) == batch
        if first and not second:
            known[role] = "batch_first"
        elif second and not first:
            known[role] = "sequence_first"
        elif first and second and batch > 1 and role not in known:
            raise InputError(
                f"role {role!r} gives a feature of shape {tuple(feature.shape)}: its sequence "
                f"length equals the batch size ({batch}), so causalvl cannot tell (batch, "
                "length, dim) from (length, batch, dim), and guessing wrong would mix examples. "
                "Declare it: GenericAdapter(..., feature_layouts={"
                f"{role!r}: 'batch_first'}}) or 'sequence_first'."
            )
        return known.get(role, "batch_first")

    def _module_batch_first(self, role: str) -> bool | None:
        cache = self.__dict__.setdefault("_batch_first_flags", {})
        if role not in cache:
            flag = None
            if self.model is not None:
                try:
                    module = self.resolve(role)[1]
                except (NoMatchingModuleError, ConfigError):
                    module = None
                # nn.RNN / nn.MultiheadAttention / nn.Transformer carry the flag themselves,
                # nn.TransformerEncoderLayer on its self_attn, nn.TransformerEncoder on its layers
                layers = getattr(module, "layers", None)
                first = layers[0] if isinstance(layers, nn.ModuleList) and len(layers) else None
                for candidate in (module, first):
                    for owner in (candidate, getattr(candidate, "self_attn", None)):
                        value = getattr(owner, "batch_first", None)
                        if flag is None and isinstance(value, bool):
                            flag = value
            cache[role] = flag
        return cache[role]

    def _modality_batch(self, role: str, inputs: Mapping[str, Any]) -> int | None:
        keys: tuple[str, ...] = ()
        if self.kind == "contrastive":  # images and texts are separate batches
            keys = self.language_keys if role == "language_features" else self.vision_keys
        for key in (*keys, *self.vision_keys, *self.language_keys):
            value = inputs.get(key)
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return int(value.shape[0])
        return None

    def _pool_mask(self, role: str, inputs: Mapping[str, Any], length: int) -> torch.Tensor | None:
        key = self.spec.pool_mask_key(role)
        mask = inputs.get(key) if key else None
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] == length:
            return mask
        return None

    # -- input transforms -----------------------------------------------------------------
    def supports(self, transform: str) -> bool:
        """Whether this (bound) adapter can run the input transform named ``transform``.

        Raises:
            ConfigError: unknown transform name (the message suggests the closest names).

        Example:
            >>> import causalvl
            >>> from causalvl.models import TinyVQA
            >>> vl = causalvl.intervene(TinyVQA(num_answers=3, vocab_size=10), causalvl.IdentityConfig())
            >>> vl.adapter.supports("vision_shuffle"), vl.adapter.supports("vision_attention_mask")
            (True, False)
        """
        return _transforms.get_transform(transform).supported(self)

    def supported_transforms(self) -> list[str]:
        """The names of the input transforms this adapter can run."""
        return [n for n in _transforms.transform_names() if self.supports(n)]

    def transform(
        self,
        name: str,
        inputs: Mapping[str, Any],
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Run the input transform ``name`` (see :mod:`causalvl.adapters.transforms`) on
        ``inputs``; a new dict, ``inputs`` is not modified.

        Raises:
            ConfigError: unknown transform, unknown option, or a transform this adapter does not
                support (the message says why).
            InterventionStateError: the transform needs a fitted vision mean and none was fitted.
        """
        t = _transforms.get_transform(name)
        reason = t.unsupported_reason(self)
        if reason is not None:
            missing_state = t.needs_fitted_state and not self.vision_mean
            raise (InterventionStateError if missing_state else ConfigError)(
                f"{reason}; transforms the {self.family or 'generic'} adapter supports: "
                f"{', '.join(self.supported_transforms())}."
            )
        return t(self, inputs, generator=generator, **options)

    def counterfactual_inputs(
        self,
        inputs: Mapping[str, Any],
        *,
        remove: RemoveKind = "vision",
        mode: str = "zeros",
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Inputs with the vision (or language) part replaced by a null value.

        The ``(remove, mode)`` spelling of the input transforms
        (:data:`causalvl.adapters.transforms.COUNTERFACTUAL_MODES`); :meth:`transform` takes
        their names. Vision modes: ``"zeros"`` (``vision_zeros``); ``"mean"`` (``vision_mean``:
        the mean fitted with :meth:`fit_vision_mean`, else the batch mean); ``"shuffle"``
        (``vision_shuffle``: another example's image, a derangement within the batch);
        ``"noise"`` (``vision_noise_image``: Gaussian noise with the batch's mean and std);
        ``"mask"`` (``vision_attention_mask``: the model's own vision mask, where it has one).
        Language modes: ``"zeros"`` (``language_pad``: content tokens replaced by the pad token,
        special tokens kept), ``"mask"`` (``language_attention_mask``: content tokens masked out
        of attention), ``"shuffle"`` (``language_shuffle``: another example's text). Only the
        removed part differs from ``inputs``; nothing in ``inputs`` is modified.
        """
        if remove == "vision":
            if mode not in VISION_MODES:
                raise ConfigError(
                    f"vision removal mode {mode!r} unknown; choose one of {VISION_MODES}."
                )
        elif remove == "language":
            if mode not in LANGUAGE_MODES:
                raise ConfigError(
                    f"language removal mode {mode!r} unknown; choose one of {LANGUAGE_MODES}."
                )
        else:
            raise ConfigError(f"remove={remove!r} unknown; choose 'vision' or 'language'.")
        name = _transforms.COUNTERFACTUAL_MODES[(remove, mode)]
        return _transforms.get_transform(name)(self, inputs, generator=generator)

    @property
    def _custom_vision_mask(self) -> bool:
        """Whether a subclass overrides :meth:`_mask_vision` (so it can mask without a key)."""
        return type(self)._mask_vision is not ModelAdapter._mask_vision

    def _mask_vision(self, inputs: dict[str, Any], keys: list[str]) -> dict[str, Any]:
        """Mask vision out of ``inputs`` (a copy, edited in place): the hook of the
        ``vision_attention_mask`` transform (see :func:`causalvl.adapters.transforms.mask_vision`)."""
        return _transforms.mask_vision(self, inputs, keys)

    def _present(self, inputs: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
        return [k for k in keys if isinstance(inputs.get(k), torch.Tensor)]

    # -- fitted state (saved by causalvl.adapters.state) ----------------------------------
    def fit_vision_mean(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Fit the dataset mean of each floating vision input (used by mode ``"mean"``).

        Returns and stores ``{key: mean of shape (1, *feature_shape)}``.
        """
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in batches:
            keys = self._present(batch, self.vision_keys)
            n = 0
            for k in keys:
                x = batch[k]
                if x.is_floating_point():
                    sums[k] = sums.get(k, 0) + x.detach().double().sum(0, keepdim=True)
                    n = int(x.shape[0])
            count += n
        if count == 0:
            raise InputError("fit_vision_mean saw no floating vision inputs.")
        self.vision_mean = {k: (v / count).float() for k, v in sums.items()}
        return dict(self.vision_mean)

    def language_cache_key(self, inputs: Mapping[str, Any]) -> list[bytes]:
        """One hashable key per example for the language part (used by prior caches)."""
        keys = self._present(inputs, self.language_keys)
        if not keys:
            raise InputError("no language input to key a cache by.")
        n = int(inputs[keys[0]].shape[0])
        rows = [inputs[k].detach().cpu().reshape(n, -1) for k in sorted(keys)]
        return [b"|".join(r[i].numpy().tobytes() for r in rows) for i in range(n)]

    # -- modules --------------------------------------------------------------------------
    def resolve(self, target: str, model: nn.Module | None = None) -> tuple[str, nn.Module]:
        """Resolve a role name, an exact module path, a dotted suffix, or a full-match regex to
        ``(path, module)``. Raises :class:`NoMatchingModuleError` listing close names."""
        model = model if model is not None else self.model
        if model is None:
            raise ConfigError("adapter is not bound to a model; call adapter.bind(model) first.")
        return resolve_module(model, target, self.roles, self.family or "generic")

    def describe(self) -> str:
        return f"{type(self).__name__}(family={self.family or 'generic'!r}, kind={self.kind!r})"


class GenericAdapter(ModelAdapter):
    """Describe any ``nn.Module`` (or callable) to causalvl.

    Args:
        vision_keys: input keys that carry the image (tensors ``(batch, ...)``).
        language_keys: input keys that carry the text.
        logits: ``callable(output) -> Tensor`` picking the answer logits from the model output
            (default: the output itself if it is a tensor, else its ``logits`` field).
        roles: role name -> module path, e.g. ``{"vision_features": "image_encoder",
            "language_features": "text_encoder", "fused": "fusion"}``.
        kind: ``"classifier"`` or ``"contrastive"``.
        vision_mask_key: an input key masking vision out, if the model has one.
        pad_token_id: token id used when language is removed (``"zeros"`` mode).
        special_token_ids: token ids kept when language is removed.
        required_keys: inputs the model cannot run without (default: all vision and language
            keys).
        extra_keys: other inputs passed to the model unchanged (neither vision nor language,
            e.g. a temperature or a task id). A model whose forward takes ``**kwargs`` gets only
            the declared keys; an undeclared one is dropped with a warning (once per key).
        feature_layouts: role -> ``"batch_first"`` (``(B, N, D)``) or ``"sequence_first"``
            (``(N, B, D)``) for roles whose module gives a 3-D feature. Needed only when it
            cannot be found: a module with a ``batch_first`` flag (``nn.GRU``,
            ``nn.TransformerEncoder``, ...) tells it, and otherwise the dimension equal to the
            batch size does, unless the sequence length equals the batch size.

    Example:
        >>> import torch, causalvl
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.img = torch.nn.Linear(4, 8)
        ...         self.txt = torch.nn.Embedding(10, 8)
        ...         self.head = torch.nn.Linear(8, 3)
        ...     def forward(self, image, tokens):
        ...         return self.head(self.img(image) * self.txt(tokens).mean(1))
        >>> adapter = causalvl.GenericAdapter(vision_keys=["image"], language_keys=["tokens"],
        ...     roles={"vision_features": "img", "language_features": "txt", "fused": "head"})
        >>> vl = causalvl.intervene(Net(), causalvl.IdentityConfig(), adapter=adapter)
        >>> vl(image=torch.randn(2, 4), tokens=torch.randint(0, 10, (2, 5))).logits.shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        *,
        vision_keys: Iterable[str],
        language_keys: Iterable[str],
        logits: Callable[[Any], torch.Tensor] | None = None,
        roles: Mapping[str, str] | None = None,
        kind: Literal["classifier", "contrastive"] = "classifier",
        vision_mask_key: str | None = None,
        pad_token_id: int = 0,
        special_token_ids: Iterable[int] = (),
        required_keys: Iterable[str] | None = None,
        extra_keys: Iterable[str] = (),
        feature_layouts: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.vision_keys = _key_tuple("vision_keys", vision_keys)
        self.language_keys = _key_tuple("language_keys", language_keys)
        if not self.vision_keys and not self.language_keys:
            raise ConfigError("GenericAdapter needs at least one vision key or language key.")
        overlap = set(self.vision_keys) & set(self.language_keys)
        if overlap:
            raise ConfigError(f"keys {sorted(overlap)} are listed as both vision and language.")
        self.extra_keys = _key_tuple("extra_keys", extra_keys)
        self.feature_layouts = dict(feature_layouts or {})
        for role, layout in self.feature_layouts.items():
            if layout not in ("batch_first", "sequence_first"):
                raise ConfigError(
                    f"feature_layouts[{role!r}] = {layout!r}; choose 'batch_first' or "
                    "'sequence_first'."
                )
        both = set(self.extra_keys) & (set(self.vision_keys) | set(self.language_keys))
        if both:
            raise ConfigError(
                f"keys {sorted(both)} are listed as extra_keys and as vision or language keys; "
                "list each key once."
            )
        if logits is not None and not callable(logits):
            raise ConfigError(f"GenericAdapter(logits=...) must be callable, got {logits!r}.")
        if kind not in ("classifier", "contrastive"):
            raise ConfigError(
                f"GenericAdapter(kind={kind!r}); choose 'classifier' or 'contrastive'."
            )
        self.kind = kind  # type: ignore[misc]
        self._logits_fn = logits
        self.roles = dict(roles or {})
        self.vision_mask_key = vision_mask_key
        self._pad = int(pad_token_id)
        self._special = frozenset(int(t) for t in special_token_ids)
        self.required_keys = (
            _key_tuple("required_keys", required_keys)
            if required_keys is not None
            else self.vision_keys + self.language_keys
        )
        self.spec = AdapterSpec.from_attributes(self, base=type(self).spec)  # type: ignore[misc]

    @property
    def pad_token_id(self) -> int:
        return self._pad

    @property
    def special_token_ids(self) -> frozenset[int]:
        return self._special

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as JSON-ready values (what ``save_pretrained`` stores so
        that ``causalvl.load`` can rebuild the adapter). A ``logits`` callable cannot be
        stored: ``"custom_logits"`` records that one was given."""
        return {
            "class": type(self).__name__,
            "vision_keys": list(self.vision_keys),
            "language_keys": list(self.language_keys),
            "roles": dict(self.roles),
            "kind": self.kind,
            "vision_mask_key": self.vision_mask_key,
            "pad_token_id": self._pad,
            "special_token_ids": sorted(self._special),
            "required_keys": list(self.required_keys),
            "extra_keys": list(self.extra_keys),
            "feature_layouts": dict(self.feature_layouts),
            "custom_logits": self._logits_fn is not None,
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> GenericAdapter:
        """Rebuild an adapter saved with :meth:`to_dict` (without a ``logits`` callable)."""
        names = (
            "vision_keys",
            "language_keys",
            "roles",
            "kind",
            "vision_mask_key",
            "pad_token_id",
            "special_token_ids",
            "required_keys",
            "extra_keys",
            "feature_layouts",
        )
        return cls(**{k: spec[k] for k in names if k in spec})

    def logits(self, output: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        if self._logits_fn is not None:
            value = self._logits_fn(output)
            if not isinstance(value, torch.Tensor):
                raise UnsupportedModelError(
                    f"GenericAdapter's logits callable returned {type(value).__name__}, not a tensor."
                )
            return value
        return super().logits(output, inputs)


# -- registry: the table and register_adapter live in causalvl.adapters.registry ------------
def get_adapter(model: nn.Module, adapter: ModelAdapter | str = "auto") -> ModelAdapter:
    """The adapter bound to ``model``: an adapter instance, a family name, or ``"auto"``
    (found by ``model.config.model_type``, then by class name)."""
    if isinstance(adapter, ModelAdapter):
        return adapter.bind(model)
    if not isinstance(adapter, str):
        raise ConfigError(
            f"adapter must be 'auto', a family name or a ModelAdapter, got {type(adapter).__name__}."
        )
    if adapter != "auto":
        return adapter_class(adapter)().bind(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for key in (model_type, type(model).__name__):
        if is_registered(key):
            return adapter_class(key)().bind(model)
    raise UnsupportedModelError(
        f"no adapter for {type(model).__name__} (model_type={model_type!r}). Known families: "
        f"{', '.join(known_families())}. Describe your model with the generic adapter, e.g. "
        "causalvl.intervene(model, cfg, adapter=causalvl.GenericAdapter(vision_keys=['pixel_values'], "
        "language_keys=['input_ids'], roles={'vision_features': 'vision_encoder', "
        "'language_features': 'text_encoder'}))."
    )


# Targets read from a file (``causalvl.load``) are matched literally: a regular expression from an
# untrusted file could backtrack for hours (``(.*)*Z`` over every module name).
_LITERAL_TARGETS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "causalvl_literal_targets", default=False
)
_REGEX_RESOLVED: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "causalvl_regex_resolved", default=None
)
_REGEX_CHARS = frozenset("\\^$*+?()[]{}|")


@contextlib.contextmanager
def literal_targets() -> Iterator[None]:
    """Inside the block, module targets that are not role names are matched only as exact
    paths or dotted suffixes, never compiled as regular expressions (used for targets read from
    a saved file; a role's own path, from the adapter in code, may still be a regex)."""
    token = _LITERAL_TARGETS.set(True)
    try:
        yield
    finally:
        _LITERAL_TARGETS.reset(token)


@contextlib.contextmanager
def record_regex_targets() -> Iterator[dict[str, str]]:
    """Inside the block, every target resolved as a regular expression is recorded in the
    yielded dict as ``{target: resolved exact path}`` (so it can be saved as the exact path)."""
    found: dict[str, str] = {}
    token = _REGEX_RESOLVED.set(found)
    try:
        yield found
    finally:
        _REGEX_RESOLVED.reset(token)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_module(
    model: nn.Module, target: str, roles: Mapping[str, str], family: str
) -> tuple[str, nn.Module]:
    """Resolve ``target`` (role name, exact path, dotted suffix, or full-match regex).

    Inside :func:`literal_targets` (targets read from a file) a target that is not a role name
    is never compiled as a regular expression."""
    if not isinstance(target, str) or not target:
        raise ConfigError(f"module target must be a non-empty string, got {target!r}.")
    names = dict(model.named_modules())
    path = roles.get(target, target)
    if not isinstance(path, str) or not path:
        raise NoMatchingModuleError(
            f"role {target!r} maps to {path!r} in adapter {family!r}: this model has no such "
            "module; pass an exact module path instead."
        )
    if path in names:
        return path, names[path]
    suffix = [n for n in names if n.endswith("." + path)]
    if len(suffix) == 1:
        return suffix[0], names[suffix[0]]
    literal = _LITERAL_TARGETS.get() and target not in roles
    regex: list[str] = []
    if not literal:
        try:
            pattern = re.compile(path)
            regex = [n for n in names if n and pattern.fullmatch(n)]
        except re.error:
            regex = []
    if len(regex) == 1:
        recorder = _REGEX_RESOLVED.get()
        if recorder is not None and target not in roles:
            recorder[target] = regex[0]
        return regex[0], names[regex[0]]
    shown = _short(repr(target))
    if len(suffix) > 1 or len(regex) > 1:
        many = suffix if len(suffix) > 1 else regex
        raise NoMatchingModuleError(
            f"target {shown} matches {len(many)} modules of {type(model).__name__} "
            f"({', '.join(many[:5])}, ...); pass an exact path."
        )
    # difflib is quadratic in the length of the strings: only for names of a sane length
    candidates = [n for n in names if n]
    close = difflib.get_close_matches(path, candidates, n=5, cutoff=0.3) if len(path) <= 200 else []
    hint = "Pass a role name, an exact path, or a regex."
    if literal:
        hint = (
            "Targets read from a saved file are matched as role names, exact paths or dotted "
            "suffixes, never as regular expressions"
            + (" (this one looks like a regex)" if _REGEX_CHARS & set(path) else "")
            + "; save with a causalvl version that writes the resolved path, or build the "
            "intervention in code with causalvl.intervene."
        )
    raise NoMatchingModuleError(
        f"target {shown} matched no module in {type(model).__name__}. Known roles for "
        f"adapter {family!r}: {', '.join(sorted(roles)) or '(none)'}. Closest module names: "
        f"{', '.join(close) or '(none)'}. {hint}"
    )


def _forward_keys(model: nn.Module) -> frozenset[str] | None:
    forward = getattr(model, "forward", model)
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and not hasattr(
        model, "config"
    ):
        return None
    return frozenset(
        n
        for n, p in params.items()
        if p.kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
    )


def _field(output: Any, name: str) -> Any:
    if isinstance(output, Mapping) or hasattr(output, "keys"):
        try:
            return output[name] if name in output.keys() else None  # noqa: SIM118
        except (KeyError, TypeError):
            return None
    return getattr(output, name, None)


def _key_tuple(name: str, keys: Iterable[str] | None) -> tuple[str, ...]:
    if isinstance(keys, str):
        raise ConfigError(f"{name} must be a list of input names, got the string {keys!r}.")
    out = tuple(keys or ())
    for k in out:
        if not isinstance(k, str) or not k:
            raise ConfigError(f"{name} holds {k!r}; input names are non-empty strings.")
    return out


__all__ = [
    "LANGUAGE_MODES",
    "VISION_MODES",
    "_REGISTRY",
    "AdapterSpec",
    "GenericAdapter",
    "ModelAdapter",
    "derangement",
    "get_adapter",
    "known_families",
    "literal_targets",
    "record_regex_targets",
    "register_adapter",
    "resolve_module",
]
