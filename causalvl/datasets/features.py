"""Precomputed frozen features of a bias construction: the realistic frozen-feature VQA setting.

:class:`FeatureVQA` replaces each example's pixels and token ids by fixed feature vectors from
real pretrained encoders (EfficientNet-Lite0 for the image, all-MiniLM-L6-v2 for the question;
see :mod:`causalvl.pretrained`) and keeps every metadata field, so a small answer head
(:class:`~causalvl.models.FrozenFeatureVQA`) trains on it in seconds and every intervention and
diagnostic works unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, InterventionStateError
from ._common import row
from .prior_shift import PriorShiftVQA

logger = logging.getLogger(__name__)

_MODEL_KEYS = ("pixel_values", "input_ids", "attention_mask")


class FeatureVQA(Dataset):
    """VQA examples as frozen image and question features plus their metadata.

    Build one from a :class:`PriorShiftVQA` with :meth:`from_prior_shift` (features come from
    the real pretrained encoders of :mod:`causalvl.pretrained`, cached on disk), or directly
    from tensors you computed yourself.

    Args:
        image_features: ``(N, D_img)`` float (1280 for EfficientNet-Lite0).
        question_features: ``(N, D_txt)`` float (384 for all-MiniLM-L6-v2).
        labels: ``(N,)`` long answer ids (or ``(N, A)`` float soft scores).
        metadata: further ``(N, ...)`` tensor columns (``question_type``, ``bias_aligned``,
            ``group``, ``image_index`` ...), kept as they are.
        answers: the answer vocabulary (``len(answers)`` = number of answers).
        question_types: names of the question type ids.
        questions: the ``N`` question strings (optional).
        group_names: names of the group ids (optional; default ``"group <id>"``).
        source: the dataset the features were computed from (gives :meth:`train_prior` and the
            other prior tables).

    Items are dicts with ``image_features`` ``(D_img,)``, ``question_features`` ``(D_txt,)``,
    ``labels`` and every metadata column (``()`` tensors), plus ``question`` / ``answer``
    strings when known. From :meth:`from_prior_shift` the metadata columns are those of
    :class:`PriorShiftVQA`: ``question_type``, ``bias_aligned``, ``group``, ``image_index``,
    ``image_label``, ``colour``.

    Example::

        >>> import torch
        >>> ds = FeatureVQA(torch.rand(4, 6), torch.rand(4, 5), torch.tensor([0, 1, 0, 1]),
        ...                 {"group": torch.tensor([0, 1, 0, 1])}, answers=["yes", "no"])
        >>> sorted(ds[0]), ds.tensors()["image_features"].shape
        (['answer', 'group', 'image_features', 'labels', 'question_features'], torch.Size([4, 6]))
    """

    def __init__(
        self,
        image_features: torch.Tensor,
        question_features: torch.Tensor,
        labels: torch.Tensor,
        metadata: Mapping[str, torch.Tensor] | None = None,
        *,
        answers: Sequence[str],
        question_types: Sequence[str] | None = None,
        questions: Sequence[str] | None = None,
        group_names: Sequence[str] | None = None,
        source: Any = None,
    ) -> None:
        columns: dict[str, torch.Tensor] = {}
        for name, value in (
            ("image_features", image_features),
            ("question_features", question_features),
        ):
            if not torch.is_tensor(value) or value.dim() != 2 or not value.is_floating_point():
                shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise DataError(f"{name} must be a float (N, D) tensor, got {shape}.")
            columns[name] = value.float()
        if not torch.is_tensor(labels) or labels.dim() not in (1, 2):
            raise DataError(
                "labels must be an (N,) long tensor of answer ids or (N, num_answers) soft "
                f"scores, got {tuple(labels.shape) if torch.is_tensor(labels) else type(labels)}."
            )
        columns["labels"] = labels
        for key, value in (metadata or {}).items():
            if key in columns or key in _MODEL_KEYS:
                raise DataError(
                    f"metadata column {key!r} clashes with a feature / model input field; "
                    "rename it."
                )
            if not torch.is_tensor(value):
                raise DataError(
                    f"metadata column {key!r} must be a tensor, got {type(value).__name__}."
                )
            columns[key] = value
        n = int(columns["image_features"].shape[0])
        wrong = {k: tuple(v.shape) for k, v in columns.items() if v.dim() == 0 or v.shape[0] != n}
        if wrong:
            raise DataError(
                f"every column must have {n} rows (the number of image features); got shapes "
                f"{wrong}."
            )
        answers = [str(a) for a in answers]
        if not answers:
            raise DataError("answers is empty; give the answer vocabulary.")
        if labels.dim() == 1 and labels.numel():
            if labels.is_floating_point() or labels.dtype == torch.bool:
                raise DataError(f"labels must be integer answer ids, got {labels.dtype}.")
            if labels.min() < 0 or labels.max() >= len(answers):
                raise DataError(
                    f"labels must lie in [0, {len(answers)}) for {len(answers)} answers, got "
                    f"range [{labels.min().item()}, {labels.max().item()}]."
                )
        if questions is not None and len(questions) != n:
            raise DataError(f"questions has {len(questions)} entries for {n} examples.")
        self._columns = columns
        self.answers: list[str] = answers
        self.question_types: list[str] = list(question_types or [])
        self.questions: list[str] | None = list(questions) if questions is not None else None
        self._group_names = list(group_names) if group_names is not None else None
        self.source = source
        #: what :meth:`from_prior_shift` computed: unique images / questions, seconds spent.
        self.extraction: dict[str, float] = {}

    # -- construction from a bias construction --------------------------------------------
    @classmethod
    def from_prior_shift(
        cls,
        dataset: PriorShiftVQA,
        *,
        image_size: int = 224,
        batch_size: int = 64,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
        device: str | torch.device | None = None,
        image_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        text_encoder: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> FeatureVQA:
        """Frozen pretrained features of a :class:`PriorShiftVQA`'s images and questions.

        The dataset must be built with ``noise_std=0`` (e.g. ``PriorShiftVQA(cifar10(...),
        split, image_size=32, noise_std=0)``), so the pixels of an example depend only on its
        image and tint colour: the image encoder then runs once per distinct ``(image_index,
        colour)`` pair and the text encoder once per distinct question (a few dozen templates),
        whatever the number of examples. Both go through the disk cache of
        :mod:`causalvl.pretrained`, so a second call with the same dataset runs no encoder.

        Args:
            dataset: the :class:`PriorShiftVQA` to featurise.
            image_size: side the tiles are resized to for the image encoder (224).
            batch_size: images / texts per encoder pass.
            cache: use the disk cache; ``cache_dir`` overrides its folder (default
                ``$CAUSALVL_CACHE/features`` or ``~/.cache/causalvl/features``).
            progress: show progress bars.
            device: where the encoders run (e.g. ``"cuda"``); features are returned on the CPU.
            image_encoder, text_encoder: stand-ins for the pretrained encoders (callables
                ``(B, 3, S, S) -> (B, D)`` and ``list[str] -> (B, D)``), e.g. for tests.

        Returns:
            A :class:`FeatureVQA` with the dataset's metadata columns, answers, question types,
            group names and questions; its :attr:`extraction` records the distinct images and
            questions encoded and the seconds spent.

        Raises:
            DataError: ``dataset`` is not a :class:`PriorShiftVQA`.
            ConfigError: the dataset adds pixel noise (``noise_std > 0``).
            OptionalDependencyError: the ``[pretrained]`` extra is missing and no stand-in
                encoder is given.
        """
        from .. import pretrained

        if not isinstance(dataset, PriorShiftVQA):
            raise DataError(
                f"FeatureVQA.from_prior_shift needs a PriorShiftVQA, got {type(dataset).__name__}; "
                "build the features yourself and call FeatureVQA(image_features, "
                "question_features, labels, metadata, answers=...)."
            )
        if dataset.config.noise_std != 0:
            raise ConfigError(
                f"FeatureVQA.from_prior_shift: the dataset has noise_std={dataset.config.noise_std}; "
                "frozen features are computed once per (image, colour), which needs noise-free "
                "pixels. Build it with PriorShiftVQA(..., noise_std=0)."
            )
        table = dataset.tensors()
        meta = {k: v for k, v in table.items() if k not in (*_MODEL_KEYS, "labels")}
        n_colours = int(table["colour"].max().item()) + 1 if len(dataset) else 1
        pair = (table["image_index"] * n_colours + table["colour"]).numpy()
        _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
        tiles = table["pixel_values"][torch.from_numpy(first)]
        t0 = time.perf_counter()
        unique_img = pretrained.image_features(
            tiles,
            image_size=image_size,
            batch_size=batch_size,
            progress=progress,
            encoder=image_encoder,
            device=device,
            cache=cache,
            cache_dir=cache_dir,
        )
        t1 = time.perf_counter()
        questions = [dataset[i]["question"] for i in range(len(dataset))]
        distinct, q_inverse = np.unique(np.asarray(questions, dtype=object), return_inverse=True)
        unique_txt = pretrained.text_features(
            [str(q) for q in distinct],
            batch_size=batch_size,
            progress=progress,
            encoder=text_encoder,
            device=device,
            cache=cache,
            cache_dir=cache_dir,
        )
        t2 = time.perf_counter()
        out = cls(
            unique_img[torch.from_numpy(inverse.reshape(-1))],
            unique_txt[torch.from_numpy(q_inverse.reshape(-1))],
            table["labels"],
            meta,
            answers=dataset.answers,
            question_types=dataset.question_types,
            questions=questions,
            group_names=dataset.group_names,
            source=dataset,
        )
        out.extraction = {
            "examples": float(len(dataset)),
            "unique_images": float(len(first)),
            "unique_questions": float(len(distinct)),
            "image_seconds": t1 - t0,
            "text_seconds": t2 - t1,
        }
        logger.info(
            "FeatureVQA: %d examples, %d distinct images (%.1f s), %d distinct questions (%.1f s)",
            len(dataset),
            len(first),
            t1 - t0,
            len(distinct),
            t2 - t1,
        )
        return out

    # -- Dataset --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._columns["labels"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = row(self._columns, i)
        if self.questions is not None:
            item["question"] = self.questions[i]
        labels = item["labels"]
        if labels.dim() == 0:
            item["answer"] = self.answers[int(labels)]
        return item

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor field for the whole dataset at once (``(N, ...)``), for fast training."""
        return dict(self._columns)

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    @property
    def image_dim(self) -> int:
        """Width of the image features."""
        return int(self._columns["image_features"].shape[1])

    @property
    def text_dim(self) -> int:
        """Width of the question features."""
        return int(self._columns["question_features"].shape[1])

    @property
    def group_names(self) -> list[str]:
        """Name of each group id (the source dataset's names when built from one)."""
        if self._group_names is not None:
            return list(self._group_names)
        group = self._columns.get("group")
        count = int(group.max().item()) + 1 if group is not None and group.numel() else 0
        return [f"group {g}" for g in range(count)]

    # -- priors (from the source construction) --------------------------------------------
    def _source(self, what: str) -> Any:
        fn = getattr(self.source, what, None)
        if fn is None:
            raise InterventionStateError(
                f"FeatureVQA.{what} needs the source dataset; this one was built without one. "
                "Use FeatureVQA.from_prior_shift(...) or compute the prior with "
                "causalvl.question_type_prior(...)."
            )
        return fn

    def train_prior(self, smoothing: float = 0.0) -> torch.Tensor:
        """The source dataset's training prior ``(num_question_types, num_answers)`` (see
        :meth:`PriorShiftVQA.train_prior`), for LMH / GGE."""
        return self._source("train_prior")(smoothing)

    def split_prior(self, smoothing: float = 0.0) -> torch.Tensor:
        """The answer distribution per question type of this dataset's examples."""
        return self._source("split_prior")(smoothing)

    def configured_prior(self, split: str | None = None) -> torch.Tensor:
        """The prior the source construction sets for ``split`` (default: its own split)."""
        return self._source("configured_prior")(split)

    def type_answer_mask(self) -> torch.Tensor:
        """``(num_question_types, num_answers)`` bool: which answers each type can have."""
        return self._source("type_answer_mask")()

    def __repr__(self) -> str:
        split = getattr(self.source, "split", None)
        return (
            f"FeatureVQA(n={len(self)}, image_dim={self.image_dim}, text_dim={self.text_dim}, "
            f"answers={self.num_answers}" + (f", split={split!r})" if split else ")")
        )


__all__ = ["FeatureVQA"]
