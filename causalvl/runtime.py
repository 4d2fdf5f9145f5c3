"""Facts about the running process that several parts record or need: package versions, the
device and dtype of a model, and evaluation mode for a block.

    >>> import torch
    >>> net = torch.nn.Linear(2, 2).train()
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training
    True
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ._version import __version__

#: the packages a run's results depend on, recorded in run.json and reports
RUN_PACKAGES = (
    "numpy",
    "safetensors",
    "transformers",
    "tokenizers",
    "scikit-learn",
    "tqdm",
)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (``None`` when it is not installed);
    ``"causalvl"``, ``"torch"`` and ``"python"`` are answered from the running process."""
    if name == "causalvl":
        return __version__
    if name == "torch":
        return torch.__version__
    if name == "python":
        return platform.python_version()
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(names: Iterable[str] = RUN_PACKAGES) -> dict[str, str | None]:
    """``{name: version}`` for python, causalvl, torch and ``names`` (``None``: not installed)."""
    return {name: package_version(name) for name in ("python", "causalvl", "torch", *names)}


def version_at_least(name: str, minimum: tuple[int, ...]) -> bool:
    """Whether distribution ``name`` is installed at ``minimum`` or newer (False when it is
    not installed or its version does not parse)."""
    version = package_version(name)
    if version is None:
        return False
    try:
        parts = tuple(int(p) for p in version.split(".")[: len(minimum)])
    except ValueError:
        return False
    return parts >= minimum


def module_dtype_device(model: Any) -> tuple[torch.dtype, torch.device]:
    """Floating dtype and device of ``model``'s first floating parameter or buffer
    (``float32`` / ``cpu`` when it has none or is not a module)."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return torch.float32, torch.device("cpu")


def module_device(model: Any) -> torch.device:
    """The device of ``model``'s first parameter or buffer (``cpu`` when it has none)."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """Put ``model`` in eval mode for the block and restore the previous mode of each of its
    submodules on exit, also when the block raises: a submodule that was in eval mode before
    (a frozen encoder in a training model) stays in eval mode. Objects that are not an
    ``nn.Module`` pass through unchanged."""
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        model.train(modes[0][1])  # the model's own train() runs (it may reset caches)
        for m, was_training in modes:  # then every submodule gets its own mode back
            m.training = was_training


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with one BLAS / OpenMP thread in numpy and scikit-learn.

    A solver such as scikit-learn's lbfgs sums in a thread-dependent order, so the same fit on
    the same data can land on slightly different weights with another thread count; inside
    this block the result depends on the data and the seed only."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


__all__ = [
    "RUN_PACKAGES",
    "eval_mode",
    "single_threaded_blas",
    "module_device",
    "module_dtype_device",
    "package_version",
    "package_versions",
    "version_at_least",
]
