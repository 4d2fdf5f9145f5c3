"""A hard-negative curriculum for contrastive models, and a comparative (NLVR2-style) objective.

With random in-batch negatives a contrastive model rarely has to tell "a 3 left of a 7" from
"a 7 left of a 3", so it learns which objects co-occur and ignores their composition. The
curriculum appends hard negatives (:mod:`causalvl.training.hard_negatives`) to the candidates of
InfoNCE, and raises the fraction of examples that get them during training, so the model first
learns the objects from easy (random) negatives and then the composition from hard ones.

Difficulty schedules (``t`` = step, ``T`` = ``ramp_fraction`` × total steps, fraction =
``start + (end - start) * d(t)``):

* ``"constant"``: ``d = 1`` (``end`` from the first step; ``end=0`` gives random negatives only);
* ``"linear"``: ``d = min(1, t / T)``;
* ``"step"``: ``levels`` equal stages, ``d = min(levels-1, floor(levels * t / T)) / (levels-1)``;
* ``"competence"`` (Platanios et al., 2019): ``d = min(1, sqrt(t (1 - c0²) / T + c0²))``.

    >>> s = DifficultySchedule(CurriculumConfig(schedule="linear"))
    >>> [s(t, 100) for t in (0, 50, 100)]
    [0.0, 0.5, 1.0]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import logits_of
from ..config import Config
from ..errors import ConfigError, InputError
from ..losses import info_nce
from ..outputs import ObjectiveOutput
from ..runtime import eval_mode, module_device
from .hard_negatives import HardNegativeGenerator, swap_image_halves

ScheduleKind = Literal["constant", "linear", "step", "competence"]


@dataclasses.dataclass(kw_only=True)
class CurriculumConfig(Config):
    """Settings of :class:`DifficultySchedule` and :class:`CurriculumContrastiveObjective`.

    Attributes:
        schedule: ``"constant"``, ``"linear"``, ``"step"`` or ``"competence"``.
        start: fraction of examples with hard negatives at step 0 (in [0, 1]).
        end: fraction once the ramp is over (in [0, 1]).
        ramp_fraction: share of all training steps over which difficulty rises (in (0, 1]).
        levels: number of stages of ``"step"`` (>= 2).
        c0: initial competence of ``"competence"`` (in (0, 1]).
        kinds: caption perturbations used when the batch brings no negatives of its own
            (``"swap"``, ``"attribute"``, ``"number"``, ``"relation"``).
        image_negatives: also append the swapped composition of each selected image
            (left/right halves exchanged) as an extra candidate image.
        pair_negatives: with ``image_negatives``, the appended swapped image and swapped
            caption describe each other (both are swapped compositions), so they are also
            trained as a matching pair: the loss runs over all ``B + k`` rows and columns and
            each original pair and its swap are each other's hard negatives. This is a
            counterfactual augmentation: every composition is also seen in the other order,
            which removes an order bias of the training data.
        seed: seeds which examples get hard negatives (a fresh generator per step from
            ``(seed, step)``, so resumed runs pick the same ones).
    """

    schedule: ScheduleKind = "linear"
    start: float = 0.0
    end: float = 1.0
    ramp_fraction: float = 1.0
    levels: int = 4
    c0: float = 0.1
    kinds: tuple[str, ...] = ("swap",)
    image_negatives: bool = True
    pair_negatives: bool = True
    seed: int = 0

    def validate(self) -> None:
        self._check_fraction("start", "end", "ramp_fraction", "c0")
        if self.ramp_fraction == 0:
            self._fail("ramp_fraction", "must be in (0, 1]")
        if self.c0 == 0:
            self._fail("c0", "must be in (0, 1] (the competence at step 0)")
        self._check_int("levels", minimum=2)
        self._check_int("seed", minimum=0)
        from .hard_negatives import NEGATIVE_KINDS

        if (
            not isinstance(self.kinds, tuple)
            or not self.kinds
            or any(k not in NEGATIVE_KINDS for k in self.kinds)
        ):
            self._fail("kinds", f"must be a non-empty tuple of {list(NEGATIVE_KINDS)}")


class DifficultySchedule:
    """The fraction of examples that get hard negatives at each step (see the module docstring).

    Example:
        >>> s = DifficultySchedule(CurriculumConfig(schedule="competence", c0=0.1))
        >>> round(s(0, 100), 3), s(100, 100)
        (0.1, 1.0)
    """

    def __init__(self, config: CurriculumConfig | None = None) -> None:
        self.config = config if config is not None else CurriculumConfig()

    def difficulty(self, step: int, total_steps: int) -> float:
        """``d(t)`` in [0, 1] before scaling to ``[start, end]``."""
        cfg = self.config
        if total_steps < 1:
            raise ConfigError(f"total_steps = {total_steps!r} is invalid: must be >= 1.")
        if cfg.schedule == "constant":
            return 1.0
        ramp = max(1.0, cfg.ramp_fraction * total_steps)
        t = min(max(step, 0) / ramp, 1.0)
        if cfg.schedule == "linear":
            return t
        if cfg.schedule == "step":
            k = min(cfg.levels - 1, math.floor(cfg.levels * t))
            return k / (cfg.levels - 1)
        c0 = cfg.c0
        return min(1.0, math.sqrt(t * (1 - c0 * c0) + c0 * c0))

    def __call__(self, step: int, total_steps: int) -> float:
        cfg = self.config
        return cfg.start + (cfg.end - cfg.start) * self.difficulty(step, total_steps)


def pair_logits(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Image-text logits ``(num_images, num_texts)`` of a contrastive model.

    Works with an :class:`~causalvl.IntervenedModel` (``.logits``), a module returning a tensor
    (:class:`~causalvl.models.TinyContrastive`) or a Hugging Face dual encoder (``logits_per_image``).
    """
    return logits_of(model(**inputs))


def _gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 9_176 + 1) % (2**63 - 1))


class CurriculumContrastiveObjective:
    """InfoNCE over the batch with hard negatives appended per the difficulty schedule.

    For a batch of ``B`` matching (image, caption) pairs, ``k = round(fraction(step) * B)``
    examples (drawn with a generator seeded from ``(seed, step)``) contribute a hard-negative
    caption (``batch["negative_input_ids"]`` when the dataset provides it, e.g.
    :class:`causalvl.datasets.CompositionalPairs` with ``mode="pairs"``, else generated from
    ``batch["caption"]`` with :class:`HardNegativeGenerator` and ``tokenizer``) and, with
    ``image_negatives``, the swapped composition of their image. One forward pass scores
    ``B + k`` images against ``B + k`` captions; the loss is the mean of image->text
    cross-entropy over all candidate captions and text->image cross-entropy over all candidate
    images, with the matching pair on the diagonal (for the ``B`` original pairs, and with
    ``pair_negatives`` also for the ``k`` swapped pairs).

    Batch keys: ``pixel_values`` ``(B, C, H, W)``, ``input_ids`` / ``attention_mask`` ``(B, L)``,
    optional ``negative_input_ids`` / ``negative_attention_mask`` ``(B, L)`` or ``caption``
    (list of ``B`` strings).

    Parts: ``"infonce"`` (the loss) and ``"hard_fraction"`` (logged only: the fraction of the
    batch that got hard negatives).

    The trainer calls :meth:`set_progress` before each step. Used with a
    :class:`~causalvl.training.Trainer`, evaluation reports in-batch retrieval accuracy
    (:meth:`predict`).

    Example:
        >>> import causalvl
        >>> from causalvl.training.curriculum import CurriculumConfig, CurriculumContrastiveObjective
        >>> obj = CurriculumContrastiveObjective(CurriculumConfig(schedule="linear"))
        >>> obj.set_progress(50, 100); obj.fraction
        0.5
    """

    def __init__(self, config: CurriculumConfig | None = None, *, tokenizer: Any = None) -> None:
        self.config = config if config is not None else CurriculumConfig()
        self.schedule = DifficultySchedule(self.config)
        self.tokenizer = tokenizer
        self.generator = HardNegativeGenerator(self.config.kinds, seed=self.config.seed)
        self.step = 0
        self.total_steps = 1
        self.last_num_hard = 0

    def set_progress(self, step: int, total_steps: int) -> None:
        """Tell the objective where training stands (``step`` 0-based of ``total_steps``)."""
        self.step, self.total_steps = int(step), max(1, int(total_steps))

    @property
    def fraction(self) -> float:
        """The fraction of hard negatives at the current step."""
        return self.schedule(self.step, self.total_steps)

    def _negatives(
        self, batch: Mapping[str, Any], idx: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Negative ids / mask for the selected rows, and the rows that have one."""
        if "negative_input_ids" in batch:
            ids = batch["negative_input_ids"][idx]
            mask = batch.get("negative_attention_mask")
            mask = (ids != 0).long() if mask is None else mask[idx]
            return ids, mask, idx
        captions = batch.get("caption")
        if captions is None or self.tokenizer is None:
            raise InputError(
                "the batch has no 'negative_input_ids'; to generate hard negatives it needs "
                "'caption' strings and the objective a tokenizer "
                "(CurriculumContrastiveObjective(cfg, tokenizer=...))."
            )
        rng = __import__("numpy").random.default_rng([self.config.seed, self.step])
        chosen, texts = [], []
        for i in idx.tolist():
            neg = self.generator.negative(captions[i], rng)
            if neg is not None:
                chosen.append(i)
                texts.append(neg)
        keep = torch.tensor(chosen, dtype=torch.long)
        if not texts:
            empty = batch["input_ids"][:0]
            return empty, empty, keep
        length = batch["input_ids"].shape[1]
        enc = self.tokenizer(texts, max_length=length)
        return enc["input_ids"].to(device), enc["attention_mask"].to(device), keep

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> ObjectiveOutput:
        pixels = batch["pixel_values"]
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        if mask is None:
            mask = (ids != 0).long()
        b = ids.shape[0]
        if pixels.shape[0] != b:
            raise InputError(
                f"pixel_values has {pixels.shape[0]} images but input_ids {b} captions; "
                "contrastive batches hold matching pairs."
            )
        k = int(round(self.fraction * b))
        idx = torch.randperm(b, generator=_gen(self.config.seed, self.step))[:k].sort().values
        idx = idx.to(ids.device)
        neg_ids, neg_mask, rows = self._negatives(batch, idx, ids.device)
        rows = rows.to(ids.device)
        self.last_num_hard = int(rows.numel())
        all_ids = torch.cat([ids, neg_ids.to(ids.dtype)], 0)
        all_mask = torch.cat([mask, neg_mask.to(mask.dtype)], 0)
        images = pixels
        if self.config.image_negatives and rows.numel():
            images = torch.cat([pixels, swap_image_halves(pixels[rows])], 0)
        logits = pair_logits(
            model, {"pixel_values": images, "input_ids": all_ids, "attention_mask": all_mask}
        )
        # rows: images, columns: captions; the matching pair is on the diagonal
        n = b
        if self.config.pair_negatives and images.shape[0] == all_ids.shape[0]:
            n = images.shape[0]  # the swapped image and swapped caption match each other
        loss = info_nce(logits.float(), num_pairs=n)
        frac = torch.tensor(self.last_num_hard / b, device=loss.device)
        return ObjectiveOutput(loss=loss, parts={"infonce": loss.detach(), "hard_fraction": frac})

    def predict(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """In-batch logits ``(B, B)`` (matching pairs on the diagonal), for evaluation."""
        inputs = {"pixel_values": batch["pixel_values"], "input_ids": batch["input_ids"]}
        if "attention_mask" in batch:
            inputs["attention_mask"] = batch["attention_mask"]
        return pair_logits(model, inputs)


class ComparativeObjective(nn.Module):
    """NLVR2-style training: two images, one statement, true or false.

    ``mode="concat"`` (default) puts the two images side by side, as NLVR2 shows them, and
    scores the statement against the composite image ``s``; a learned affine map gives the
    logit ``z = a * s + b``. ``mode="separate"`` scores the statement against each image,
    ``s0`` and ``s1``, and a learned linear head maps ``(s0, s1)`` to ``z`` (for statements
    that hold of one image, when the images must not be concatenated). Training is binary
    cross-entropy of ``z`` against ``labels``.

    Batch keys: ``pixel_values_left`` and ``pixel_values_right`` ``(B, C, H, W)`` (as in
    :class:`causalvl.datasets.ComparativePairs`) or ``pixel_values`` ``(B, 2, C, H, W)``,
    ``input_ids`` / ``attention_mask`` ``(B, L)``, ``labels`` ``(B,)`` (0/1 or bool).

    Its parameters (the head) are trained and checkpointed by the Trainer. :meth:`predict`
    returns ``(B, 2)`` logits ``[0, z]`` so argmax accuracy against ``labels`` is the
    true/false accuracy.

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyContrastive(vocab_size=20)
        >>> batch = {"pixel_values": torch.rand(4, 2, 3, 16, 16),
        ...          "input_ids": torch.randint(1, 20, (4, 6)), "labels": torch.tensor([1, 0, 1, 0])}
        >>> out = ComparativeObjective()(net, batch)
        >>> out.loss.shape, sorted(out.parts)
        (torch.Size([]), ['bce'])
    """

    def __init__(self, mode: Literal["concat", "separate"] = "concat") -> None:
        super().__init__()
        if mode not in ("concat", "separate"):
            raise ConfigError(
                f"ComparativeObjective mode={mode!r} is invalid; choose 'concat' or 'separate'."
            )
        self.mode = mode
        self.head = nn.Linear(1 if mode == "concat" else 2, 1)
        with torch.no_grad():
            init = [[1.0]] if mode == "concat" else [[1.0, 1.0]]
            self.head.weight.copy_(torch.tensor(init))
            self.head.bias.zero_()

    def scores(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """The pair logit ``z`` ``(B,)``."""
        if "pixel_values_left" in batch and "pixel_values_right" in batch:
            pixels = torch.stack([batch["pixel_values_left"], batch["pixel_values_right"]], 1)
        elif "pixel_values" in batch:
            pixels = batch["pixel_values"]
        else:
            raise InputError(
                "comparative batches need 'pixel_values_left' and 'pixel_values_right' "
                f"(B, C, H, W) or 'pixel_values' (B, 2, C, H, W); got keys {sorted(batch)}."
            )
        if pixels.dim() != 5 or pixels.shape[1] != 2:
            raise InputError(
                f"comparative batches need pixel_values of shape (B, 2, C, H, W), got "
                f"{tuple(pixels.shape)}."
            )
        b = pixels.shape[0]
        ids = batch["input_ids"]
        rows = torch.arange(b, device=ids.device)
        images = (
            torch.cat([pixels[:, 0], pixels[:, 1]], -1)
            if self.mode == "concat"
            else pixels.flatten(0, 1)
        )
        inputs = {"pixel_values": images, "input_ids": ids}
        if "attention_mask" in batch:
            inputs["attention_mask"] = batch["attention_mask"]
        logits = pair_logits(model, inputs)
        if self.mode == "concat":
            sims = logits[rows, rows][:, None]  # (B, 1): statement b against its composite
        else:
            sims = logits.view(b, 2, b)[rows, :, rows]  # (B, 2): against each image
        weight, bias = self.head.weight.to(sims.dtype), self.head.bias.to(sims.dtype)
        return F.linear(sims, weight, bias).squeeze(-1)

    def forward(self, model: nn.Module, batch: Mapping[str, Any]) -> ObjectiveOutput:
        z = self.scores(model, batch)
        if "labels" not in batch:
            raise InputError("comparative batches need 'labels' (B,) with 1 = true, 0 = false.")
        labels = batch["labels"].to(z.device).float()
        loss = F.binary_cross_entropy_with_logits(z.float(), labels)
        return ObjectiveOutput(loss=loss, parts={"bce": loss.detach()})

    def predict(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """``(B, 2)`` logits ``[0, z]``: class 1 (true) when ``z > 0``."""
        z = self.scores(model, batch)
        return torch.stack([torch.zeros_like(z), z], -1)


@torch.no_grad()
def winoground_evaluate(model: nn.Module, groups: Any, *, batch_size: int = 64) -> dict[str, float]:
    """Winoground text / image / group scores of a contrastive model on 2x2 groups.

    Args:
        model: a contrastive model (see :func:`pair_logits`).
        groups: a dataset of groups (e.g. ``CompositionalPairs(mode="groups")``) whose items have
            ``pixel_values`` ``(2, C, H, W)``, ``input_ids`` ``(2, L)`` and optionally
            ``attention_mask`` ``(2, L)``: caption ``i`` describes image ``i``.
        batch_size: groups per forward pass.

    Returns:
        ``{"text": ..., "image": ..., "group": ...}`` fractions in [0, 1]. Text: both captions
        prefer their own image's caption over the other; image: both captions prefer their own
        image; group: both. Ties count as failures.
    """
    with eval_mode(model):
        device = module_device(model)
        text = image = group = 0
        n = 0
        for start in range(0, len(groups), batch_size):
            items = [groups[i] for i in range(start, min(len(groups), start + batch_size))]
            pixels = torch.stack([it["pixel_values"] for it in items]).to(device)
            ids = torch.stack([it["input_ids"] for it in items]).to(device)
            g = pixels.shape[0]
            inputs = {"pixel_values": pixels.flatten(0, 1), "input_ids": ids.flatten(0, 1)}
            if "attention_mask" in items[0]:
                masks = torch.stack([it["attention_mask"] for it in items]).to(device)
                inputs["attention_mask"] = masks.flatten(0, 1)
            logits = pair_logits(model, inputs).float().view(g, 2, g, 2)
            rows = torch.arange(g, device=logits.device)
            s = logits[rows, :, rows, :].transpose(1, 2)  # (G, caption, image)
            t_ok = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
            i_ok = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
            text += int(t_ok.sum())
            image += int(i_ok.sum())
            group += int((t_ok & i_ok).sum())
            n += g
    if n == 0:
        raise InputError("winoground_evaluate got no groups.")
    return {"text": text / n, "image": image / n, "group": group / n}


__all__ = [
    "ComparativeObjective",
    "CurriculumConfig",
    "CurriculumContrastiveObjective",
    "DifficultySchedule",
    "pair_logits",
    "winoground_evaluate",
]
