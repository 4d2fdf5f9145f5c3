"""Object-in-context bias: a target object beside a context object whose class co-occurs.

What is real: both objects are real images of a source (resized, made RGB, noised) and the
target label is the target image's class. What is constructed: the composite (two tiles side
by side, the target framed) and the co-occurrence statistics between target and context
classes, which this module sets on purpose.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ._common import (
    ImagePoolConfig,
    add_noise,
    make_rng,
    prepared_images,
    row,
    split_pools,
    torch_generator,
)
from .sources import ImageSource, digits

logger = logging.getLogger(__name__)


@dataclasses.dataclass(kw_only=True)
class ContextShiftConfig(ImagePoolConfig):
    """Settings of :class:`ContextShift` (see its docstring).

    Defaults: the partner class co-occurs with probability 0.9 in training; 16x16 tiles; the
    target tile is noisier (std 0.4) than the context tile (std 0.1), so context is the easier
    cue; 30 training images per class.
    """

    split: Literal["train", "test", "test_id"] = "train"
    cooccurrence: float = 0.9
    num_examples: int | None = None
    noise_std: float = 0.4
    context_noise_std: float = 0.1
    frame: bool = True
    train_images_per_class: int | None = 30

    def validate(self) -> None:
        super().validate()
        self._check_fraction("cooccurrence")
        self._check_positive("context_noise_std", allow_zero=True)
        if self.num_examples is not None:
            self._check_int("num_examples", minimum=1)


class ContextShift(Dataset):
    """Classify a target object shown beside a context object (the VC R-CNN setting).

    Real: both objects' pixels and classes. Constructed: the side-by-side composite, the
    target's frame and the class co-occurrence statistics.

    Each class ``c`` has a partner class ``partner[c]`` (a seeded derangement: never ``c``
    itself). In ``"train"`` the context object is of the partner class with probability
    ``cooccurrence`` and otherwise of a class drawn uniformly from the remaining ``K - 2``
    classes, so the measured co-occurrence rate is ``cooccurrence``. In ``"test"`` the context
    class is uniform over the ``K - 1`` classes other than the target's (co-occurrence rate
    ``1 / (K - 1)``). ``"test_id"`` draws held-out images (the test pool) with the training
    co-occurrence: the in-distribution control of ``"test"``. The target sits left or right at
    random (fair coin); with ``frame`` it gets a one-pixel white border so whole-image models
    know which object to classify. Train and test use disjoint images (a seeded per-class
    split).

    Args:
        source: an :class:`ImageSource` with at least 3 classes (default: digits).
        split: ``"train"``, ``"test"`` (uniform context) or ``"test_id"`` (held-out images,
            training co-occurrence).
        cooccurrence, seed, num_examples, image_size, noise_std, context_noise_std, frame,
        train_images_per_class, test_fraction: see :class:`ContextShiftConfig`;
            ``num_examples`` defaults to 2,000 (train) / 1,000 (test, test_id).
        config: a :class:`ContextShiftConfig` instead of the keyword arguments.

    Items (``S = image_size``):

    ===================  ======================  =========================================
    ``pixel_values``     ``(3, S, 2S)`` float    the composite image
    ``labels``           ``()`` long             target class
    ``context_class``    ``()`` long             context object's class
    ``bias_aligned``     ``()`` bool             ``context_class == partner[labels]``
    ``group``            ``()`` long             ``2 * labels + bias_aligned``
    ``target_position``  ``()`` long             0 = left, 1 = right
    ``boxes``            ``(2, 4)`` float        ``(x0, y0, x1, y1)`` pixels: target, context
    ``region_pixels``    ``(2, 3, S, S)`` float  crops of the composite at ``boxes``
    ``image_index``      ``(2,)`` long           source indices: target, context
    ===================  ======================  =========================================

    Example::

        >>> ds = ContextShift(split="train", cooccurrence=0.9, num_examples=32)
        >>> item = ds[0]
        >>> item["pixel_values"].shape, item["region_pixels"].shape, item["boxes"].shape
        (torch.Size([3, 16, 32]), torch.Size([2, 3, 16, 16]), torch.Size([2, 4]))
    """

    def __init__(
        self,
        source: ImageSource | None = None,
        split: Literal["train", "test", "test_id"] = "train",
        *,
        config: ContextShiftConfig | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            config = ContextShiftConfig(split=split, **settings)
        elif settings or split != "train":
            config = config.replace(split=split, **settings)
        self.config = config
        self.split = config.split
        self.source = src = source if source is not None else digits()
        k = src.num_classes
        if k < 3:
            raise ConfigError(
                f"ContextShift needs a source with at least 3 classes (partner plus others), "
                f"got {k}: {src.class_names}."
            )
        self.class_names = list(src.class_names)
        rng = make_rng(config.seed, "partners")
        while True:  # a derangement: no class is its own partner
            perm = rng.permutation(k)
            if not np.any(perm == np.arange(k)):
                break
        self.partner = torch.from_numpy(perm.astype(np.int64))
        train_pool, test_pool = split_pools(
            src, config.train_images_per_class, config.test_fraction, config.seed
        )
        self._build(train_pool if self.split == "train" else test_pool)

    def _build(self, pools: list[np.ndarray]) -> None:
        cfg = self.config
        k = self.source.num_classes
        code = {"train": 0, "test": 1, "test_id": 2}[self.split]
        n = cfg.num_examples if cfg.num_examples is not None else (2000 if code == 0 else 1000)
        follows_train = self.split in ("train", "test_id")  # the training co-occurrence
        rng = make_rng(cfg.seed, "context-examples", code)
        partner = self.partner.numpy()
        target = np.arange(n) % k
        target = target[rng.permutation(n)]
        context = np.empty(n, np.int64)
        for i, t in enumerate(target):
            others = [c for c in range(k) if c != t]
            if follows_train:
                if rng.random() < cfg.cooccurrence:
                    context[i] = partner[t]
                else:
                    rest = [c for c in others if c != partner[t]]
                    context[i] = rest[rng.integers(len(rest))]
            else:
                context[i] = others[rng.integers(len(others))]
        position = rng.integers(0, 2, size=n)
        t_idx = np.array([pools[c][rng.integers(len(pools[c]))] for c in target], np.int64)
        c_idx = np.array([pools[c][rng.integers(len(pools[c]))] for c in context], np.int64)

        s = cfg.image_size
        uniq, inverse = np.unique(np.concatenate([t_idx, c_idx]), return_inverse=True)
        tiles = prepared_images(self.source.subset(uniq), s)[torch.from_numpy(inverse)]
        gen = torch_generator(make_rng(cfg.seed, "context-noise", code))
        t_tiles = add_noise(tiles[:n].clone(), cfg.noise_std, gen)
        c_tiles = add_noise(tiles[n:].clone(), cfg.context_noise_std, gen)
        if cfg.frame:
            t_tiles[:, :, 0, :] = 1.0
            t_tiles[:, :, -1, :] = 1.0
            t_tiles[:, :, :, 0] = 1.0
            t_tiles[:, :, :, -1] = 1.0
        pos = torch.from_numpy(position).bool()[:, None, None, None]
        left = torch.where(pos, c_tiles, t_tiles)
        right = torch.where(pos, t_tiles, c_tiles)
        self._pixels = torch.cat([left, right], dim=3).contiguous()
        self._regions = torch.stack([t_tiles, c_tiles], dim=1).contiguous()
        tx = torch.from_numpy(position * s).float()
        cx = torch.from_numpy((1 - position) * s).float()
        zeros, full = torch.zeros(n), torch.full((n,), float(s))
        self._boxes = torch.stack(
            [torch.stack([tx, zeros, tx + s, full], 1), torch.stack([cx, zeros, cx + s, full], 1)],
            1,
        )
        self._labels = torch.from_numpy(target.astype(np.int64))
        self._context = torch.from_numpy(context)
        self._aligned = self._context == self.partner[self._labels]
        self._group = 2 * self._labels + self._aligned.long()
        self._position = torch.from_numpy(position.astype(np.int64))
        self._image_index = torch.from_numpy(np.stack([t_idx, c_idx], 1))

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return row(self.tensors(), i)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def group_names(self) -> list[str]:
        """Name of each group id ``2 * target + aligned``: the target class and whether its
        context is the partner class seen with it in training, e.g. ``"target 3, context 8
        (aligned)"`` and ``"target 3, other context (conflicting)"``."""
        names = []
        for c, name in enumerate(self.class_names):
            partner = self.class_names[int(self.partner[c])]
            names += [
                f"target {name}, other context (conflicting)",
                f"target {name}, context {partner} (aligned)",
            ]
        return names

    def cooccurrence_rate(self) -> float:
        """Measured fraction of examples whose context is the target's partner class."""
        return float(self._aligned.float().mean())

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every field for the whole dataset at once (``(N, ...)`` tensors)."""
        return {
            "pixel_values": self._pixels,
            "labels": self._labels,
            "context_class": self._context,
            "bias_aligned": self._aligned,
            "group": self._group,
            "target_position": self._position,
            "boxes": self._boxes,
            "region_pixels": self._regions,
            "image_index": self._image_index,
        }

    def __repr__(self) -> str:
        return (
            f"ContextShift(split={self.split!r}, n={len(self)}, source={self.source.name!r}, "
            f"cooccurrence={self.config.cooccurrence})"
        )


__all__ = ["ContextShift", "ContextShiftConfig"]
