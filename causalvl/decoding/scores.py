"""The contrastive-decoding formula and the diffusion-noise schedule (pure functions).

:func:`vcd_scores` is the single place where the visual-contrastive-decoding rule lives::

    s = (1 + alpha) * l - alpha * l_cf          # l, l_cf: raw logits or log-softmax
    s[l < log(beta) + max(l)] = -inf            # plausibility, decided on the factual l only

With ``l = logit(y | v, x)`` and ``l_cf = logit(y | v', x)`` this is ``l + alpha * TIE`` with the
per-token total indirect effect ``TIE = l - l_cf`` (CF-VQA's language-prior subtraction,
applied at every decoding step), restricted to tokens the real image finds plausible
(``p(y | v, x) >= beta * max p``).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..adapters.transforms import NOISE_STEPS, diffusion_noise, noise_schedule
from ..errors import ConfigError, InputError
from ..interventions.fusion import plausibility_mask

Space = Literal["logits", "log_softmax"]
SPACES = ("logits", "log_softmax")

# the diffusion noise is an input transform ("diffusion_noise" in causalvl.adapters.transforms);
# its schedule lives with it and is re-exported here


def vcd_scores(
    logits: torch.Tensor,
    cf_logits: torch.Tensor,
    alpha: float,
    beta: float,
    space: Space = "logits",
) -> torch.Tensor:
    """Contrastive next-token scores ``(1 + alpha) * l - alpha * l_cf``, masked to plausible tokens.

    Args:
        logits: ``(batch, vocab)`` factual next-token logits ``l = logit(y | v, x)``.
        cf_logits: ``(batch, vocab)`` counterfactual logits ``l_cf = logit(y | v', x)``.
        alpha: contrast strength ``>= 0``; ``0`` returns the factual scores (masked when
            ``beta > 0``).
        beta: plausibility cutoff in ``[0, 1]``, decided on the factual logits only; tokens with
            ``p(y | v, x) < beta * max p`` get ``-inf``; ``0`` disables the mask. ``alpha=0``
            with ``beta=0`` returns the factual scores unmasked: with ``space="log_softmax"``
            that is PAI's ``gamma = 1`` output (see :func:`pai_scores`).
        space: ``"logits"`` contrasts raw logits (the official VCD code); ``"log_softmax"``
            contrasts log-probabilities (PAI). Both give the same mask, argmax and softmax;
            the returned values differ by a per-row constant.

    Tokens whose factual logit is ``-inf`` (removed by an earlier processor) stay ``-inf``.

    Returns:
        ``(batch, vocab)`` float scores (``-inf`` outside the plausible set).

    Example:
        >>> l = torch.tensor([[2.0, 1.0, -3.0]]); l_cf = torch.tensor([[2.0, 0.0, 0.0]])
        >>> vcd_scores(l, l_cf, alpha=1.0, beta=0.1).tolist()
        [[2.0, 2.0, -inf]]
    """
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha >= 0:
        raise ConfigError(f"vcd_scores: alpha = {alpha!r} is invalid; pass a number >= 0.")
    if space not in SPACES:
        raise ConfigError(f"vcd_scores: space = {space!r} is not allowed; choose one of {SPACES}.")
    if logits.shape != cf_logits.shape:
        raise InputError(
            f"vcd_scores: factual logits {tuple(logits.shape)} and counterfactual logits "
            f"{tuple(cf_logits.shape)} differ in shape; both branches must score the same vocabulary."
        )
    cf_logits = cf_logits.to(logits.dtype)
    if space == "log_softmax":
        logits = torch.log_softmax(logits, dim=-1)
        cf_logits = torch.log_softmax(cf_logits, dim=-1)
    scores = (1 + alpha) * logits - alpha * cf_logits if alpha else logits.clone()
    # tokens an earlier processor removed (-inf factual logit) stay removed, also when beta = 0
    keep = plausibility_mask(logits, beta) & (logits > float("-inf"))
    return scores.masked_fill(~keep, float("-inf"))


def pai_scores(
    logits: torch.Tensor, cf_logits: torch.Tensor, gamma: float, beta: float = 0.1
) -> torch.Tensor:
    """PAI's parameterisation (Liu et al., ECCV 2024; official ``CFG.py::CFGLogits``):
    ``gamma * ls - (gamma - 1) * lu`` with ``ls``, ``lu`` the log-softmax of the factual and
    the image-free logits, masked to ``p >= beta * max p`` of the factual branch; PAI returns
    ``ls`` **unmasked** when ``gamma == 1``.

    This is :func:`vcd_scores` with ``alpha = gamma - 1`` and ``space="log_softmax"``; at
    ``gamma == 1`` it is ``vcd_scores(..., alpha=0, beta=0, space="log_softmax")`` whatever
    ``beta`` is (tokens an earlier processor set to ``-inf`` stay ``-inf``).

    Args:
        logits: ``(batch, vocab)`` factual next-token logits.
        cf_logits: ``(batch, vocab)`` logits without the image.
        gamma: guidance scale ``>= 1`` (PAI's README uses 1.1).
        beta: plausibility cutoff in ``[0, 1]`` (hard-coded 0.1 in PAI).

    Returns:
        ``(batch, vocab)`` scores.

    Example:
        >>> l = torch.tensor([[2.0, 1.0, -3.0]]); lu = torch.tensor([[2.0, 0.0, 0.0]])
        >>> pai_scores(l, lu, gamma=1.0).isinf().any().item()   # unmasked at gamma = 1
        False
        >>> pai_scores(l, lu, gamma=2.0)[0, 2].item()
        -inf
    """
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma >= 1:
        raise ConfigError(
            f"pai_scores: gamma = {gamma!r} is invalid; pass a number >= 1 (1 returns the "
            "factual log-probabilities; PAI uses 1.1)."
        )
    if gamma == 1:
        return vcd_scores(logits, cf_logits, alpha=0.0, beta=0.0, space="log_softmax")
    return vcd_scores(logits, cf_logits, alpha=gamma - 1, beta=beta, space="log_softmax")


__all__ = [
    "NOISE_STEPS",
    "SPACES",
    "diffusion_noise",
    "noise_schedule",
    "pai_scores",
    "plausibility_mask",
    "vcd_scores",
]
