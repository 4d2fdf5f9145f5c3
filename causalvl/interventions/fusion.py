"""Pure fusion and causal-effect arithmetic of CF-VQA and RUBi (no parameters, no state).

Three answer-score branches meet in a fusion ``h``:

* ``z_k`` -- the base model's logits (vision and question together: "knowledge", ``K -> A``);
* ``z_q`` -- the question-only branch (``Q -> A``);
* ``z_v`` -- the vision-only branch (``V -> A``); ``None`` is the *simple* graph without it.

Fusions (``eps = 1e-12``, σ the logistic sigmoid):

* ``"rubi"``:     ``h = z_k · σ(z_q)`` (``z_v`` is ignored: the RUBi mask has no vision slot);
* ``"harmonic"``: ``S = σ(z_k) σ(z_q) [σ(z_v)]``, ``h = log(S + eps) − log1p(S)``;
* ``"sum"``:      ``h = log(σ(z_k + z_q [+ z_v]) + eps)``.

Effects (:func:`effects`) replace a branch that is *not* factual by the constant ``c·1``
*before* any sigmoid. Writing ``Z_{q,v,k} = h(z_k, z_q, z_v)`` and ``*`` for a counterfactual
slot:

* ``TE  = Z_{q,v,k} − Z_{q*,v*,k*}``
* ``NDE = Z_{q,v*,k*} − Z_{q*,v*,k*}``
* ``TIE = TE − NDE = Z_{q,v,k} − Z_{q,v*,k*}`` (the CF-VQA prediction)
* ``NIE = Z_{q*,v,k} − Z_{q*,v*,k*}``

Every tensor is ``(batch, num_answers)`` (or anything broadcastable to the shape of ``z_k``);
the outputs have the broadcast shape.

    >>> import torch
    >>> zk, zq = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 0.0]])
    >>> e = effects(zk, zq, c=0.0, mode="rubi")
    >>> torch.allclose(e["tie"], zk * torch.sigmoid(zq))
    True
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..errors import ConfigError, InputError
from ..losses import EPS, answer_cross_entropy

FusionMode = Literal["rubi", "harmonic", "sum"]
FUSION_MODES: tuple[str, ...] = ("rubi", "harmonic", "sum")
# EPS (from causalvl.losses) is added inside the logarithms of the harmonic and sum fusions


def _check_mode(mode: str) -> None:
    if mode not in FUSION_MODES:
        raise ConfigError(
            f"fusion mode {mode!r} is unknown; choose one of {', '.join(map(repr, FUSION_MODES))}."
        )


def fuse(
    z_k: torch.Tensor,
    z_q: torch.Tensor,
    z_v: torch.Tensor | None = None,
    *,
    mode: FusionMode,
) -> torch.Tensor:
    """The fused answer scores ``h(z_k, z_q, z_v)``.

    Args:
        z_k: base-model logits ``(batch, num_answers)``.
        z_q: question-only logits, broadcastable to ``z_k``.
        z_v: vision-only logits, broadcastable to ``z_k``; ``None`` for the simple graph.
            Ignored by ``mode="rubi"``.
        mode: ``"rubi"``, ``"harmonic"`` or ``"sum"`` (formulas in the module docstring).

    Returns:
        ``(batch, num_answers)`` fused scores. ``harmonic`` and ``sum`` give log-probability-like
        values (``<= 0``) that are used directly as logits of a softmax.

    Example:
        >>> import torch
        >>> fuse(torch.zeros(1, 2), torch.zeros(1, 2), mode="sum").exp()
        tensor([[0.5000, 0.5000]])
    """
    _check_mode(mode)
    if mode == "rubi":
        return z_k * torch.sigmoid(z_q)
    if mode == "harmonic":
        s = torch.sigmoid(z_k) * torch.sigmoid(z_q)
        if z_v is not None:
            s = s * torch.sigmoid(z_v)
        return torch.log(s + EPS) - torch.log1p(s)
    total = z_k + z_q if z_v is None else z_k + z_q + z_v
    return torch.log(torch.sigmoid(total) + EPS)


def _constant_like(c: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(c, dtype=like.dtype, device=like.device)
    if c.dim() != 0:
        raise InputError(
            f"the counterfactual value c must be a scalar, got shape {tuple(c.shape)}."
        )
    return c * torch.ones_like(like)


def effects(
    z_k: torch.Tensor,
    z_q: torch.Tensor,
    z_v: torch.Tensor | None = None,
    *,
    c: float | torch.Tensor,
    mode: FusionMode,
) -> dict[str, torch.Tensor]:
    """Total, direct and indirect effects of the question on the answer (CF-VQA).

    A non-factual branch is replaced by ``c * ones`` (before any sigmoid). In ``"rubi"`` mode
    ``z_v`` is ignored (the simple graph), as in the published code.

    Args:
        z_k, z_q, z_v: as in :func:`fuse`; ``z_v=None`` is the simple graph.
        c: the counterfactual constant: a float or a 0-d tensor (gradients flow into it).
        mode: the fusion.

    Returns:
        ``{"te", "nde", "tie", "nie"}``, each shaped like the fused scores ``(batch,
        num_answers)``. ``tie`` is computed as ``Z_{q,v,k} − Z_{q,v*,k*}`` (equal to ``te −
        nde``); ``argmax(tie)`` is the CF-VQA answer, ``argmax(te)`` the plain fused answer.

    Example:
        >>> import torch
        >>> zk, zq, zv = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
        >>> e = effects(zk, zq, zv, c=0.5, mode="sum")
        >>> torch.allclose(e["tie"], e["te"] - e["nde"], atol=1e-6)
        True
    """
    _check_mode(mode)
    if mode == "rubi":
        z_v = None
    shape = torch.broadcast_shapes(z_k.shape, z_q.shape, *(() if z_v is None else (z_v.shape,)))
    ref = z_k.expand(shape)
    cc = _constant_like(c, ref)
    cv = None if z_v is None else cc
    factual = fuse(z_k, z_q, z_v, mode=mode)
    none = fuse(cc, cc, cv, mode=mode)  # Z_{q*,v*,k*}
    only_q = fuse(cc, z_q, cv, mode=mode)  # Z_{q,v*,k*}
    no_q = fuse(z_k, cc, z_v, mode=mode)  # Z_{q*,v,k}
    return {
        "te": factual - none,
        "nde": only_q - none,
        "tie": factual - only_q,
        "nie": no_q - none,
    }


def plausibility_mask(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Tokens the factual branch finds plausible: ``p >= beta * max p`` (row-wise).

    Equivalent to ``logits >= log(beta) + max(logits)`` in raw-logit or log-softmax space.

    Args:
        logits: ``(batch, vocab)`` factual logits.
        beta: in ``[0, 1]``; ``0`` keeps every token.

    Returns:
        bool tensor ``(batch, vocab)``, True where the token is kept.

    Example:
        >>> plausibility_mask(torch.tensor([[0.0, -1.0, -5.0]]), 0.1).tolist()
        [[True, True, False]]
    """
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 <= beta <= 1:
        raise ConfigError(
            f"beta = {beta!r} is invalid; pass a number in [0, 1] (0 disables the mask)."
        )
    if beta == 0:
        return torch.ones_like(logits, dtype=torch.bool)
    cutoff = math.log(beta) + logits.max(dim=-1, keepdim=True).values
    return logits >= cutoff


__all__ = ["EPS", "FUSION_MODES", "answer_cross_entropy", "effects", "fuse", "plausibility_mask"]
