"""VQA under changing answer priors: the VQA-CP recipe over real images.

What is real: the pixels (real images from an :class:`~causalvl.datasets.sources.ImageSource`,
resized, recoloured and noised by the documented pixel operations) and the labels they carry
(the image's class, and the colour the pixels were actually tinted with). What is templated:
the questions, and therefore the answers' distribution per question type, which this module
sets on purpose so the question alone predicts the answer in training but not at test time.
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
    COLOURS,
    ImagePoolConfig,
    add_noise,
    article,
    make_rng,
    prepared_images,
    row,
    split_pools,
    stratified_counts,
    superclass_map,
    tint,
    torch_generator,
)
from .sources import ImageSource, digits
from .tokenizer import WordTokenizer

logger = logging.getLogger(__name__)

Split = Literal["train", "test", "test_id", "balanced", "test_uniform", "test_random"]
#: every split name, in the order of their random-stream codes
SPLITS: tuple[str, ...] = ("train", "test", "test_id", "balanced", "test_uniform", "test_random")
#: splits drawn from the training image pool (the others use the held-out images)
TRAINING_SPLITS = ("train", "balanced")

#: question type name -> kind ("class", "yesno", "colour", "superclass"); order = type ids.
QUESTION_TYPES: dict[str, str] = {
    "what_class": "class",
    "which_class": "class",
    "is_this": "yesno",
    "does_show": "yesno",
    "colour": "colour",
    "superclass": "superclass",
}


@dataclasses.dataclass(kw_only=True)
class PriorShiftConfig(ImagePoolConfig):
    """Settings of :class:`PriorShiftVQA` (validated; see the class docstring for meanings).

    Defaults make the language prior the easiest signal: 20 training images per class, 16x16
    pixels with Gaussian noise of std 0.35 and a faint tint (0.25), and 80% of each question
    type's training answers on the prior-favoured answers.
    """

    split: Split = "train"
    prior_strength: float = 0.8
    num_examples: int | None = None
    noise_std: float = 0.35
    tint_strength: float = 0.25
    train_images_per_class: int | None = 20
    favoured_fraction: float = 0.2
    question_types: tuple[str, ...] | None = None
    max_length: int = 12

    def validate(self) -> None:
        super().validate()
        self._check_fraction("prior_strength", "favoured_fraction")
        self._check_int("max_length", minimum=4)
        self._check_fraction("tint_strength")
        if self.num_examples is not None:
            self._check_int("num_examples", minimum=1)
        self._check_subset("question_types", QUESTION_TYPES)


class PriorShiftVQA(Dataset):
    """Templated VQA over real images whose answer priors shift between train and test.

    Real: the pixels (source images, really recoloured and noised) and the facts the answers
    state (class, tint colour, parity / superclass). Templated: the questions and the answer
    distribution per question type.

    Each example asks one question about one image. Question types (ids in this order, those
    the source supports):

    * ``what_class`` -- "what digit is this?" -> the class name;
    * ``which_class`` -- "which digit is shown?" -> the class name;
    * ``is_this`` -- "is this a 3?" -> yes / no;
    * ``does_show`` -- "does the picture show a 3?" -> yes / no;
    * ``colour`` -- "what colour is the digit?" -> red / green / blue: every image is really
      recoloured, ``x * ((1 - t) + t * rgb)`` with ``t = tint_strength``;
    * ``superclass`` -- "is the digit even or odd?" (digits), "is it an animal or a vehicle?"
      (CIFAR-10), or a ``superclasses`` mapping you pass.

    For ``"object"`` sources the question says "object" instead of "digit".

    **Priors.** For each question type with ``K`` possible answers, ``m = max(1,
    round(favoured_fraction * K))`` (at most ``K // 2``) answers are *train-favoured* and another
    ``m`` (disjoint) are *test-favoured* (chosen by ``seed``). With ``s = prior_strength`` the answer
    distribution of a type is ``(1 - s) / K + s / m * [a favoured]``: train-favoured for
    ``"train"`` and ``"test_id"``, test-favoured for ``"test"``, uniform for ``"balanced"`` (an
    oracle training split). Answer counts are stratified, so the measured distributions match
    these up to rounding.

    **Out-of-distribution splits.** Held-out images under three test priors:

    * ``"test_uniform"`` (the honest primary split): every answer of a type equally likely. No
      rule that ignores the image can beat ``1 / K`` per type on it.
    * ``"test_random"`` (VQA-CP style secondary split): per type, a random answer distribution
      (a ``Dirichlet(1)`` draw, fixed by ``seed``) whose favoured answers overlap the training
      ones by chance, so neither following nor avoiding the training prior wins systematically.
    * ``"test"`` (legacy): the test-favoured answers are disjoint from the training-favoured
      ones. The blind rule "never give the training-favoured answer" scores well above chance
      here (on two-answer types it is always right when ``s = 1``), so a method that merely
      avoids the training prior looks good: use it only beside ``"test_uniform"``.

    **Images.** Each class's images are split once per ``seed`` into a held-out pool
    (``test_fraction``) used by every test split, and a training pool of
    ``train_images_per_class`` images used by ``"train"`` and ``"balanced"``: test images are
    never seen in training. Images are resized to ``image_size``, made RGB, tinted, and get
    fresh Gaussian noise (``noise_std``) per example. These weaken the visual evidence on
    purpose so that the prior is the easier signal (the VQA-CP setting: a plain model scores
    far lower on ``"test"`` than on ``"test_id"``).

    **Bias alignment.** ``bias_aligned`` is true when the answer is one of its type's
    train-favoured answers; ``group = 2 * question_type + bias_aligned``.

    Args:
        source: an :class:`ImageSource` (default: :func:`~causalvl.datasets.digits`).
        split: ``"train"``, ``"test_id"``, ``"test_uniform"``, ``"test_random"``, ``"test"`` or
            ``"balanced"``.
        prior_strength, seed, num_examples, image_size, noise_std, tint_strength,
        train_images_per_class, test_fraction, favoured_fraction, question_types, max_length:
            see :class:`PriorShiftConfig`; ``num_examples`` defaults to 3,000 for training
            splits and 1,500 for test splits.
        superclasses: optional class name -> superclass name mapping.
        tokenizer: a :class:`WordTokenizer` to share; by default one is built from every
            question the templates can produce (identical for all splits and seeds).
        config: a :class:`PriorShiftConfig` instead of the keyword arguments.

    Items are dicts:

    ==================  =====================  ==============================================
    ``pixel_values``    ``(3, S, S)`` float    the recoloured, noised real image
    ``input_ids``       ``(L,)`` long          question tokens, padded to ``max_length``
    ``attention_mask``  ``(L,)`` long          1 on real tokens
    ``labels``          ``()`` long            answer id in :attr:`answers`
    ``question_type``   ``()`` long            id in :attr:`question_types`
    ``bias_aligned``    ``()`` bool            answer is train-favoured for its type
    ``group``           ``()`` long            ``2 * question_type + bias_aligned``
    ``image_index``     ``()`` long            index of the image in ``source``
    ``image_label``     ``()`` long            the image's class id
    ``colour``          ``()`` long            tint colour id (``red``, ``green``, ``blue``)
    ``question``        ``str``
    ``answer``          ``str``
    ==================  =====================  ==============================================

    Example::

        >>> from torch.utils.data import DataLoader
        >>> from causalvl.datasets import collate
        >>> train = PriorShiftVQA(split="train", num_examples=64)
        >>> batch = next(iter(DataLoader(train, batch_size=8, collate_fn=collate)))
        >>> batch["pixel_values"].shape, batch["input_ids"].shape, batch["labels"].shape
        (torch.Size([8, 3, 16, 16]), torch.Size([8, 12]), torch.Size([8]))
        >>> train.train_prior().shape == (len(train.question_types), len(train.answers))
        True
    """

    def __init__(
        self,
        source: ImageSource | None = None,
        split: Split = "train",
        *,
        superclasses: Mapping[str, str] | None = None,
        tokenizer: WordTokenizer | None = None,
        config: PriorShiftConfig | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            config = PriorShiftConfig(split=split, **settings)
        elif settings or split != "train":
            config = config.replace(split=split, **settings)
        self.config = config
        self.source = source if source is not None else digits()
        self.split = config.split
        src = self.source

        # -- question types, answers -----------------------------------------------------
        sup = superclass_map(src, superclasses)
        wanted = config.question_types or tuple(QUESTION_TYPES)
        if sup is None and "superclass" in wanted:
            if config.question_types is not None:
                raise ConfigError(
                    "PriorShiftConfig.question_types includes 'superclass' but the source's "
                    f"classes {src.class_names} have no known superclasses; pass "
                    "superclasses={class name: superclass name}."
                )
            wanted = tuple(q for q in wanted if q != "superclass")
        self.question_types: list[str] = [q for q in QUESTION_TYPES if q in wanted]
        self._sup_names, self._class_sup = sup if sup is not None else ([], [])
        self.noun = "digit" if all(n.isdigit() for n in src.class_names) else "object"
        self.answers: list[str] = []
        for group in (src.class_names, ["yes", "no"], list(COLOURS), self._sup_names):
            for a in group:
                if a in self.answers:
                    raise ConfigError(
                        f"answer {a!r} would appear twice in the answer vocabulary (a class name "
                        "clashes with yes/no, a colour or a superclass); rename the class."
                    )
                self.answers.append(a)
        self.answer_to_id = {a: i for i, a in enumerate(self.answers)}
        self._type_answers: list[list[int]] = [self._answers_of(q) for q in self.question_types]

        # -- priors ----------------------------------------------------------------------
        rng = make_rng(config.seed, "favoured-answers")
        self._favoured: dict[str, list[list[int]]] = {"train": [], "test": []}
        for ans in self._type_answers:
            k = len(ans)
            m = max(1, int(round(config.favoured_fraction * k)))
            m = min(m, k // 2)
            perm = rng.permutation(k)
            self._favoured["train"].append([ans[i] for i in perm[:m]])
            self._favoured["test"].append([ans[i] for i in perm[m : 2 * m]])

        # -- tokenizer -------------------------------------------------------------------
        self.tokenizer = (
            tokenizer
            if tokenizer is not None
            else WordTokenizer.from_texts(self.all_questions(), max_length=config.max_length)
        )

        # -- the examples ----------------------------------------------------------------
        self._train_pool, self._test_pool = split_pools(
            src, config.train_images_per_class, config.test_fraction, config.seed
        )
        plan = self._plan(self.split)
        self._build(plan)
        logger.debug("PriorShiftVQA(%s): %d examples", self.split, len(self))

    # -- templates ------------------------------------------------------------------------
    def _answers_of(self, qtype: str) -> list[int]:
        kind = QUESTION_TYPES[qtype]
        names = {
            "class": self.source.class_names,
            "yesno": ["yes", "no"],
            "colour": list(COLOURS),
            "superclass": self._sup_names,
        }[kind]
        return [self.answer_to_id[a] for a in names]

    def _question(self, qtype: str, named_class: int) -> str:
        noun = self.noun
        name = self.source.class_names[named_class] if named_class >= 0 else ""
        if qtype == "what_class":
            return f"what {noun} is this?"
        if qtype == "which_class":
            return f"which {noun} is shown?"
        if qtype == "is_this":
            return f"is this {article(name)} {name}?"
        if qtype == "does_show":
            return f"does the picture show {article(name)} {name}?"
        if qtype == "colour":
            return f"what colour is the {noun}?"
        sups = self._sup_names
        if sups == ["even", "odd"]:
            return f"is the {noun} even or odd?"
        if len(sups) == 2:
            a, b = sups
            return f"is it {article(a)} {a} or {article(b)} {b}?"
        return f"what kind of {noun} is it?"

    def all_questions(self) -> list[str]:
        """Every question the templates can produce for this source (the tokenizer's corpus)."""
        out = []
        for q in self.question_types:
            if QUESTION_TYPES[q] == "yesno":
                out.extend(self._question(q, c) for c in range(self.source.num_classes))
            else:
                out.append(self._question(q, -1))
        return out

    # -- priors ---------------------------------------------------------------------------
    def configured_prior(self, split: str | None = None) -> torch.Tensor:
        """The answer distribution the recipe sets for ``split`` (default: this split).

        Returns:
            ``(num_question_types, num_answers)`` float; each row sums to 1 over the type's
            possible answers.
        """
        split = self.split if split is None else split
        if split not in SPLITS:
            raise ConfigError(f"split={split!r}; choose one of {list(SPLITS)}.")
        s = self.config.prior_strength
        out = torch.zeros(len(self.question_types), len(self.answers), dtype=torch.float64)
        random_rows = make_rng(self.config.seed, "test-random-prior")
        for t, ans in enumerate(self._type_answers):
            k = len(ans)
            out[t, ans] = 1.0 / k
            draw = random_rows.dirichlet(np.ones(k))  # drawn for every type: rows stay stable
            if split == "test_random":
                out[t, ans] = torch.from_numpy(draw)
            if split in ("balanced", "test_uniform", "test_random"):
                continue
            fav = self._favoured["test" if split == "test" else "train"][t]
            out[t, ans] *= 1 - s
            out[t, fav] += s / len(fav)
        return out.float()

    def train_prior(self, smoothing: float = 0.0) -> torch.Tensor:
        """Answer distribution per question type measured on the ``"train"`` split's examples
        (the prior LMH / GGE-style objectives need), whatever split this dataset is.

        Args:
            smoothing: added to every count of a type's possible answers before normalising.

        Returns:
            ``(num_question_types, num_answers)`` float, rows summing to 1.
        """
        plan = self._plan("train")
        return self._measure(plan["qtype"], plan["answer"], smoothing)

    def split_prior(self, smoothing: float = 0.0) -> torch.Tensor:
        """Like :meth:`train_prior`, measured on this dataset's own examples."""
        return self._measure(self._qtype.numpy(), self._labels.numpy(), smoothing)

    def _measure(self, qtype: np.ndarray, answer: np.ndarray, smoothing: float) -> torch.Tensor:
        counts = torch.zeros(len(self.question_types), len(self.answers), dtype=torch.float64)
        np.add.at(counts.numpy(), (qtype, answer), 1.0)
        for t, ans in enumerate(self._type_answers):
            counts[t, ans] += smoothing
        return (counts / counts.sum(1, keepdim=True).clamp_min(1e-12)).float()

    def type_answer_mask(self) -> torch.Tensor:
        """``(num_question_types, num_answers)`` bool: which answers each type can have."""
        mask = torch.zeros(len(self.question_types), len(self.answers), dtype=torch.bool)
        for t, ans in enumerate(self._type_answers):
            mask[t, ans] = True
        return mask

    def favoured_answers(self, split: Literal["train", "test"] = "train") -> list[list[str]]:
        """Per question type, the answers the ``split`` prior favours."""
        return [[self.answers[a] for a in fav] for fav in self._favoured[split]]

    # -- sampling -------------------------------------------------------------------------
    def _plan(self, split: str) -> dict[str, np.ndarray]:
        """Question types and answers (stratified) plus the per-example image choices."""
        cfg = self.config
        training = split in TRAINING_SPLITS
        n = cfg.num_examples if cfg.num_examples is not None else (3000 if training else 1500)
        split_code = SPLITS.index(split)
        prior = self.configured_prior(split).double().numpy()
        n_types = len(self.question_types)
        per_type = stratified_counts(np.full(n_types, 1.0 / n_types), n)
        qtype, answer = [], []
        for t in range(n_types):
            counts = stratified_counts(prior[t], int(per_type[t]))
            for a in np.flatnonzero(counts):
                qtype.extend([t] * int(counts[a]))
                answer.extend([int(a)] * int(counts[a]))
        qtype_a = np.asarray(qtype, dtype=np.int64)
        answer_a = np.asarray(answer, dtype=np.int64)
        order = make_rng(cfg.seed, "order", split_code).permutation(n)
        qtype_a, answer_a = qtype_a[order], answer_a[order]

        rng = make_rng(cfg.seed, "attributes", split_code)
        pools = self._train_pool if training else self._test_pool
        num_classes = self.source.num_classes
        colour_names = list(COLOURS)
        img_class = np.empty(n, np.int64)
        named = np.full(n, -1, np.int64)
        colour = rng.integers(0, len(colour_names), size=n)
        for i in range(n):
            kind = QUESTION_TYPES[self.question_types[qtype_a[i]]]
            a = self.answers[answer_a[i]]
            if kind == "class":
                img_class[i] = self.source.class_names.index(a)
            elif kind == "yesno":
                named[i] = rng.integers(num_classes)
                if a == "yes":
                    img_class[i] = named[i]
                else:
                    other = rng.integers(num_classes - 1)
                    img_class[i] = other + (other >= named[i])
            elif kind == "colour":
                img_class[i] = rng.integers(num_classes)
                colour[i] = colour_names.index(a)
            else:
                members = [
                    c for c in range(num_classes) if self._sup_names[self._class_sup[c]] == a
                ]
                img_class[i] = members[rng.integers(len(members))]
        image_index = np.array([pools[c][rng.integers(len(pools[c]))] for c in img_class], np.int64)
        return {
            "qtype": qtype_a,
            "answer": answer_a,
            "image_class": img_class,
            "named": named,
            "colour": colour.astype(np.int64),
            "image_index": image_index,
            "split_code": np.asarray(split_code),
        }

    def _build(self, plan: dict[str, np.ndarray]) -> None:
        cfg = self.config
        uniq, inverse = np.unique(plan["image_index"], return_inverse=True)
        base = prepared_images(self.source.subset(uniq), cfg.image_size)[torch.from_numpy(inverse)]
        rgb = torch.tensor(list(COLOURS.values()), dtype=torch.float32)[
            torch.from_numpy(plan["colour"])
        ]
        pixels = tint(base, rgb, cfg.tint_strength)
        gen = torch_generator(make_rng(cfg.seed, "noise", int(plan["split_code"])))
        self._pixels = add_noise(pixels, cfg.noise_std, gen).contiguous()

        self._questions = [
            self._question(self.question_types[t], int(c))
            for t, c in zip(plan["qtype"], plan["named"])
        ]
        enc_cache: dict[str, tuple[list[int], list[int]]] = {}
        for q in self._questions:
            if q not in enc_cache:
                enc_cache[q] = self.tokenizer.encode(q, max_length=cfg.max_length)
        self._input_ids = torch.tensor([enc_cache[q][0] for q in self._questions], dtype=torch.long)
        self._attention = torch.tensor([enc_cache[q][1] for q in self._questions], dtype=torch.long)
        self._labels = torch.from_numpy(plan["answer"])
        self._qtype = torch.from_numpy(plan["qtype"])
        fav = [set(f) for f in self._favoured["train"]]
        self._aligned = torch.tensor(
            [int(a) in fav[t] for t, a in zip(plan["qtype"], plan["answer"])], dtype=torch.bool
        )
        self._group = 2 * self._qtype + self._aligned.long()
        self._image_index = torch.from_numpy(plan["image_index"])
        self._image_label = torch.from_numpy(plan["image_class"])
        self._colour = torch.from_numpy(plan["colour"])

    # -- Dataset --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = row(self.tensors(), i)
        item["question"] = self._questions[i]
        item["answer"] = self.answers[int(item["labels"])]
        return item

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    @property
    def group_names(self) -> list[str]:
        """Name of each group id: ``"<question type>/<aligned|conflicting>"``."""
        return [f"{q}/{s}" for q in self.question_types for s in ("conflicting", "aligned")]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor field for the whole dataset at once (``(N, ...)``), for fast training."""
        return {
            "pixel_values": self._pixels,
            "input_ids": self._input_ids,
            "attention_mask": self._attention,
            "labels": self._labels,
            "question_type": self._qtype,
            "bias_aligned": self._aligned,
            "group": self._group,
            "image_index": self._image_index,
            "image_label": self._image_label,
            "colour": self._colour,
        }

    def __repr__(self) -> str:
        return (
            f"PriorShiftVQA(split={self.split!r}, n={len(self)}, source={self.source.name!r}, "
            f"prior_strength={self.config.prior_strength}, types={len(self.question_types)}, "
            f"answers={len(self.answers)})"
        )


__all__ = ["QUESTION_TYPES", "SPLITS", "PriorShiftConfig", "PriorShiftVQA"]
