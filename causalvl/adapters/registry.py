"""Which adapter class serves which model: a table of ``"module:Class"`` strings.

The built-in families are listed in :data:`ADAPTER_TABLE` and imported only when a model of
that family is wrapped (as peft maps a type to a class), so importing an adapter module never
registers anything as a side effect and the adapter modules import the base, never the reverse.
Classes a user registers with :func:`register_adapter` are kept in a second table and take
precedence over the built-in ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from ..errors import UnsupportedModelError

_FAMILIES = "causalvl.adapters.families"
_GENERATIVE = "causalvl.adapters.generative"
_MODELS = "causalvl.models"

#: registry key (``model.config.model_type`` or a model class name) -> ``"module:Class"``
ADAPTER_TABLE: Mapping[str, str] = MappingProxyType(
    {
        "clip": f"{_FAMILIES}:CLIPAdapter",
        "siglip": f"{_FAMILIES}:SiglipAdapter",
        "siglip2": f"{_FAMILIES}:SiglipAdapter",
        "vilt": f"{_FAMILIES}:ViltAdapter",
        "lxmert": f"{_FAMILIES}:LxmertAdapter",
        "visual_bert": f"{_FAMILIES}:VisualBertAdapter",
        "llava": f"{_GENERATIVE}:LlavaAdapter",
        "qwen2_vl": f"{_GENERATIVE}:Qwen2VLAdapter",
        "qwen2_5_vl": f"{_GENERATIVE}:Qwen2VLAdapter",
        "idefics3": f"{_GENERATIVE}:Idefics3Adapter",
        "smolvlm": f"{_GENERATIVE}:Idefics3Adapter",
        "paligemma": f"{_GENERATIVE}:PaliGemmaAdapter",
        # the reference models of causalvl.models, found by class name
        "TinyVQA": f"{_MODELS}:TinyVQAAdapter",
        "TinyContrastive": f"{_MODELS}:TinyContrastiveAdapter",
        "TinyRegionClassifier": f"{_MODELS}:TinyRegionClassifierAdapter",
        "FrozenFeatureVQA": f"{_MODELS}:FrozenFeatureVQAAdapter",
    }
)

#: classes registered with :func:`register_adapter` (they take precedence over the table)
_REGISTRY: dict[str, type] = {}
_RESOLVED: dict[str, type] = {}


def register_adapter(*families: str) -> Callable[[type], type]:
    """Class decorator registering an adapter for ``model.config.model_type`` values or model
    class names.

    Example:
        >>> @register_adapter("my_vlm")                      # doctest: +SKIP
        ... class MyAdapter(ModelAdapter): ...
    """

    def deco(cls: type) -> type:
        for fam in families:
            _REGISTRY[fam] = cls
        return cls

    return deco


def is_registered(key: str | None) -> bool:
    """Whether an adapter is registered (or built in) for ``key``."""
    return isinstance(key, str) and (key in _REGISTRY or key in ADAPTER_TABLE)


def adapter_class(key: str) -> type:
    """The adapter class registered for ``key`` (imported on first use).

    Raises:
        UnsupportedModelError: nothing is registered for ``key``.
    """
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key not in ADAPTER_TABLE:
        raise UnsupportedModelError(
            f"unknown adapter {key!r}; known families: {', '.join(known_families())}."
        )
    if key not in _RESOLVED:
        module, _, name = ADAPTER_TABLE[key].partition(":")
        _RESOLVED[key] = getattr(importlib.import_module(module), name)
    return _RESOLVED[key]


def _keys() -> list[str]:
    return sorted(set(ADAPTER_TABLE) | set(_REGISTRY))


def known_families() -> list[str]:
    """Registered family names (``model.config.model_type`` values)."""
    return [k for k in _keys() if not k[:1].isupper()]


def generative_families() -> list[str]:
    """Registered families whose adapter describes a generative model."""
    return [k for k in known_families() if _is_generative(adapter_class(k))]


def _is_generative(cls: Any) -> bool:
    spec = getattr(cls, "spec", None)
    return bool(getattr(spec, "generative", getattr(cls, "generative", False)))
