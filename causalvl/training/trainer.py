"""``Trainer``: fit an :class:`~causalvl.IntervenedModel` (or any ``nn.Module``) with checkpoints,
evaluation per split, early stopping, lr schedules, mixed precision and torchrun.

    >>> import torch, causalvl
    >>> from torch.utils.data import TensorDataset
    >>> class Data(torch.utils.data.Dataset):
    ...     def __len__(self): return 16
    ...     def __getitem__(self, i):
    ...         g = torch.Generator().manual_seed(i)
    ...         return {"pixel_values": torch.rand(3, 8, 8, generator=g),
    ...                 "input_ids": torch.randint(1, 20, (5,), generator=g), "labels": i % 4}
    >>> vl = causalvl.intervene(causalvl.TinyVQA(vocab_size=20, num_answers=4, image_size=8),
    ...                         causalvl.IdentityConfig())
    >>> result = causalvl.Trainer(vl, Data(), eval_data={"id": Data()},
    ...                           config=causalvl.TrainConfig(epochs=2, batch_size=8)).fit()
    >>> result.epochs_completed, sorted(result.final_metrics)
    (2, ['id/accuracy', 'id/loss', 'train/loss', 'train/task'])

Randomness: ``TrainConfig.seed`` seeds the trainer's own ``torch.Generator`` (re-seeded from
``(seed, epoch)`` at the start of every epoch for the sampler, so the data order of an epoch
does not depend on what ran before). Global RNGs are never reseeded; dropout draws from the
global torch RNG, whose state (CPU and CUDA, per rank) is saved in every checkpoint and restored
by ``fit(resume=True)`` so that a resumed run ends with bitwise the same weights (on CPU) as an
uninterrupted one. Seed the global RNG yourself before building the model if two fresh runs
must agree.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    WeightedRandomSampler,
)

from .. import runtime
from ..batch import batch_correctness, logits_of, tensor_inputs, to_device
from ..config import atomic_write_text
from ..errors import CheckpointError, ConfigError, InputError
from ..outputs import ObjectiveOutput
from ..progress import progress_bar
from . import distributed as _dist
from .checkpoint import (
    Checkpoint,
    check_rng_states,
    checkpoint_exists,
    checkpoint_traces,
    load_checkpoint,
    save_checkpoint,
    validate_train_state,
)
from .config import TrainConfig, check_select_metric
from .samplers import balanced_weights
from .schedules import lr_factor

logger = logging.getLogger("causalvl.training")

ObjectiveFn = Callable[[nn.Module, Mapping[str, Any]], "ObjectiveOutput | torch.Tensor"]
PredictFn = Callable[[nn.Module, Mapping[str, Any]], torch.Tensor]


# -- results and callbacks ------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        epochs_completed: epochs finished (including those of a run that was resumed).
        global_step: optimizer steps taken in total.
        history: one dict per epoch: ``"epoch"`` (1-based), ``"lr"``, ``"train/<part>"``
            (loss parts averaged over the epoch's steps) and the evaluation metrics
            (``"<split>/accuracy"``, ``"<split>/worst_group_accuracy"``, ``"<split>/loss"``;
            fractions in [0, 1]).
        final_metrics: the metrics of the last epoch (without ``"epoch"`` and ``"lr"``).
        best_metric: the selection metric name (``None`` when none was set).
        best_value: its best value; ``best_epoch``: the 1-based epoch where it was reached.
        stopped_early: whether ``patience`` (or a callback) ended training before ``epochs``.
        output_dir: where checkpoints, ``run.json`` and ``metrics.jsonl`` were written.
    """

    epochs_completed: int
    global_step: int
    history: tuple[Mapping[str, float], ...]
    final_metrics: Mapping[str, float]
    best_metric: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    output_dir: str | None = None


class Callback:
    """Hooks into :meth:`Trainer.fit`; override any of the methods. Setting
    ``trainer.should_stop = True`` ends training after the current epoch (checkpoint included).
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once, after setup (and after a resume has been restored)."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def on_step_end(self, trainer: Trainer, step: int, parts: Mapping[str, torch.Tensor]) -> None:
        """Called after optimizer step ``step`` (1-based global count) with the loss parts."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after epoch ``epoch`` (0-based) was evaluated and checkpointed."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Called once when ``fit`` returns."""


# -- helpers --------------------------------------------------------------------------------
def as_objective_output(value: Any) -> ObjectiveOutput:
    """Normalise what an objective returns: an :class:`ObjectiveOutput`, a scalar tensor, or a
    mapping with a ``"loss"`` key (other keys become parts)."""
    if isinstance(value, ObjectiveOutput):
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InputError(
                f"the objective returned a tensor of shape {tuple(value.shape)}; return a scalar "
                "loss (e.g. .mean()) or an ObjectiveOutput."
            )
        return ObjectiveOutput(loss=value.reshape(()))
    if isinstance(value, Mapping) and "loss" in value:
        parts = {k: v.detach() for k, v in value.items() if k != "loss"}
        return ObjectiveOutput(loss=value["loss"], parts=parts)
    raise InputError(
        f"the objective returned a {type(value).__name__}; return an ObjectiveOutput, a scalar "
        "tensor, or a dict with a 'loss' key."
    )


def default_predict(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """Logits of ``model`` on ``batch``: ``model(batch).logits`` for an IntervenedModel, else
    ``model(**tensor inputs)`` with metadata keys removed."""
    from ..model import IntervenedModel

    if isinstance(model, IntervenedModel):
        return model(batch).logits
    return logits_of(model(**tensor_inputs(batch)))


def _intervened_objective(
    model: nn.Module, batch: Mapping[str, Any], stage: int | None = None
) -> ObjectiveOutput:
    return model.objective(model(batch), batch, stage=stage)  # type: ignore[operator]


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


def package_versions() -> dict[str, str]:
    """Versions of python and the packages a run depends on (for ``run.json``)."""
    return {k: v or "not installed" for k, v in runtime.package_versions().items()}


class _LossModule(nn.Module):
    """Runs the objective inside ``forward`` so DistributedDataParallel can wrap it: the
    objective sees the unwrapped model, DDP sees a tensor output."""

    def __init__(self, model: nn.Module, objective: ObjectiveFn) -> None:
        super().__init__()
        self.model = model
        self.objective_module = objective if isinstance(objective, nn.Module) else None
        self._objective = objective

    def forward(
        self, batch: Mapping[str, Any], stage: int | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if stage is None:
            out = self._objective(self.model, batch)
        else:
            out = self._objective(self.model, batch, stage)  # type: ignore[call-arg]
        out = as_objective_output(out)
        return out.loss, dict(out.parts)


# -- the trainer ----------------------------------------------------------------------------
class Trainer:
    """Train a model with an objective; evaluate, checkpoint and select per epoch.

    Args:
        model: an :class:`~causalvl.IntervenedModel` (default objective: ``vl.objective(vl(batch),
            batch)``) or any ``nn.Module`` together with ``objective``.
        train_data: a ``Dataset`` (batched with its ``collate`` attribute when it has one, else
            torch's default collate) or a ``DataLoader`` (used as given).
        eval_data: ``None``, one dataset / loader (split name ``"eval"``), or a mapping of
            named splits, e.g. ``{"id": ds1, "ood": ds2}``.
        config: a :class:`TrainConfig`.
        objective: ``objective(model, batch) -> ObjectiveOutput | Tensor``. If it is an
            ``nn.Module`` its parameters are trained and checkpointed too; if it has
            ``set_progress(step, total_steps)``, that is called before every step (curricula).
        callbacks: :class:`Callback` instances.
        predict: ``predict(model, batch) -> logits`` for evaluation (default
            :func:`default_predict`, or ``objective.predict`` when the objective has one).
        label: a name for this run shown in progress bars (e.g. ``"model 3/10: CF-VQA"``).

    Evaluation runs every epoch on every split: ``"<split>/accuracy"`` (argmax vs class-id
    labels; VQA accuracy for soft scores; in-batch retrieval top-1 for square contrastive
    logits without labels), ``"<split>/worst_group_accuracy"`` when batches carry ``group``,
    and ``"<split>/loss"``. Under torchrun every rank evaluates the full splits (so early
    stopping agrees); only rank 0 logs and writes files.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset | DataLoader,
        *,
        eval_data: Dataset | DataLoader | Mapping[str, Dataset | DataLoader] | None = None,
        config: TrainConfig | None = None,
        objective: ObjectiveFn | None = None,
        callbacks: Iterable[Callback] = (),
        predict: PredictFn | None = None,
        label: str | None = None,
    ) -> None:
        from ..model import IntervenedModel

        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise ConfigError(
                f"config must be a causalvl.TrainConfig, got {type(config).__name__}; "
                "e.g. Trainer(model, data, config=causalvl.TrainConfig(epochs=5))."
            )
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"model must be an nn.Module (e.g. a causalvl.IntervenedModel), got "
                f"{type(model).__name__}."
            )
        if objective is None:
            if not isinstance(model, IntervenedModel):
                raise ConfigError(
                    f"a plain {type(model).__name__} has no default objective; pass "
                    "objective=lambda model, batch: loss, or wrap it with causalvl.intervene."
                )
            objective = _intervened_objective
        elif not callable(objective):
            raise ConfigError(
                f"objective must be callable as objective(model, batch), got "
                f"{type(objective).__name__}."
            )
        if train_data is None:
            raise ConfigError("train_data is None; pass a Dataset or a DataLoader.")
        if config.sampler != "random" and isinstance(train_data, DataLoader):
            raise ConfigError(
                f"TrainConfig.sampler={config.sampler!r} needs the Dataset, not a DataLoader "
                "(a DataLoader brings its own sampler); pass the dataset itself."
            )
        self.label = label
        self.model = model
        self.config = config
        self.objective = objective
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ConfigError(
                    f"callbacks must be causalvl.training.Callback instances, got "
                    f"{type(cb).__name__}."
                )
        if predict is None:
            predict = getattr(objective, "predict", None) or default_predict
        self.predict = predict
        self.train_data = train_data
        if eval_data is None:
            self.eval_data: dict[str, Dataset | DataLoader] = {}
        elif isinstance(eval_data, Mapping):
            self.eval_data = dict(eval_data)
            for name in self.eval_data:
                if not isinstance(name, str) or not name or "/" in name or name == "train":
                    raise ConfigError(
                        f"eval split name {name!r} is invalid: use a non-empty string without "
                        "'/', other than 'train' (e.g. 'id', 'ood')."
                    )
        else:
            self.eval_data = {"eval": eval_data}
        self.should_stop = False
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.device = torch.device("cpu")
        self.dist = _dist.DistInfo()
        self._data_gen = torch.Generator()
        self._loader_gen = torch.Generator()
        self._eval_gen = torch.Generator()
        self._balance_weights: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    # -- setup ----------------------------------------------------------------------------
    def _resolve_device(self) -> torch.device:
        want = self.config.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"TrainConfig.device = {self.config.device!r} but CUDA is not available; use "
                "device='auto' or 'cpu'."
            )
        if want == "cuda":
            return torch.device("cuda", self.dist.local_rank if self.dist.enabled else 0)
        return torch.device(want)

    def _collate(self, data: Dataset) -> Callable[[list[Any]], Any] | None:
        fn = getattr(data, "collate", None)
        return fn if callable(fn) else None

    def _train_loader(self, epoch: int) -> DataLoader:
        data = self.train_data
        if isinstance(data, DataLoader):
            sampler = getattr(data, "sampler", None)
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            return data
        # the sampler's order and the loader's worker seeds come from two generators, each
        # reseeded per epoch, so neither depends on how often the other was drawn from
        self._data_gen.manual_seed(_epoch_seed(self.config.seed, epoch))
        self._loader_gen.manual_seed(_epoch_seed(self.config.seed + 1, epoch))
        if self.config.sampler == "balanced":
            if self.dist.enabled:
                raise ConfigError(
                    "TrainConfig.sampler='balanced' is not supported under torchrun; use "
                    "sampler='random' with causalvl.ReweightConfig, or one process."
                )
            if self._balance_weights is None:
                self._balance_weights = balanced_weights(data, self.config.balance_keys)
            sampler = WeightedRandomSampler(
                self._balance_weights, len(data), replacement=True, generator=self._data_gen
            )
        elif self.dist.enabled:
            sampler = DistributedSampler(
                data,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=self.config.seed,
                drop_last=self.config.drop_last,
            )
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(data, generator=self._data_gen)
        return DataLoader(
            data,
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=self._collate(data),
            num_workers=self.config.num_workers,
            drop_last=self.config.drop_last,
            generator=self._loader_gen,
        )

    def _eval_loader(self, data: Dataset | DataLoader) -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        self._eval_gen.manual_seed(self.config.seed)
        return DataLoader(
            data,
            batch_size=self.config.eval_batch_size or self.config.batch_size,
            shuffle=False,
            collate_fn=self._collate(data),
            num_workers=self.config.num_workers,
            generator=self._eval_gen,
        )

    def _bar_label(self, epoch: int) -> str:
        text = f"epoch {epoch + 1}/{self.config.epochs}"
        return f"{self.label}, {text}" if self.label else text

    def _steps_per_epoch(self) -> int:
        data = self.train_data
        if isinstance(data, DataLoader):
            return len(data)
        n = len(data)  # type: ignore[arg-type]
        if self.dist.enabled:
            n = (
                n // self.dist.world_size
                if self.config.drop_last
                else math.ceil(n / self.dist.world_size)
            )
        if n == 0:
            raise ConfigError("train_data is empty; pass a dataset with at least one example.")
        bs = self.config.batch_size
        return n // bs if self.config.drop_last else math.ceil(n / bs)

    def _check_eval_splits(self) -> None:
        has_group: dict[str, bool] = {}
        for name, data in self.eval_data.items():
            batch = next(iter(self._eval_loader(data)), None)
            if batch is None:
                raise ConfigError(f"eval split {name!r} is empty; drop it or pass data.")
            has_group[name] = isinstance(batch, Mapping) and "group" in batch
        check_select_metric(self.config, list(self.eval_data), has_group=has_group)

    def _build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.config
        if not params:
            raise ConfigError(
                "the model has no trainable parameters (all have requires_grad=False); "
                "unfreeze some, or give an objective with parameters."
            )
        groups: list[dict[str, Any]] = [{"params": params}]
        if cfg.intervention_lr is not None:
            own = {id(p) for p in self._intervention_parameters()}
            groups = [
                {"params": [p for p in params if id(p) not in own]},
                {"params": [p for p in params if id(p) in own], "lr": cfg.intervention_lr},
            ]
            groups = [g for g in groups if g["params"]]
        if cfg.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            cls = {
                "adam": torch.optim.Adam,
                "adamw": torch.optim.AdamW,
                "adamax": torch.optim.Adamax,
            }[cfg.optimizer]
            opt = cls(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
        return opt

    def _intervention_parameters(self) -> list[nn.Parameter]:
        """Parameters of the wrapped model's interventions (none for a plain model)."""
        model = getattr(self.model, "module", self.model)  # unwrap DistributedDataParallel
        interventions = getattr(model, "interventions", None)
        return list(interventions.parameters()) if isinstance(interventions, nn.Module) else []

    def _trainable(self) -> list[nn.Parameter]:
        seen: set[int] = set()
        out = []
        modules = [self.model]
        if isinstance(self.objective, nn.Module):
            modules.append(self.objective)
        for m in modules:
            for p in m.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    # -- checkpoint state ------------------------------------------------------------------
    @property
    def output_dir(self) -> Path | None:
        return Path(self.config.output_dir) if self.config.output_dir is not None else None

    def _rng_tensors(self) -> dict[str, torch.Tensor]:
        out = {"rng/data": self._data_gen.get_state()}
        cpu = torch.get_rng_state()
        for r, state in enumerate(_dist.gather_tensor(self.dist, cpu)):
            out[f"rng/torch_cpu/rank{r}"] = state
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                gathered = _dist.gather_tensor(self.dist, state)
                for r, s in enumerate(gathered):
                    out[f"rng/torch_cuda/{i}/rank{r}"] = s
        # the model's own generators (IntervenedModel: shuffle / noise counterfactual inputs)
        model_rng = getattr(self.model, "rng_state", None)
        if callable(model_rng):
            for k, v in model_rng().items():
                out[f"rng/model/{k}"] = v
        return out

    def _check_rng(self, tensors: Mapping[str, torch.Tensor], where: Any) -> None:
        live = {"rng/data": self._data_gen.get_state()}
        live.update({k: torch.get_rng_state() for k in tensors if k.startswith("rng/torch_cpu/")})
        model_rng = getattr(self.model, "rng_state", None)
        if callable(model_rng):
            live.update({f"rng/model/{k}": v for k, v in model_rng().items()})
        check_rng_states(tensors, live, where)

    def _restore_rng(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if callable(getattr(self.model, "set_rng_state", None)):
            n = len("rng/model/")
            mine = {k[n:]: v for k, v in tensors.items() if k.startswith("rng/model/")}
            self.model.set_rng_state(mine)  # type: ignore[operator]
        rank = self.dist.rank
        key = f"rng/torch_cpu/rank{rank}"
        if key not in tensors:
            key = "rng/torch_cpu/rank0"
            if self.dist.enabled:
                warnings.warn(
                    f"the checkpoint has no RNG state for rank {rank} (saved with fewer "
                    "processes); using rank 0's, so dropout will not resume exactly.",
                    UserWarning,
                    stacklevel=3,
                )
        if key in tensors:
            torch.set_rng_state(tensors[key])
        if "rng/data" in tensors:
            self._data_gen.set_state(tensors["rng/data"])
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                k = f"rng/torch_cuda/{i}/rank{rank}"
                if k in tensors:
                    torch.cuda.set_rng_state(tensors[k], i)

    def _save(
        self, name: str, optimizer: torch.optim.Optimizer, state: dict[str, Any], scaler: Any
    ) -> None:
        extra = self._rng_tensors()  # collective under torchrun: every rank takes part
        if not self.dist.is_main or self.output_dir is None:
            return
        if isinstance(self.objective, nn.Module):
            for k, v in self.objective.state_dict().items():
                extra[f"objective/{k}"] = v
        full_state = dict(state)
        full_state["scaler"] = scaler.state_dict() if scaler is not None else None
        save_checkpoint(
            self.output_dir / name,
            Checkpoint(
                model=self.model.state_dict(),
                optimizer=optimizer.state_dict(),
                extra_tensors=extra,
                state=full_state,
            ),
        )

    def _write_run_files(self, *, resumed_from: int | None) -> None:
        if not self.dist.is_main or self.output_dir is None:
            return
        meta = {
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "versions": package_versions(),
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "model": type(self.model).__name__,
            "objective": getattr(self.objective, "__qualname__", type(self.objective).__name__),
            "resumed_from_epoch": resumed_from,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(self.output_dir / "run.json", json.dumps(meta, indent=2) + "\n")

    def _write_metrics(self) -> None:
        if not self.dist.is_main or self.output_dir is None:
            return
        lines = "".join(json.dumps(h, sort_keys=True) + "\n" for h in self.history)
        atomic_write_text(self.output_dir / "metrics.jsonl", lines)

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Accuracy, worst-group accuracy and loss on every evaluation split (see the class
        docstring); the model is put back into train mode afterwards.

        Accuracy and worst-group accuracy come from
        :class:`~causalvl.diagnostics.probes.AccuracyProbe`, as in :func:`causalvl.diagnose`:
        the worst group is taken among groups of at least
        :data:`~causalvl.diagnostics.metrics.DEFAULT_MIN_GROUP_SIZE` (20) examples. When no
        group of a split is that large, every group is considered (with a warning) so that
        the split still has a worst-group accuracy to select checkpoints by."""
        model = self.model
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        try:
            for split, data in self.eval_data.items():
                metrics.update(self._evaluate_split(split, data))
        finally:
            model.train(was_training)
        return metrics

    def _evaluate_split(self, split: str, data: Dataset | DataLoader) -> dict[str, float]:
        from ..diagnostics.probes import AccuracyProbe, StepOutputs

        probe = AccuracyProbe(groups=True)
        loss_sum = 0.0
        loss_batches = 0
        for batch in self._eval_loader(data):
            batch = to_device(batch, self.device)
            with self._autocast():
                logits = self.predict(self.model, batch)
                loss = as_objective_output(self.objective(self.model, batch)).loss
            loss_sum += float(loss.detach().float())
            loss_batches += 1
            scores = batch_correctness(logits.float(), batch)
            if scores is None:
                continue
            group = batch.get("group") if isinstance(batch, Mapping) else None
            probe.update({"group": group}, StepOutputs.of(logits, correct=scores))
        out = {f"{split}/loss": loss_sum / max(1, loss_batches)}
        if not probe.n:
            return out
        result = probe.finish()
        out[f"{split}/accuracy"] = result.accuracy
        groups = result.groups
        if groups is not None:
            worst = groups.worst_group_accuracy
            if worst is None:
                worst = min(g.accuracy for g in groups.per_group)
                warnings.warn(
                    f"no group of eval split {split!r} has {groups.min_group_size} examples "
                    f"(the largest has {max(g.n for g in groups.per_group)}); its worst-group "
                    "accuracy is taken over every group and is mostly noise. Evaluate on more "
                    "data.",
                    UserWarning,
                    stacklevel=4,  # the caller of evaluate(), past its no_grad wrapper
                )
            out[f"{split}/worst_group_accuracy"] = worst
        return out

    # -- training ---------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp and self.device.type == "cuda":
            dtype = torch.bfloat16 if self.config.amp_dtype == "bfloat16" else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _is_better(self, value: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return not math.isnan(value)
        if self.config.select_mode == "max":
            return value > best + self.config.min_delta
        return value < best - self.config.min_delta

    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (fewer with early stopping).

        Args:
            resume: continue from ``<output_dir>/last`` (model, optimizer, schedule, RNG states,
                epoch, step, metrics history, best-so-far). Without a checkpoint there, a
                warning is given and training starts from scratch.

        Returns:
            TrainResult: history, final metrics and the best epoch.

        Raises:
            ConfigError: a setting does not fit the model or data (checked before the first
                step): unknown selection metric, ``resume`` without ``output_dir``, ...
        """
        cfg = self.config
        if resume and cfg.output_dir is None:
            raise ConfigError(
                "fit(resume=True) needs TrainConfig.output_dir (where last/ was written); "
                "got output_dir=None."
            )
        self.dist = _dist.setup(
            "cuda"
            if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        try:
            return self._fit(resume)
        finally:
            _dist.teardown(self.dist)

    def _fit(self, resume: bool) -> TrainResult:
        from ..model import IntervenedModel

        cfg = self.config
        self.device = self._resolve_device()
        if cfg.amp and self.device.type != "cuda":
            warnings.warn(
                f"TrainConfig.amp=True has no effect on device {self.device} (mixed precision "
                "runs on CUDA only); training in full precision.",
                UserWarning,
                stacklevel=3,
            )
        self.model.to(self.device)
        if isinstance(self.objective, nn.Module):
            self.objective.to(self.device)
        self._check_eval_splits()
        steps_per_epoch = self._steps_per_epoch()
        total_steps = steps_per_epoch * cfg.epochs
        optimizer = self._build_optimizer(self._trainable())
        self.optimizer = optimizer
        scaler = None
        if cfg.amp and self.device.type == "cuda" and cfg.amp_dtype == "float16":
            scaler = torch.amp.GradScaler("cuda")
        loss_module: nn.Module = _LossModule(self.model, self.objective)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            unused = cfg.find_unused_parameters
            if unused is None:
                unused = isinstance(self.model, IntervenedModel)
            loss_module = DistributedDataParallel(
                loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
            if isinstance(self.train_data, DataLoader) and not isinstance(
                getattr(self.train_data, "sampler", None), DistributedSampler
            ):
                warnings.warn(
                    "train_data is a DataLoader without a DistributedSampler: every rank will "
                    "see the same batches. Pass the Dataset and let the Trainer shard it.",
                    UserWarning,
                    stacklevel=3,
                )

        # -- resume -----------------------------------------------------------------------
        start_epoch = 0
        best_value: float | None = None
        best_epoch: int | None = None
        bad_epochs = 0
        resumed_from = None
        self.history = []
        self.global_step = 0
        if resume:
            last = self.output_dir / "last"  # type: ignore[operator]
            if not checkpoint_exists(last):
                # metrics.jsonl is written only after last/ was: a run that wrote it had one
                traces = checkpoint_traces(last, evidence=[last.parent / "metrics.jsonl"])
                if traces:
                    raise CheckpointError(
                        f"fit(resume=True): a checkpoint was written to {str(last)!r} but none "
                        f"is complete now ({'; '.join(traces)}). Restore it from a copy, or "
                        "call fit(resume=False) to train from scratch."
                    )
                warnings.warn(
                    f"fit(resume=True): no checkpoint in {str(last)!r}; starting from scratch.",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                ckpt = load_checkpoint(last)
                state = validate_train_state(ckpt.state, last, epochs=cfg.epochs)
                self._check_rng(ckpt.extra_tensors, last)
                try:
                    self.model.load_state_dict(ckpt.model, strict=True)
                    if isinstance(self.objective, nn.Module):
                        obj = {
                            k[len("objective/") :]: v
                            for k, v in ckpt.extra_tensors.items()
                            if k.startswith("objective/")
                        }
                        self.objective.load_state_dict(obj, strict=True)
                    if ckpt.optimizer is not None:
                        optimizer.load_state_dict(ckpt.optimizer)
                    if scaler is not None and state.get("scaler"):
                        scaler.load_state_dict(state["scaler"])
                except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise CheckpointError(
                        f"the checkpoint in {str(last)!r} does not match this model / optimizer "
                        f"({exc}); resume with the same model and TrainConfig."
                    ) from exc
                start_epoch = int(state["epoch"])
                self.global_step = int(state["step"])
                self.history = [dict(h) for h in state.get("history", [])]
                best = state.get("best") or {}
                best_value, best_epoch = best.get("value"), best.get("epoch")
                bad_epochs = int(state.get("bad_epochs", 0))
                self._restore_rng(ckpt.extra_tensors)
                resumed_from = start_epoch
                if self.dist.is_main:
                    logger.info("resumed from %s after epoch %d", last, start_epoch)
        self._write_run_files(resumed_from=resumed_from)

        self.should_stop = False
        # a run that had already stopped early stays stopped when resumed
        stopped_early = cfg.patience is not None and bad_epochs >= cfg.patience
        for cb in self.callbacks:
            cb.on_train_begin(self)
        set_progress = getattr(self.objective, "set_progress", None)
        params = self._trainable()
        stages: list[int | None] = [None]
        if self.objective is _intervened_objective:
            n_stages = len(self.model.stages())  # type: ignore[operator]
            if n_stages > 1:
                stages = list(range(n_stages))
                if self.dist.is_main:
                    logger.info("%d optimizer steps per batch: %s", n_stages, self.model.stages())  # type: ignore[operator]
        for epoch in range(start_epoch, cfg.epochs):
            if self.should_stop or stopped_early:
                break
            self.epoch = epoch
            if self.objective is _intervened_objective:  # epoch-scheduled losses (GGE-Decompose)
                self.model.set_epoch(epoch, cfg.epochs)  # type: ignore[operator]
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            self.model.train()
            if isinstance(self.objective, nn.Module):
                self.objective.train()
            sums: dict[str, torch.Tensor] = {}
            steps = 0
            loader = self._train_loader(epoch)
            bar = progress_bar(
                loader, enabled=cfg.progress and self.dist.is_main, desc=self._bar_label(epoch)
            )
            factor = 1.0
            for batch in bar:
                batch = to_device(batch, self.device)
                factor = lr_factor(cfg, epoch=epoch, step=self.global_step, total_steps=total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                if callable(set_progress):
                    set_progress(self.global_step, total_steps)
                loss = torch.zeros((), device=self.device)
                parts: dict[str, torch.Tensor] = {}
                # several stages (GGE-iter): one forward pass and optimizer step each, the
                # gradients of earlier stages kept, as in the published recipe
                for stage in stages:
                    with self._autocast():
                        stage_loss, parts = loss_module(batch, stage)
                    if not torch.isfinite(stage_loss.detach()):
                        raise InputError(
                            f"the training loss is {float(stage_loss)} at epoch {epoch + 1}, step "
                            f"{self.global_step + 1}; lower TrainConfig.lr or set grad_clip."
                        )
                    if scaler is not None:
                        scaler.scale(stage_loss).backward()
                        scaler.unscale_(optimizer)
                    else:
                        stage_loss.backward()
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    loss = loss + stage_loss.detach().float()
                optimizer.zero_grad(set_to_none=True)
                self.global_step += 1
                steps += 1
                record = {"loss": loss.detach().float(), **{k: v.float() for k, v in parts.items()}}
                for k, v in record.items():  # no zeros tensor per key and step: add in place
                    if k in sums:
                        sums[k].add_(v)
                    else:
                        sums[k] = v.detach().clone()
                if cfg.progress and self.dist.is_main and hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{float(record['loss']):.4f}", refresh=False)
                if cfg.log_every and self.global_step % cfg.log_every == 0 and self.dist.is_main:
                    logger.info(
                        "epoch %d step %d: loss %.4f", epoch + 1, self.global_step, float(loss)
                    )
                for cb in self.callbacks:
                    cb.on_step_end(self, self.global_step, parts)
            if steps == 0:
                raise ConfigError(
                    "an epoch had no training batches (drop_last=True with fewer examples than "
                    "batch_size?); lower batch_size or set drop_last=False."
                )
            train_metrics = self._reduce_means(sums, steps)
            metrics = {f"train/{k}": v for k, v in train_metrics.items()}
            metrics.update(self.evaluate())
            row = {"epoch": float(epoch + 1), "lr": cfg.lr * factor, **metrics}
            self.history.append(row)
            improved = False
            if cfg.select_metric is not None:
                value = metrics.get(cfg.select_metric)
                if value is None:
                    raise ConfigError(
                        f"TrainConfig.select_metric = {cfg.select_metric!r} was not produced "
                        f"by evaluation; available: {sorted(metrics)}."
                    )
                if self._is_better(value, best_value):
                    best_value, best_epoch, bad_epochs, improved = value, epoch + 1, 0, True
                else:
                    bad_epochs += 1
            if self.dist.is_main:
                logger.info(
                    "epoch %d/%d: %s",
                    epoch + 1,
                    cfg.epochs,
                    ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                )
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                stopped_early = True
            state = {
                "epoch": epoch + 1,
                "step": self.global_step,
                "history": self.history,
                "best": {"metric": cfg.select_metric, "value": best_value, "epoch": best_epoch},
                "bad_epochs": bad_epochs,
                "scheduler": {"name": cfg.schedule, "factor": factor},
                "world_size": self.dist.world_size,
                "config": cfg.to_dict(),
            }
            if self.output_dir is not None:
                if improved and cfg.save_best:
                    self._save("best", optimizer, state, scaler)
                self._save("last", optimizer, state, scaler)
                self._write_metrics()
                _dist.barrier(self.dist)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, metrics)
            if stopped_early:
                if self.dist.is_main:
                    logger.info(
                        "early stopping after epoch %d: %s did not improve for %d epochs",
                        epoch + 1,
                        cfg.select_metric,
                        bad_epochs,
                    )
                break
            if self.should_stop:
                stopped_early = epoch + 1 < cfg.epochs
                break

        if cfg.load_best_at_end and best_epoch is not None:
            self.load_best()
        final = {k: v for k, v in (self.history[-1] if self.history else {}).items()}
        final.pop("epoch", None)
        final.pop("lr", None)
        result = TrainResult(
            epochs_completed=len(self.history),
            global_step=self.global_step,
            history=tuple(dict(h) for h in self.history),
            final_metrics=final,
            best_metric=cfg.select_metric,
            best_value=best_value,
            best_epoch=best_epoch,
            stopped_early=stopped_early,
            output_dir=cfg.output_dir,
        )
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _reduce_means(self, sums: Mapping[str, torch.Tensor], steps: int) -> dict[str, float]:
        keys = sorted(sums)
        vec = torch.stack(
            [sums[k].double() for k in keys]
            + [torch.tensor(float(steps)).double().to(sums[keys[0]].device)]
        )
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(vec)
        return {k: float(vec[i] / vec[-1]) for i, k in enumerate(keys)}

    def load_best(self) -> None:
        """Load the weights of ``<output_dir>/best`` into the model (and objective)."""
        if self.output_dir is None:
            raise ConfigError("load_best needs TrainConfig.output_dir; got None.")
        ckpt = load_checkpoint(self.output_dir / "best")
        self.model.load_state_dict(ckpt.model, strict=True)
        if isinstance(self.objective, nn.Module):
            obj = {
                k[len("objective/") :]: v
                for k, v in ckpt.extra_tensors.items()
                if k.startswith("objective/")
            }
            self.objective.load_state_dict(obj, strict=True)


__all__: Sequence[str] = ["Callback", "Trainer", "TrainResult", "as_objective_output"]
