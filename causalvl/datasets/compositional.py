"""Compositional (Winoground-style) image-caption groups and hard-negative caption edits.

What is real: the two objects of every image are real images of a source, and which object
is on which side is a fact of the pixels. What is templated: the captions ("a X left of a Y").
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from ._common import (
    ImagePoolConfig,
    add_noise,
    article,
    make_rng,
    prepared_images,
    split_pools,
    torch_generator,
)
from .sources import ImageSource, digits
from .tokenizer import WordTokenizer

logger = logging.getLogger(__name__)

PerturbKind = Literal["swap", "attribute", "number", "relation"]
PERTURB_KINDS: tuple[str, ...] = ("swap", "attribute", "number", "relation")

#: Words that are never swapped by ``perturb_caption(..., "swap")``: articles, prepositions,
#: spatial relations and auxiliaries.
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "with",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "left",
        "right",
        "above",
        "below",
        "under",
        "over",
        "beside",
        "behind",
        "next",
        "near",
        "front",
        "top",
        "bottom",
        "between",
        "from",
        "into",
        "onto",
        "up",
        "down",
        "inside",
        "outside",
        "than",
        "as",
        "has",
        "have",
    ]
)
#: Attribute families for ``perturb_caption(..., "attribute")``: a word is replaced by
#: another of its family.
ATTRIBUTE_FAMILIES: tuple[tuple[str, ...], ...] = (
    (
        "red",
        "green",
        "blue",
        "yellow",
        "black",
        "white",
        "brown",
        "orange",
        "pink",
        "purple",
        "gray",
    ),
    ("small", "large", "big", "tiny", "huge"),
    ("old", "young", "new"),
    ("tall", "short"),
    ("open", "closed"),
    ("wet", "dry"),
)
NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)


def _core(token: str) -> str:
    return token.lower().strip(".,;:!?\"'()")


def _rng(rng: Any) -> random.Random | np.random.Generator:
    if isinstance(rng, (random.Random, np.random.Generator)):
        return rng
    if isinstance(rng, int) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise ConfigError(
        f"rng must be a numpy Generator, a random.Random or an int seed, got {type(rng).__name__}."
    )


def _choice(rng: random.Random | np.random.Generator, options: list[str]) -> str:
    if isinstance(rng, random.Random):
        return rng.choice(options)
    return options[int(rng.integers(len(options)))]


def _with_case(new: str, old: str) -> str:
    core = _core(old)
    start = old.lower().find(core)
    replaced = new.capitalize() if old[start : start + 1].isupper() else new
    return old[:start] + replaced + old[start + len(core) :]


def _fix_articles(tokens: list[str]) -> list[str]:
    out = list(tokens)
    for i in range(len(out) - 1):
        if _core(out[i]) in ("a", "an"):
            art = article(_core(out[i + 1]))
            out[i] = _with_case(art, out[i])
    return out


#: Relation phrases and their replacements (each maps to its opposite).
RELATION_OPPOSITES: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
    "on top of": "under",
    "under": "on top of",
    "in front of": "behind",
    "behind": "in front of",
    "inside": "outside",
    "outside": "inside",
    "bigger than": "smaller than",
    "smaller than": "bigger than",
    "more": "fewer",
    "fewer": "more",
}
_RELATION_RE = re.compile(
    r"\b("
    + "|".join(sorted((re.escape(k) for k in RELATION_OPPOSITES), key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)


def replace_relation(caption: str) -> str:
    """Replace the first relation phrase of ``caption`` by its opposite
    (:data:`RELATION_OPPOSITES`); the objects stay, the relation between them flips.

    Raises:
        DataError: the caption has no known relation phrase.
    """
    match = _RELATION_RE.search(caption)
    if match is None:
        raise DataError(
            f"cannot replace a relation in {caption!r}: it has none of "
            f"{sorted(RELATION_OPPOSITES)}."
        )
    old = match.group(0)
    new = RELATION_OPPOSITES[old.lower()]
    if old[:1].isupper():
        new = new[:1].upper() + new[1:]
    return caption[: match.start()] + new + caption[match.end() :]


def perturb_caption(caption: str, kind: PerturbKind, rng: Any = 0) -> str:
    """A hard-negative version of ``caption`` that keeps most of its words.

    Kinds:

    * ``"swap"`` -- word-order swap: the first and last content words (not in
      :data:`FUNCTION_WORDS`) trade places, so both captions use the same words
      ("a 3 left of a 7" -> "a 7 left of a 3"). Deterministic; ``rng`` is unused.
    * ``"attribute"`` -- the first attribute word (colour, size, ...: :data:`ATTRIBUTE_FAMILIES`)
      is replaced by another of its family drawn with ``rng``.
    * ``"number"`` -- the first number (a digit string or a word in :data:`NUMBER_WORDS`) is
      replaced by another number of the same form drawn with ``rng``.
    * ``"relation"`` -- the first relation phrase is replaced by its opposite
      (:func:`replace_relation`; "left of" -> "right of"). Deterministic.

    Articles before changed words are fixed ("a 7" <-> "an 8").

    Args:
        caption: the text to perturb.
        kind: one of :data:`PERTURB_KINDS`.
        rng: a ``numpy.random.Generator``, ``random.Random`` or an int seed.

    Raises:
        DataError: the caption has nothing the requested perturbation can change (e.g. fewer
            than two distinct content words for ``"swap"``).

    Example::

        >>> perturb_caption("a cat left of an airplane", "swap", 0)
        'an airplane left of a cat'
        >>> perturb_caption("a red 3", "attribute", 0) != "a red 3"
        True
    """
    if kind not in PERTURB_KINDS:
        raise ConfigError(f"perturb_caption: kind={kind!r}; choose one of {list(PERTURB_KINDS)}.")
    if kind == "relation":
        return replace_relation(caption)
    gen = _rng(rng)
    tokens = caption.split()
    if kind == "swap":
        content = [i for i, t in enumerate(tokens) if _core(t) and _core(t) not in FUNCTION_WORDS]
        if len(content) < 2 or _core(tokens[content[0]]) == _core(tokens[content[-1]]):
            raise DataError(
                f"perturb_caption: cannot swap words in {caption!r}: it needs two different "
                "content words (not articles, prepositions or spatial words)."
            )
        i, j = content[0], content[-1]
        wi, wj = _core(tokens[i]), _core(tokens[j])
        tokens[i], tokens[j] = _with_case(wj, tokens[i]), _with_case(wi, tokens[j])
        return " ".join(_fix_articles(tokens))
    for idx, tok in enumerate(tokens):
        word = _core(tok)
        if not word:
            continue
        options: list[str] | None = None
        if kind == "attribute":
            for fam in ATTRIBUTE_FAMILIES:
                if word in fam:
                    options = [w for w in fam if w != word]
                    break
        elif word.isdigit():
            value = int(word)
            options = [str(v) for v in range(max(0, value - 9), value + 10) if v != value]
            options = [o for o in options if len(o) == len(word)] or options
        elif word in NUMBER_WORDS:
            options = [w for w in NUMBER_WORDS if w != word]
        if options:
            tokens[idx] = _with_case(_choice(gen, options), tok)
            return " ".join(_fix_articles(tokens))
    what = "attribute word (colour, size, ...)" if kind == "attribute" else "number"
    raise DataError(f"perturb_caption: {caption!r} has no {what} to replace.")


def relation_caption(left: str, right: str) -> str:
    """``"a <left> left of a <right>"`` with the right articles."""
    return f"{article(left)} {left} left of {article(right)} {right}"


@dataclasses.dataclass(kw_only=True)
class CompositionalConfig(ImagePoolConfig):
    """Settings of :class:`CompositionalPairs` (see its docstring)."""

    split: Literal["train", "test"] = "train"
    mode: Literal["groups", "pairs"] = "groups"
    num_groups: int | None = None
    max_length: int = 12

    def validate(self) -> None:
        super().validate()
        self._check_int("max_length", minimum=4)
        if self.num_groups is not None:
            self._check_int("num_groups", minimum=1)


class CompositionalPairs(Dataset):
    """Winoground-style 2x2 groups built from two real images side by side.

    Real: the two objects' pixels and classes, and which one is on the left. Templated: the
    captions.

    Each group takes two real images of different classes ``X`` and ``Y`` and shows them in
    both orders: image 0 is ``(X | Y)`` and image 1 is ``(Y | X)``. Caption 0 is
    ``"a X left of a Y"`` and caption 1 is ``"a Y left of a X"``: the same words in another
    order, and caption ``i`` matches image ``i``. Train and test draw their images from
    disjoint per-class pools (seeded).

    ``mode="groups"`` items (``S = image_size``, ``L = max_length``):

    ==================  =========================  =====================================
    ``pixel_values``    ``(2, 3, S, 2S)`` float    image 0 ``(X|Y)``, image 1 ``(Y|X)``
    ``input_ids``       ``(2, L)`` long            captions 0 and 1
    ``attention_mask``  ``(2, L)`` long
    ``captions``        ``[str, str]``
    ``classes``         ``(2,)`` long              ``(X, Y)``
    ``image_index``     ``(2,)`` long              source indices of the X and Y images
    ``group_id``        ``()`` long
    ==================  =========================  =====================================

    ``mode="pairs"`` yields each group's two (image, caption) pairs as separate items (for
    contrastive training with hard negatives): ``pixel_values`` ``(3, S, 2S)``,
    ``input_ids`` / ``attention_mask`` ``(L,)`` for the matching caption,
    ``negative_input_ids`` / ``negative_attention_mask`` ``(L,)`` for its word-order swap
    (:func:`perturb_caption` with ``"swap"``), ``caption``, ``negative_caption``,
    ``classes`` ``(2,)`` (left, right), ``group_id`` and ``position`` (0 or 1 in the group).

    Example::

        >>> ds = CompositionalPairs(split="test", num_groups=8)
        >>> g = ds[0]
        >>> g["pixel_values"].shape, g["input_ids"].shape, sorted(g["captions"][0].split()) == sorted(g["captions"][1].split())
        (torch.Size([2, 3, 16, 32]), torch.Size([2, 12]), True)
    """

    def __init__(
        self,
        source: ImageSource | None = None,
        split: Literal["train", "test"] = "train",
        *,
        tokenizer: WordTokenizer | None = None,
        config: CompositionalConfig | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            config = CompositionalConfig(split=split, **settings)
        elif settings or split != "train":
            config = config.replace(split=split, **settings)
        self.config = config
        self.split = config.split
        self.mode = config.mode
        self.source = src = source if source is not None else digits()
        if src.num_classes < 2:
            raise ConfigError(
                f"CompositionalPairs needs at least 2 classes, got {src.class_names}."
            )
        self.class_names = list(src.class_names)
        self.tokenizer = (
            tokenizer
            if tokenizer is not None
            else WordTokenizer.from_texts(self.all_captions(), max_length=config.max_length)
        )
        train_pool, test_pool = split_pools(
            src, config.train_images_per_class, config.test_fraction, config.seed
        )
        self._build(train_pool if self.split == "train" else test_pool)

    def all_captions(self) -> list[str]:
        """Every caption the template can produce for this source (the tokenizer's corpus)."""
        names = self.class_names
        return [relation_caption(a, b) for a in names for b in names if a != b]

    def _build(self, pools: list[np.ndarray]) -> None:
        cfg = self.config
        code = 0 if self.split == "train" else 1
        n = cfg.num_groups if cfg.num_groups is not None else (1000 if code == 0 else 300)
        k = self.source.num_classes
        rng = make_rng(cfg.seed, "compositional", code)
        x = rng.integers(0, k, size=n)
        y = (x + 1 + rng.integers(0, k - 1, size=n)) % k
        xi = np.array([pools[c][rng.integers(len(pools[c]))] for c in x], np.int64)
        yi = np.array([pools[c][rng.integers(len(pools[c]))] for c in y], np.int64)
        s = cfg.image_size
        uniq, inverse = np.unique(np.concatenate([xi, yi]), return_inverse=True)
        tiles = prepared_images(self.source.subset(uniq), s)[torch.from_numpy(inverse)]
        gen = torch_generator(make_rng(cfg.seed, "compositional-noise", code))
        tiles = add_noise(tiles, cfg.noise_std, gen)
        tx, ty = tiles[:n], tiles[n:]
        self._pixels = torch.stack([torch.cat([tx, ty], 3), torch.cat([ty, tx], 3)], 1).contiguous()
        names = self.class_names
        self._captions = [
            [relation_caption(names[a], names[b]), relation_caption(names[b], names[a])]
            for a, b in zip(x, y)
        ]
        enc = self.tokenizer(
            [c for pair in self._captions for c in pair], max_length=cfg.max_length
        )
        self._input_ids = enc["input_ids"].view(n, 2, -1)
        self._attention = enc["attention_mask"].view(n, 2, -1)
        self._classes = torch.from_numpy(np.stack([x, y], 1).astype(np.int64))
        self._image_index = torch.from_numpy(np.stack([xi, yi], 1))

    @property
    def num_groups(self) -> int:
        return int(self._classes.shape[0])

    def __len__(self) -> int:
        return self.num_groups * (2 if self.mode == "pairs" else 1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i = i % len(self)
        if self.mode == "groups":
            return {
                "pixel_values": self._pixels[i],
                "input_ids": self._input_ids[i],
                "attention_mask": self._attention[i],
                "captions": list(self._captions[i]),
                "classes": self._classes[i],
                "image_index": self._image_index[i],
                "group_id": torch.tensor(i),
            }
        g, p = divmod(i, 2)
        return {
            "pixel_values": self._pixels[g, p],
            "input_ids": self._input_ids[g, p],
            "attention_mask": self._attention[g, p],
            "negative_input_ids": self._input_ids[g, 1 - p],
            "negative_attention_mask": self._attention[g, 1 - p],
            "caption": self._captions[g][p],
            "negative_caption": self._captions[g][1 - p],
            "classes": self._classes[g].flip(0) if p == 1 else self._classes[g],
            "group_id": torch.tensor(g),
            "position": torch.tensor(p),
        }

    def __repr__(self) -> str:
        return (
            f"CompositionalPairs(split={self.split!r}, mode={self.mode!r}, "
            f"groups={self.num_groups}, source={self.source.name!r})"
        )


__all__ = [
    "ATTRIBUTE_FAMILIES",
    "CompositionalConfig",
    "CompositionalPairs",
    "FUNCTION_WORDS",
    "NUMBER_WORDS",
    "PERTURB_KINDS",
    "RELATION_OPPOSITES",
    "perturb_caption",
    "relation_caption",
    "replace_relation",
]
