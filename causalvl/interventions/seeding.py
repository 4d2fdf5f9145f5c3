"""Seeded parameter initialisation for interventions (``InterventionConfig.init_seed``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def init_rng(seed: int | None) -> Iterator[None]:
    """Inside the block, the global torch generator starts from ``seed``; afterwards it is
    back where it was, so parameter init drawn inside neither depends on nor changes the
    caller's RNG. ``None`` leaves the global generator alone (the draws use and advance it).

    Only the CPU generator (and the current CUDA device's, once CUDA is initialised) is
    forked: intervention parameters are drawn on the CPU and moved to the model's device.

    Example:
        >>> with init_rng(3):
        ...     a = torch.rand(2)
        >>> with init_rng(3):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    if seed is None:
        yield
        return
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = [torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            torch.cuda.manual_seed(int(seed))
        yield
