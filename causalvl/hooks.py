"""Scoped forward hooks.

A :class:`HookManager` owns the handles it registers and removes exactly those, in ``finally``,
also when the model raises. It never touches hooks registered by anyone else and sets no
attribute on the user's model.

    >>> import torch
    >>> lin = torch.nn.Linear(2, 2)
    >>> with HookManager() as hm:
    ...     hm.add_forward_hook(lin, lambda mod, args, kwargs, out: out * 0)
    ...     bool((lin(torch.ones(1, 2)) == 0).all())
    True
    >>> len(lin._forward_hooks)
    0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .errors import InterventionStateError


def get_primary(output: Any) -> torch.Tensor:
    """The primary tensor of a module output: the tensor itself, the first element of a tuple
    or list, or the first field of a ``ModelOutput``-like mapping."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "keys") and hasattr(output, "__getitem__"):
        keys = list(output.keys())
        if keys and isinstance(output[keys[0]], torch.Tensor):
            return output[keys[0]]
    raise InterventionStateError(
        f"cannot find a tensor in a module output of type {type(output).__name__}; "
        "target a module that returns a tensor, a tuple starting with a tensor, or a ModelOutput."
    )


def replace_primary(output: Any, new: torch.Tensor) -> Any:
    """Return ``output`` with its primary tensor replaced by ``new``; the rest is untouched.

    ``ModelOutput`` objects are copied (never mutated in place)."""
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    if hasattr(output, "keys") and hasattr(output, "__getitem__"):
        keys = list(output.keys())
        data = {k: output[k] for k in keys}
        data[keys[0]] = new
        return type(output)(**data)
    raise InterventionStateError(
        f"cannot replace the tensor in a module output of type {type(output).__name__}."
    )


class HookManager:
    """Registers forward (pre-)hooks for one scope and removes exactly those on exit.

    Use as a context manager; :meth:`remove` is idempotent.
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def add_forward_hook(self, module: nn.Module, fn: Callable[..., Any]) -> RemovableHandle:
        """``fn(module, args, kwargs, output) -> output | None`` (``with_kwargs=True``)."""
        handle = module.register_forward_hook(fn, with_kwargs=True)
        self._handles.append(handle)
        return handle

    def add_forward_pre_hook(self, module: nn.Module, fn: Callable[..., Any]) -> RemovableHandle:
        """``fn(module, args, kwargs) -> (args, kwargs) | None`` (``with_kwargs=True``)."""
        handle = module.register_forward_pre_hook(fn, with_kwargs=True)
        self._handles.append(handle)
        return handle

    def __len__(self) -> int:
        return len(self._handles)

    def remove(self) -> None:
        """Remove every hook this manager added (and only those)."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> HookManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def did_not_run_message(model: nn.Module, path: str, what: str) -> str:
    """Explain that the module at ``path`` (the target of ``what``) did not run in a forward."""
    module = model.get_submodule(path)
    children = [f"{path}.{name}" for name, _ in module.named_children()][:6]
    hint = (
        f" Its submodules: {', '.join(children)}; point the target at one of them (or at the "
        "module whose output is the feature you mean), e.g. with "
        "causalvl.GenericAdapter(roles={...}) or the config's role / target field."
        if children
        else " Point the target at a module that runs, e.g. with causalvl.GenericAdapter(roles=...)"
        " or the config's role / target field."
    )
    return (
        f"{what} resolves to module {path!r} ({type(module).__name__}), but that module's "
        f"forward did not run during {type(model).__name__}'s forward: the model calls its "
        "parts directly (e.g. the embeddings and layers one by one) instead of calling it, so "
        "nothing can be captured or edited there." + hint + " causalvl.inspect_targets(model, "
        "inputs=...) shows which roles run."
    )


def count_hooks(model: nn.Module) -> int:
    """Number of forward, forward-pre and backward hooks on ``model`` and its submodules."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total


__all__ = ["HookManager", "count_hooks", "did_not_run_message", "get_primary", "replace_primary"]
