"""Config of counterfactual (visual contrastive) decoding (:class:`CounterfactualDecodingConfig`,
``"counterfactual_decoding"``).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`. ``NOISE_STEPS`` and ``DEFAULT_DISTURBANCE`` repeat
the values of :mod:`causalvl.adapters.transforms` and :mod:`causalvl.adapters.generative` (whose
modules import torch); a test checks that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import InterventionConfig

__all__ = ["CounterfactualDecodingConfig"]

#: diffusion steps of the VCD noise schedule (``causalvl.adapters.transforms.NOISE_STEPS``)
NOISE_STEPS = 1000

#: the ICD disturbance prefix (``causalvl.adapters.generative.DEFAULT_DISTURBANCE``)
DEFAULT_DISTURBANCE = (
    "You are a confused objects detector to provide a fuzzy overview or impression of the image."
)


@dataclass(kw_only=True)
class CounterfactualDecodingConfig(InterventionConfig):
    """Contrastive decoding against a counterfactual visual (or instruction) input.

    Args:
        alpha: contrast strength ``>= 0`` (VCD's eval scripts use 1; 0 = plain decoding).
        beta: adaptive plausibility cutoff in ``[0, 1]``: tokens with
            ``p(y | v, x) < beta * max p`` are excluded (decided on the factual logits;
            0 disables the mask). VCD uses 0.1.
        counterfactual: ``"noise"`` (VCD: diffusion noise at ``noise_step`` on the processed
            pixels), ``"blank"`` (processed zeros = the processor's mean colour), ``"no_image"``
            (image tokens and pixels removed; VDD / PAI) or ``"instruction"`` (a disturbance
            prefix inserted after the image; ICD).
        noise_step: diffusion step ``t`` in ``[0, 999]`` for ``"noise"`` (VCD default 500).
        space: ``"logits"`` (raw logits, official VCD) or ``"log_softmax"`` (PAI).
        seed: seeds the noise draw and, when sampling, the token draws (fresh generators per
            ``generate`` call, so repeated calls give the same output).
        strategy: ``"auto"`` (one batched forward over ``[factual; counterfactual]`` rows when
            both inputs have the same length, else a separate counterfactual branch),
            ``"batched"`` or ``"processor"``.
        disturbance: the ICD disturbance text for ``"instruction"`` (encoded with the
            ``tokenizer=`` passed to ``generate``, without special tokens).
        disturbance_ids: the disturbance as token ids (takes precedence over ``disturbance``).

    Example:
        >>> import causalvl
        >>> cfg = causalvl.CounterfactualDecodingConfig(alpha=1.0, beta=0.1, counterfactual="noise")
        >>> cfg.to_dict()["type"]
        'counterfactual_decoding'
    """

    type = "counterfactual_decoding"
    alpha: float = 1.0
    beta: float = 0.1
    counterfactual: Literal["noise", "blank", "no_image", "instruction"] = "noise"
    noise_step: int = 500
    space: Literal["logits", "log_softmax"] = "logits"
    seed: int = 0
    strategy: Literal["auto", "batched", "processor"] = "auto"
    disturbance: str = DEFAULT_DISTURBANCE
    disturbance_ids: tuple[int, ...] | None = None

    def validate(self) -> None:
        self._check_positive("alpha", allow_zero=True)
        self._check_fraction("beta")
        self._check_int("noise_step", minimum=0)
        if self.noise_step >= NOISE_STEPS:
            self._fail("noise_step", f"must be an integer in [0, {NOISE_STEPS - 1}]")
        self._check_int("seed", minimum=0)
        if not isinstance(self.disturbance, str):
            self._fail("disturbance", "must be a string")
        if self.disturbance_ids is not None:
            ids = self.disturbance_ids
            if isinstance(ids, (str, bytes)) or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids
            ):
                self._fail("disturbance_ids", "must be a list of non-negative token ids")
            if len(ids) == 0:
                self._fail("disturbance_ids", "must hold at least one token id (or be None)")
            self._normalise("disturbance_ids", tuple(ids))
