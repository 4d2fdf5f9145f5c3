"""Model adapters: one per model family, plus :class:`GenericAdapter` for anything else."""

from .base import (
    GenericAdapter,
    ModelAdapter,
    derangement,
    get_adapter,
    known_families,
    register_adapter,
    resolve_module,
)

__all__ = [
    "GenericAdapter",
    "ModelAdapter",
    "derangement",
    "get_adapter",
    "known_families",
    "register_adapter",
    "resolve_module",
]
