"""Comparative (NLVR2-style) statements about a pair of real images.

What is real: both images and their classes; whether a statement is true is computed from
those classes. What is templated: the statements.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ._common import (
    ImagePoolConfig,
    add_noise,
    article,
    make_rng,
    prepared_images,
    row,
    split_pools,
    stratified_counts,
    superclass_map,
    torch_generator,
)
from .sources import ImageSource, digits
from .tokenizer import WordTokenizer

logger = logging.getLogger(__name__)

#: Statement types in id order; ``larger`` needs numeric class names, ``both_super`` needs
#: superclasses (parity for digits, animal/vehicle for CIFAR-10, or a mapping you pass).
STATEMENT_TYPES: tuple[str, ...] = ("left_is", "right_is", "same", "larger", "both_super")


@dataclasses.dataclass(kw_only=True)
class ComparativeConfig(ImagePoolConfig):
    """Settings of :class:`ComparativePairs` (see its docstring)."""

    split: Literal["train", "test"] = "train"
    num_examples: int | None = None
    statement_types: tuple[str, ...] | None = None
    max_length: int = 14

    def validate(self) -> None:
        super().validate()
        self._check_int("max_length", minimum=4)
        if self.num_examples is not None:
            self._check_int("num_examples", minimum=1)
        self._check_subset("statement_types", STATEMENT_TYPES)


class ComparativePairs(Dataset):
    """True/false statements about two real images (left, right), NLVR2-style.

    Real: both images and their classes (each label is computed from them). Templated: the
    statements.

    Statement types (those the source supports, in this id order):

    * ``left_is`` / ``right_is`` -- "the left image shows a 3";
    * ``same`` -- "both images show the same digit" (``object`` for non-digit sources);
    * ``larger`` -- "the left image shows a larger digit than the right" (numeric class names);
    * ``both_super`` -- "both digits are even" / "both images show an animal".

    Statement types are equally frequent and each is true for exactly half of its examples
    (stratified), so neither the statement nor its type predicts the label. Train and test use
    disjoint images.

    Items (``S = image_size``, ``L = max_length``):

    =======================  ====================  =======================================
    ``pixel_values_left``    ``(3, S, S)`` float
    ``pixel_values_right``   ``(3, S, S)`` float
    ``input_ids``            ``(L,)`` long          the statement
    ``attention_mask``       ``(L,)`` long
    ``labels``               ``()`` long            1 = true, 0 = false
    ``statement_type``       ``()`` long            id in :attr:`statement_types`
    ``group``                ``()`` long            ``2 * statement_type + labels``
    ``left_class``           ``()`` long
    ``right_class``          ``()`` long
    ``image_index``          ``(2,)`` long          source indices (left, right)
    ``statement``            ``str``
    =======================  ====================  =======================================

    Example::

        >>> ds = ComparativePairs(split="train", num_examples=40)
        >>> it = ds[0]
        >>> it["pixel_values_left"].shape, it["labels"].item() in (0, 1)
        (torch.Size([3, 16, 16]), True)
    """

    def __init__(
        self,
        source: ImageSource | None = None,
        split: Literal["train", "test"] = "train",
        *,
        superclasses: Mapping[str, str] | None = None,
        tokenizer: WordTokenizer | None = None,
        config: ComparativeConfig | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            config = ComparativeConfig(split=split, **settings)
        elif settings or split != "train":
            config = config.replace(split=split, **settings)
        self.config = config
        self.split = config.split
        self.source = src = source if source is not None else digits()
        if src.num_classes < 2:
            raise ConfigError(f"ComparativePairs needs at least 2 classes, got {src.class_names}.")
        self.class_names = list(src.class_names)
        self._numeric = all(n.isdigit() for n in src.class_names)
        self.noun = "digit" if self._numeric else "object"
        sup = superclass_map(src, superclasses)
        self._sup_names, self._class_sup = sup if sup is not None else ([], [])
        supported = {"left_is", "right_is", "same"}
        if self._numeric:
            supported.add("larger")
        if sup is not None:
            supported.add("both_super")
        wanted = config.statement_types or STATEMENT_TYPES
        missing = [t for t in wanted if t not in supported]
        if missing and config.statement_types is not None:
            raise ConfigError(
                f"ComparativeConfig.statement_types asks for {missing}, which this source does "
                f"not support ('larger' needs numeric class names, 'both_super' superclasses)."
            )
        self.statement_types: list[str] = [
            t for t in STATEMENT_TYPES if t in wanted and t in supported
        ]
        self.tokenizer = (
            tokenizer
            if tokenizer is not None
            else WordTokenizer.from_texts(self.all_statements(), max_length=config.max_length)
        )
        train_pool, test_pool = split_pools(
            src, config.train_images_per_class, config.test_fraction, config.seed
        )
        self._build(train_pool if self.split == "train" else test_pool)

    # -- templates ------------------------------------------------------------------------
    def _statement(self, stype: str, arg: int) -> str:
        if stype in ("left_is", "right_is"):
            name = self.class_names[arg]
            side = "left" if stype == "left_is" else "right"
            return f"the {side} image shows {article(name)} {name}"
        if stype == "same":
            return f"both images show the same {self.noun}"
        if stype == "larger":
            return "the left image shows a larger digit than the right"
        sup = self._sup_names[arg]
        if self._numeric:
            return f"both digits are {sup}"
        return f"both images show {article(sup)} {sup}"

    def all_statements(self) -> list[str]:
        """Every statement the templates can produce (the tokenizer's corpus)."""
        out = []
        for t in self.statement_types:
            if t in ("left_is", "right_is"):
                out.extend(self._statement(t, c) for c in range(len(self.class_names)))
            elif t == "both_super":
                out.extend(self._statement(t, s) for s in range(len(self._sup_names)))
            else:
                out.append(self._statement(t, 0))
        return out

    # -- sampling -------------------------------------------------------------------------
    def _build(self, pools: list[np.ndarray]) -> None:
        cfg = self.config
        code = 0 if self.split == "train" else 1
        n = cfg.num_examples if cfg.num_examples is not None else (2000 if code == 0 else 1000)
        k = len(self.class_names)
        rng = make_rng(cfg.seed, "comparative", code)
        n_types = len(self.statement_types)
        per_type = stratified_counts(np.full(n_types, 1.0 / n_types), n)
        stype, label = [], []
        for t in range(n_types):
            m = int(per_type[t])
            stype.extend([t] * m)
            label.extend([1] * (m - m // 2) + [0] * (m // 2))
        order = rng.permutation(n)
        stype_a = np.asarray(stype, np.int64)[order]
        label_a = np.asarray(label, np.int64)[order]
        left = np.empty(n, np.int64)
        right = np.empty(n, np.int64)
        arg = np.zeros(n, np.int64)

        def other(c: int) -> int:
            o = int(rng.integers(k - 1))
            return o + (o >= c)

        for i in range(n):
            t, y = self.statement_types[stype_a[i]], bool(label_a[i])
            if t in ("left_is", "right_is"):
                named = int(rng.integers(k))
                arg[i] = named
                shown = named if y else other(named)
                free = int(rng.integers(k))
                left[i], right[i] = (shown, free) if t == "left_is" else (free, shown)
            elif t == "same":
                left[i] = rng.integers(k)
                right[i] = left[i] if y else other(int(left[i]))
            elif t == "larger":
                a, b = sorted(
                    rng.choice(k, size=2, replace=False).tolist(),
                    key=lambda c: int(self.class_names[c]),
                )
                left[i], right[i] = (b, a) if y else (a, b)
            else:
                s = int(rng.integers(len(self._sup_names)))
                arg[i] = s
                members = [c for c in range(k) if self._class_sup[c] == s]
                outside = [c for c in range(k) if self._class_sup[c] != s]
                if y:
                    left[i] = members[rng.integers(len(members))]
                    right[i] = members[rng.integers(len(members))]
                else:
                    a = outside[rng.integers(len(outside))]
                    b = int(rng.integers(k))
                    left[i], right[i] = (a, b) if rng.random() < 0.5 else (b, a)
        li = np.array([pools[c][rng.integers(len(pools[c]))] for c in left], np.int64)
        ri = np.array([pools[c][rng.integers(len(pools[c]))] for c in right], np.int64)
        s = cfg.image_size
        uniq, inverse = np.unique(np.concatenate([li, ri]), return_inverse=True)
        tiles = prepared_images(self.source.subset(uniq), s)[torch.from_numpy(inverse)]
        tiles = add_noise(
            tiles, cfg.noise_std, torch_generator(make_rng(cfg.seed, "comparative-noise", code))
        )
        self._left_pixels, self._right_pixels = tiles[:n].contiguous(), tiles[n:].contiguous()
        self._statements = [
            self._statement(self.statement_types[t], int(a)) for t, a in zip(stype_a, arg)
        ]
        enc = self.tokenizer(self._statements, max_length=cfg.max_length)
        self._input_ids, self._attention = enc["input_ids"], enc["attention_mask"]
        self._labels = torch.from_numpy(label_a)
        self._stype = torch.from_numpy(stype_a)
        self._group = 2 * self._stype + self._labels
        self._left, self._right = torch.from_numpy(left), torch.from_numpy(right)
        self._image_index = torch.from_numpy(np.stack([li, ri], 1))

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = row(self.tensors(), i)
        item["statement"] = self._statements[i]
        return item

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor field for the whole dataset at once (``(N, ...)``)."""
        return {
            "pixel_values_left": self._left_pixels,
            "pixel_values_right": self._right_pixels,
            "input_ids": self._input_ids,
            "attention_mask": self._attention,
            "labels": self._labels,
            "statement_type": self._stype,
            "group": self._group,
            "left_class": self._left,
            "right_class": self._right,
            "image_index": self._image_index,
        }

    def __repr__(self) -> str:
        return (
            f"ComparativePairs(split={self.split!r}, n={len(self)}, source={self.source.name!r}, "
            f"types={self.statement_types})"
        )


__all__ = ["STATEMENT_TYPES", "ComparativeConfig", "ComparativePairs"]
