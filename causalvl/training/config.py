"""``TrainConfig``: every setting of :class:`~causalvl.training.Trainer`, validated up front.

Bad values are rejected when the config is built (and the selection metric again when the
trainer knows its evaluation splits), before any training step runs::

    >>> from causalvl.training import TrainConfig
    >>> cfg = TrainConfig(epochs=3, lr=1e-3, schedule="warmup_cosine")
    >>> cfg.epochs
    3
    >>> TrainConfig(lr=-1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    causalvl.errors.ConfigError: TrainConfig.lr = -1.0 is invalid: must be a finite number > 0.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..config import Config
from ..diagnostics.metrics import DEFAULT_MIN_GROUP_SIZE

#: Epochs at which the CF-VQA / RUBi ``BanOptimizer`` schedule multiplies the lr by 0.25
#: (``range(14, 24, 2)``, methods.md §8).
BAN_MILESTONES: tuple[int, ...] = (14, 16, 18, 20, 22)
#: ``(start, end, epochs)`` of the BanOptimizer warm-up: epochs ``0..6`` use
#: ``lr * linspace(0.5, 2.0, 7)[epoch]``.
BAN_WARMUP: tuple[float, float, int] = (0.5, 2.0, 7)

Schedule = Literal["constant", "warmup_cosine", "step", "ban"]
OptimizerName = Literal["adam", "adamw", "adamax", "sgd"]


@dataclasses.dataclass(kw_only=True)
class TrainConfig(Config):
    """Settings of :class:`~causalvl.training.Trainer`.

    Attributes:
        epochs: number of passes over the training data (>= 1).
        batch_size: examples per step when the trainer builds the DataLoader (per process
            under torchrun).
        eval_batch_size: batch size of evaluation loaders (default: ``batch_size``).
        lr: base learning rate (> 0).
        intervention_lr: learning rate of the intervention's own parameters (branch heads, the
            CF-VQA constant ``c``, backdoor projections); ``None``: ``lr``. Bias-ensemble heads
            often need a faster rate than the base model so that the bias branch absorbs the
            prior before the base model does. Schedules scale both rates alike.
        optimizer: ``"adam"``, ``"adamw"``, ``"adamax"`` or ``"sgd"``.
        weight_decay: L2 (adam/adamax/sgd) or decoupled (adamw) weight decay (>= 0).
        momentum: SGD momentum in [0, 1).
        betas: Adam-family betas.
        schedule: ``"constant"``; ``"warmup_cosine"`` (per step: linear warm-up over
            ``warmup_steps`` (or ``warmup_fraction`` of all steps), then cosine decay to
            ``min_lr_ratio * lr``); ``"step"`` (per epoch: ``lr * lr_gamma ** k`` after the
            ``k``-th milestone); ``"ban"`` (the CF-VQA / RUBi BanOptimizer schedule, per
            epoch: ``lr * linspace(0.5, 2.0, 7)[epoch]`` for epochs 0-6, then ``2 * lr`` times
            ``lr_gamma`` at each milestone, default :data:`BAN_MILESTONES` and 0.25).
        warmup_steps / warmup_fraction: warm-up length of ``"warmup_cosine"``.
        min_lr_ratio: final lr of ``"warmup_cosine"`` as a fraction of ``lr``.
        lr_milestones: epochs at which ``"step"`` / ``"ban"`` multiply the lr by ``lr_gamma``
            (default: ``"ban"`` -> (14, 16, 18, 20, 22); ``"step"`` -> half and three
            quarters of ``epochs``).
        lr_gamma: decay factor at each milestone (default 0.25 for ``"ban"``, 0.1 for
            ``"step"``).
        grad_clip: clip the global gradient norm to this value (``None``: no clipping; the
            published debiasing recipes use 0.25).
        seed: seeds the trainer's ``torch.Generator`` (shuffling, DistributedSampler) and the
            stochastic parts of objectives. Global RNGs are never reseeded; their state is
            saved in checkpoints so that dropout resumes exactly.
        device: ``"auto"`` (cuda when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: mixed precision on CUDA (autocast in ``amp_dtype``; a GradScaler for float16).
            A no-op with a warning on CPU.
        amp_dtype: ``"bfloat16"`` or ``"float16"``.
        output_dir: where ``last/``, ``best/``, ``run.json`` and ``metrics.jsonl`` go
            (``None``: nothing is written and ``fit(resume=True)`` is not possible).
        save_best: keep ``best/`` by ``select_metric``.
        select_metric: metric that picks the best epoch and drives early stopping, e.g.
            ``"ood/accuracy"``; ``"<split>/accuracy"``, ``"<split>/worst_group_accuracy"``,
            ``"<split>/loss"`` for each evaluation split, or ``"train/loss"``.
        select_mode: ``"max"`` or ``"min"``.
        min_group_size: evaluation's ``"<split>/worst_group_accuracy"`` is taken among groups
            of at least this many examples (default
            :data:`~causalvl.diagnostics.metrics.DEFAULT_MIN_GROUP_SIZE`, 20, as in
            :func:`causalvl.diagnose`); smaller groups are left out, with one warning per split
            and ``fit``. When no group is that large, every group is considered (with a
            warning). ``1`` considers every group.
        patience: stop after this many epochs without improvement of ``select_metric``
            (``None``: never stop early).
        min_delta: the smallest change that counts as an improvement.
        load_best_at_end: load the ``best/`` weights into the model when ``fit`` returns.
        progress: tqdm progress bars (rank 0 only).
        log_every: log the running loss every ``log_every`` steps (0: only per epoch).
        num_workers: DataLoader worker processes.
        drop_last: drop the last incomplete training batch.
        sampler: ``"random"`` (a shuffled pass over the data each epoch) or ``"balanced"``
            (draws with replacement, each example weighted by ``1 / count`` of its cell of
            ``balance_keys``, so that every answer is equally likely within each question
            type: the resampling twin of :class:`~causalvl.ReweightConfig`; see
            :func:`~causalvl.training.balanced_weights`). Not with a DataLoader or torchrun.
        balance_keys: the metadata keys whose combinations ``"balanced"`` equalises
            (default ``("question_type", "labels")``; ``("group",)`` balances groups).
        find_unused_parameters: passed to DistributedDataParallel (``None``: True for an
            :class:`~causalvl.IntervenedModel`, whose branch heads may go unused, else False).
    """

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int | None = None
    lr: float = 1e-3
    intervention_lr: float | None = None
    optimizer: OptimizerName = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Schedule = "constant"
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0
    lr_milestones: tuple[int, ...] | None = None
    lr_gamma: float | None = None
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    output_dir: str | None = None
    save_best: bool = True
    select_metric: str | None = None
    select_mode: Literal["max", "min"] = "max"
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    patience: int | None = None
    min_delta: float = 0.0
    load_best_at_end: bool = False
    progress: bool = False
    log_every: int = 0
    num_workers: int = 0
    drop_last: bool = False
    sampler: Literal["random", "balanced"] = "random"
    balance_keys: tuple[str, ...] = ("question_type", "labels")
    find_unused_parameters: bool | None = None

    def validate(self) -> None:
        self._check_int("epochs", "batch_size", minimum=1)
        if self.eval_batch_size is not None:
            self._check_int("eval_batch_size", minimum=1)
        self._check_positive("lr")
        if self.intervention_lr is not None:
            self._check_positive("intervention_lr")
        self._check_positive("weight_decay", "min_delta", allow_zero=True)
        self._check_fraction("warmup_fraction", "min_lr_ratio")
        if not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum < 1:
            self._fail("momentum", "must be a number in [0, 1)")
        if (
            not isinstance(self.betas, tuple)
            or len(self.betas) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)
        ):
            self._fail("betas", "must be a pair of numbers in [0, 1), e.g. (0.9, 0.999)")
        if self.warmup_steps is not None:
            self._check_int("warmup_steps", minimum=0)
        if self.lr_milestones is not None:
            ms = self.lr_milestones
            if (
                not isinstance(ms, tuple)
                or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in ms)
                or list(ms) != sorted(set(ms))
            ):
                self._fail(
                    "lr_milestones", "must be a strictly increasing tuple of epoch indices >= 0"
                )
        if self.lr_gamma is not None:
            self._check_positive("lr_gamma")
        if self.grad_clip is not None:
            self._check_positive("grad_clip")
        self._check_int("seed", minimum=0)
        self._check_int("log_every", "num_workers", minimum=0)
        self._check_int("min_group_size", minimum=1)
        if self.patience is not None:
            self._check_int("patience", minimum=1)
            if self.select_metric is None:
                self._fail(
                    "patience",
                    "early stopping needs a metric to watch; also set select_metric, "
                    "e.g. select_metric='eval/accuracy'",
                )
        if (
            not isinstance(self.balance_keys, tuple)
            or not self.balance_keys
            or not all(isinstance(k, str) and k for k in self.balance_keys)
        ):
            self._fail(
                "balance_keys",
                "must be a non-empty tuple of batch keys, e.g. ('question_type', 'labels')",
            )
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda")
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            self._fail("device", "choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.select_metric is not None:
            parts = self.select_metric.split("/") if isinstance(self.select_metric, str) else []
            if len(parts) != 2 or not parts[0] or not parts[1]:
                self._fail(
                    "select_metric",
                    "must look like '<split>/<metric>', e.g. 'ood/accuracy', "
                    "'ood/worst_group_accuracy', 'eval/loss' or 'train/loss'",
                )
        if self.load_best_at_end and (self.output_dir is None or self.select_metric is None):
            self._fail(
                "load_best_at_end", "needs output_dir and select_metric to keep a best checkpoint"
            )

    # -- resolved values ------------------------------------------------------------------
    def milestones(self) -> tuple[int, ...]:
        """The lr milestones in effect (epochs), after defaults."""
        if self.lr_milestones is not None:
            return tuple(self.lr_milestones)
        if self.schedule == "ban":
            return BAN_MILESTONES
        return tuple(sorted({m for m in (self.epochs // 2, (3 * self.epochs) // 4) if m > 0}))

    def gamma(self) -> float:
        """The lr decay factor at each milestone, after defaults."""
        if self.lr_gamma is not None:
            return float(self.lr_gamma)
        return 0.25 if self.schedule == "ban" else 0.1


def check_select_metric(
    config: TrainConfig, splits: list[str], *, has_group: dict[str, bool]
) -> None:
    """Reject a ``select_metric`` that evaluation will not produce (before training starts).

    Args:
        config: the training config.
        splits: names of the evaluation splits.
        has_group: per split, whether its batches carry a ``group`` key.

    Raises:
        ConfigError: naming the metric and the metrics that will be available.
    """
    from ..errors import ConfigError

    metric = config.select_metric
    if metric is None:
        return
    available = ["train/loss"]
    for s in splits:
        available += [f"{s}/accuracy", f"{s}/loss"]
        if has_group.get(s, False):
            available.append(f"{s}/worst_group_accuracy")
    if metric not in available:
        hint = ""
        split, name = metric.split("/", 1)
        if name == "worst_group_accuracy" and split in splits:
            hint = f" (the '{split}' batches carry no 'group' key)"
        elif split not in splits and split != "train":
            hint = f" (no evaluation split named {split!r}; pass eval_data={{{split!r}: ...}})"
        raise ConfigError(
            f"TrainConfig.select_metric = {metric!r} is not produced by evaluation{hint}; "
            f"available: {available}."
        )


__all__ = ["BAN_MILESTONES", "BAN_WARMUP", "TrainConfig", "check_select_metric"]
