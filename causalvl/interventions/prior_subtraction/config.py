"""Config of model-agnostic prior subtraction (:class:`PriorSubtractionConfig`,
``"prior_subtraction"``).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...config import InterventionConfig
from ...errors import ConfigError

__all__ = ["PriorSubtractionConfig"]


#: the vision modes that give the same counterfactual every call (no random draw); the
#: transform table of :mod:`causalvl.adapters.transforms` agrees (a test checks it)
_DETERMINISTIC_MODES = ("zeros", "mean", "mask")


@dataclass(kw_only=True)
class PriorSubtractionConfig(InterventionConfig):
    """Subtract what the model predicts without the image: a language prior, removed.

    For any model (ViLT, CLIP, LXMERT, your own ``nn.Module``), with no branch heads and no
    training of its own. A counterfactual pass runs the base model on the adapter's null-vision
    inputs (``adapter.counterfactual_inputs(inputs, remove="vision", mode=mode)``) and, with
    ``f`` the factual and ``g`` the counterfactual scores in the chosen ``space``,

    ``form="amplify"`` (default): ``logits = (1 + α)·f − α·g = f + α·(f − g)``;
    ``form="subtract"``: ``logits = f − α·g``.

    ``effects``: ``"tie" = f − g``, the effect of the image with the question held fixed, the
    same quantity as CF-VQA's TIE (``Z(q, v) − Z(q, v*)``), and ``"prior" = g``, the image-blind
    prediction (the language prior the subtraction removes; a prediction, not an effect).
    ``"te"`` / ``"nde"`` are not defined here: they need a pass with the question removed too.
    ``counterfactual_logits`` holds the raw counterfactual logits (averaged over
    ``num_samples`` draws).

    **When it can help.** Write the factual log-probabilities as ``f ≈ s(v, a) + log p(a | q)``
    (image evidence plus the learned prior) and the image-blind ones as ``g ≈ log p(a | q) + c``.
    ``"amplify"`` gives ``(1 + α) s + log p(a | q)``: the prior keeps its weight 1 and only the
    image evidence is scaled up, so the prediction changes only where the image evidence was
    already close to the prior's. ``"subtract"`` with ``α = 1`` in ``space="log_softmax"``
    removes the prior's weight entirely (``f − g ≈ s``: a logit adjustment by the model's own
    image-blind prior), which is what a uniform test prior needs. Both need a model that has
    learned the image: a model that ignores it has ``s ≈ 0`` and nothing to amplify. ``g`` must
    estimate the prior: a random other image (``"shuffle"``), averaged over ``num_samples``
    draws, does so for models that never saw an all-zero image; a zero image may be far from
    any training input.

    Args:
        alpha: strength ``α >= 0`` of the subtraction (0 = the factual model).
        form: ``"amplify"`` (``(1 + α) f − α g``, the contrastive form of counterfactual
            decoding) or ``"subtract"`` (``f − α g``, a logit adjustment by the image-blind
            prediction).
        num_samples: counterfactual draws averaged (in ``space``) for the random modes
            ``"shuffle"`` and ``"noise"`` (1 for the deterministic modes).
        plausibility: ``β`` in ``[0, 1)``: answers whose factual probability is below ``β``
            times the top answer's are left out of the comparison (their score becomes the
            dtype's lowest value), as in counterfactual decoding's plausibility constraint. A
            small ``β`` (e.g. ``1e-3``) keeps the answers valid for the question (the model
            knows its answer types) and stops the subtraction from promoting answers that are
            equally unlikely with and without the image (``f − g ≈ 0`` for both); ``0`` keeps
            every answer.
        mode: how the image is removed: ``"zeros"``, ``"mean"`` (the adapter's fitted mean, see
            ``vl.adapter.fit_vision_mean``), ``"shuffle"``, ``"noise"`` or ``"mask"``.
        space: ``"logits"`` (raw scores) or ``"log_softmax"`` (log-probabilities over answers;
            over the candidate texts for contrastive models).
        train_on: ``"factual"`` (default): in training mode ``logits`` are the factual logits
            (no counterfactual pass), the task loss trains the plain model and the subtraction
            applies at evaluation. ``"debiased"``: ``logits`` are the debiased scores in training
            too, and the task loss flows through both passes.
        cache: reuse counterfactual logits across calls, keyed by the question
            (``adapter.language_cache_key``; by candidate text for contrastive models), so a
            repeated question costs one forward. Used in eval mode only; cleared by
            ``vl.train()`` / ``vl.eval()`` and :meth:`PriorSubtraction.clear_cache` (call it
            after changing weights in eval mode). Requires a deterministic ``mode`` (zeros /
            mean / mask); ``"mean"`` additionally needs a fitted mean. It assumes the null-vision
            prediction depends on the language inputs only.
        cache_size: most entries kept (least recently used are dropped).

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        >>> vl = causalvl.intervene(net, causalvl.PriorSubtractionConfig(alpha=1.0)).eval()
        >>> out = vl(pixel_values=torch.rand(2, 3, 8, 8), input_ids=torch.randint(1, 20, (2, 5)))
        >>> torch.allclose(out.logits, 2 * out.factual_logits - out.counterfactual_logits)
        True
    """

    type = "prior_subtraction"
    alpha: float = 1.0
    form: Literal["amplify", "subtract"] = "amplify"
    num_samples: int = 1
    plausibility: float = 0.0
    mode: Literal["zeros", "mean", "shuffle", "noise", "mask"] = "zeros"
    space: Literal["logits", "log_softmax"] = "logits"
    train_on: Literal["factual", "debiased"] = "factual"
    cache: bool = False
    cache_size: int = 4096

    def validate(self) -> None:
        self._check_positive("alpha", allow_zero=True)
        self._check_int("cache_size", minimum=1)
        self._check_int("num_samples", minimum=1)
        if not (
            isinstance(self.plausibility, (int, float))
            and not isinstance(self.plausibility, bool)
            and 0 <= self.plausibility < 1
        ):
            self._fail("plausibility", "must be a number in [0, 1), e.g. 1e-3 (0: no constraint)")
        if self.num_samples > 1 and self.mode in _DETERMINISTIC_MODES:
            self._fail(
                "num_samples",
                f"averages random counterfactuals, but mode={self.mode!r} gives the same one "
                "every draw; use mode 'shuffle' or 'noise', or num_samples=1",
            )
        if not isinstance(self.cache, bool):
            self._fail("cache", "must be True or False")
        if self.cache and self.mode not in _DETERMINISTIC_MODES:
            raise ConfigError(
                f"PriorSubtractionConfig(cache=True, mode={self.mode!r}) is invalid: a "
                f"{self.mode!r} counterfactual changes from call to call, so cached values would "
                f"be wrong. Use mode 'zeros', 'mean' or 'mask' with the cache, or cache=False."
            )
