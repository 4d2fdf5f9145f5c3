"""Hard negatives for compositional training: captions and images that change the meaning while
keeping the parts.

With random in-batch negatives a contrastive model almost never has to separate "grass in a
mug" from "mug in grass", so it can score captions by their bag of words. Hard negatives keep
the words (or all but one) and change what they say:

* captions (:func:`perturb_caption`): ``"swap"`` exchanges two content words (the bag of words
  is kept, the meaning changes: "a 3 left of a 7" -> "a 7 left of a 3"); ``"attribute"`` and
  ``"number"`` replace one colour / size / number word by another of its family;
  ``"relation"`` replaces the spatial relation by its opposite ("left of" -> "right of").
  (:func:`perturb_caption` is :func:`causalvl.datasets.compositional.perturb_caption`.)
* images (:func:`swap_image_halves`): the left and right halves exchanged, i.e. the same two
  objects in the swapped composition (the image the swapped caption describes).

    >>> perturb_caption("a 3 left of a 7", "swap", 0)
    'a 7 left of a 3'
    >>> perturb_caption("a 3 left of a 7", "relation", 0)
    'a 3 right of a 7'
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from ..datasets.compositional import (
    PERTURB_KINDS as NEGATIVE_KINDS,
)
from ..datasets.compositional import (
    RELATION_OPPOSITES,
    PerturbKind,
    perturb_caption,
    replace_relation,
)
from ..errors import ConfigError, DataError, InputError

NegativeKind = PerturbKind


def swap_image_halves(pixel_values: torch.Tensor) -> torch.Tensor:
    """Exchange the left and right halves of images: ``(..., C, H, W)`` -> same shape.

    For side-by-side compositions (``X | Y``) this is the swapped composition (``Y | X``).

    Raises:
        InputError: the width is odd (the halves would not line up).

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 1, 4)
        >>> swap_image_halves(x).flatten().tolist()
        [2.0, 3.0, 0.0, 1.0]
    """
    if pixel_values.dim() < 3:
        raise InputError(
            f"swap_image_halves expects images (..., C, H, W), got shape {tuple(pixel_values.shape)}."
        )
    w = pixel_values.shape[-1]
    if w % 2:
        raise InputError(
            f"swap_image_halves needs an even image width, got {w}; pad or resize the images."
        )
    half = w // 2
    return torch.cat([pixel_values[..., half:], pixel_values[..., :half]], dim=-1)


class HardNegativeGenerator:
    """Makes hard-negative captions for a batch, trying the given kinds in a seeded order.

    Args:
        kinds: perturbations to use, e.g. ``("swap", "relation")``; for each caption one kind
            that applies is drawn (``"swap"`` first when ``ordered=True``).
        seed: seeds the generator's own numpy Generator.
        ordered: try the kinds in the given order instead of a random one.

    Example:
        >>> gen = HardNegativeGenerator(kinds=("swap",))
        >>> gen(["a 3 left of a 7", "a 1 left of a 4"])
        ['a 7 left of a 3', 'a 4 left of a 1']
    """

    def __init__(
        self, kinds: Sequence[str] = ("swap",), *, seed: int = 0, ordered: bool = False
    ) -> None:
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in NEGATIVE_KINDS]
        if not kinds or bad:
            raise ConfigError(
                f"HardNegativeGenerator kinds={kinds!r} is invalid; use a non-empty subset of "
                f"{list(NEGATIVE_KINDS)}."
            )
        self.kinds = kinds
        self.ordered = ordered
        self.rng = np.random.default_rng(seed)

    def negative(
        self, caption: str, rng: np.random.Generator | random.Random | None = None
    ) -> str | None:
        """One hard negative of ``caption``, or ``None`` when no kind applies."""
        rng = self.rng if rng is None else rng
        order = list(self.kinds)
        if not self.ordered and len(order) > 1:
            idx = (
                rng.permutation(len(order))
                if isinstance(rng, np.random.Generator)
                else rng.sample(range(len(order)), len(order))
            )
            order = [order[int(i)] for i in idx]
        for kind in order:
            try:
                out = perturb_caption(caption, kind, rng)  # type: ignore[arg-type]
            except DataError:
                continue
            if out != caption:
                return out
        return None

    def __call__(self, captions: Sequence[str]) -> list[str | None]:
        """Hard negatives of each caption (``None`` where no perturbation applies)."""
        return [self.negative(c) for c in captions]


__all__ = [
    "HardNegativeGenerator",
    "NEGATIVE_KINDS",
    "RELATION_OPPOSITES",
    "perturb_caption",
    "replace_relation",
    "swap_image_halves",
]
