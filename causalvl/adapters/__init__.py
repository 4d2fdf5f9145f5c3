"""Model adapters: one per model family, plus :class:`GenericAdapter` for anything else.

An adapter describes a model (its frozen :class:`AdapterSpec`); the named input transforms of
:mod:`causalvl.adapters.transforms` act on its inputs (:meth:`ModelAdapter.transform`,
:meth:`ModelAdapter.supports`).
"""

from .base import (
    GenericAdapter,
    ModelAdapter,
    get_adapter,
    resolve_module,
)
from .registry import known_families, register_adapter
from .spec import FAMILY_SPECS, AdapterSpec
from .transforms import InputTransform, derangement, get_transform, transform_names

__all__ = [
    "FAMILY_SPECS",
    "AdapterSpec",
    "GenericAdapter",
    "InputTransform",
    "ModelAdapter",
    "derangement",
    "get_adapter",
    "get_transform",
    "known_families",
    "register_adapter",
    "resolve_module",
    "transform_names",
]
