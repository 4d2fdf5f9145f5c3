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
    >>> vl = causalvl.intervene(causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8),
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
must agree. Evaluation runs with every generator training draws from put back afterwards, so
evaluation splits, progress bars and logging never change the trained weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from ..batch import batch_correctness, collate_of, logits_of, tensor_inputs, to_device
from ..config import atomic_write_text
from ..diagnostics.probes import AccuracyProbe
from ..errors import CheckpointError, ConfigError, InputError
from ..outputs import ObjectiveOutput
from ..progress import progress_bar
from . import distributed as _dist
from .checkpoint import (
    check_rng_states,
    checkpoint_exists,
    checkpoint_traces,
    load_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig, check_select_metric
from .samplers import balanced_weights
from .schedules import lr_factor
from .state import OBJECTIVE_PREFIX, RNG_PREFIX, TrainState, strip_prefix

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
    from ..wrapper import IntervenedModel

    if isinstance(model, IntervenedModel):
        return model(batch).logits
    return logits_of(model(**tensor_inputs(batch)))


def _intervened_objective(
    model: nn.Module, batch: Mapping[str, Any], stage: int | None = None
) -> ObjectiveOutput:
    return model.objective(model(batch), batch, stage=stage)  # type: ignore[operator]


def accepts_stage(objective: Callable[..., Any]) -> bool:
    """Whether ``objective`` can be called with a ``stage=`` keyword (a ``stage`` parameter
    or ``**kwargs``; for an ``nn.Module``, its ``forward``)."""
    target = objective.forward if isinstance(objective, nn.Module) else objective
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return False
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD or (p.name == "stage" and p.kind in keyword)
        for p in params
    )


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


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
            out = self._objective(self.model, batch, stage=stage)  # type: ignore[call-arg]
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
            For a model with several optimizer stages it must also take ``stage=``:
            ``def objective(model, batch, stage=None): return model.objective(model(batch),
            batch, stage=stage)``.
        callbacks: :class:`Callback` instances.
        predict: ``predict(model, batch) -> logits`` for evaluation (default
            :func:`default_predict`, or ``objective.predict`` when the objective has one).
        label: a name for this run shown in progress bars (e.g. ``"model 3/10: CF-VQA"``).

    Evaluation runs every epoch on every split: ``"<split>/accuracy"`` (argmax vs class-id
    labels; VQA accuracy for soft scores; in-batch retrieval top-1 for square contrastive
    logits without labels), ``"<split>/worst_group_accuracy"`` when batches carry ``group``,
    and ``"<split>/loss"``. Under torchrun every rank evaluates the full splits (so early
    stopping agrees); only rank 0 logs and writes files.

    ``trainer.state`` is the run's :class:`~causalvl.training.state.TrainState` (epochs
    completed, steps, history, best-so-far): what every checkpoint holds and what
    ``fit(resume=True)`` restores. A model with several optimizer stages
    (``vl.stages()``, GGE-iter) takes one optimizer step per stage and batch; a custom
    ``objective`` is then called as ``objective(model, batch, stage=i)`` and must accept it.
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
        from ..wrapper import IntervenedModel

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
        self._group_warned: set[str] = set()  # splits warned about their groups in this fit
        self.epoch = 0
        self.state = TrainState()
        self.device = torch.device("cpu")
        self.dist = _dist.DistInfo()
        self._data_gen = torch.Generator()
        self._loader_gen = torch.Generator()
        self._eval_gen = torch.Generator()
        self._balance_weights: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._loss_module: nn.Module | None = None
        self._params: list[nn.Parameter] = []
        self._stages: list[int | None] = [None]
        self._total_steps = 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (batches; GGE-iter's stages count once)."""
        return self.state.step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.state.step = int(value)

    @property
    def history(self) -> list[dict[str, float]]:
        """One metrics row per completed epoch (see :class:`TrainResult`)."""
        return self.state.history

    @history.setter
    def history(self, value: list[dict[str, float]]) -> None:
        self.state.history = list(value)

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
        return collate_of(data)

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
            with self._isolated_rng():  # a dataset that draws must not shift training
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
        """Every generator training draws from, by :attr:`TrainState.rng` name (a collective
        under torchrun: every rank must call it)."""
        out = {"data": self._data_gen.get_state(), "loader": self._loader_gen.get_state()}
        cpu = torch.get_rng_state()
        for r, state in enumerate(_dist.gather_tensor(self.dist, cpu)):
            out[f"torch_cpu/rank{r}"] = state
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                gathered = _dist.gather_tensor(self.dist, state)
                for r, s in enumerate(gathered):
                    out[f"torch_cuda/{i}/rank{r}"] = s
        # the model's own generators (IntervenedModel: shuffle / noise counterfactual inputs)
        model_rng = getattr(self.model, "rng_state", None)
        if callable(model_rng):
            for k, v in model_rng().items():
                out[f"model/{k}"] = v
        return out

    def _check_rng(self, rng: Mapping[str, torch.Tensor], where: Any) -> None:
        live = {"data": self._data_gen.get_state(), "loader": self._loader_gen.get_state()}
        live.update({k: torch.get_rng_state() for k in rng if k.startswith("torch_cpu/")})
        model_rng = getattr(self.model, "rng_state", None)
        if callable(model_rng):
            live.update({f"model/{k}": v for k, v in model_rng().items()})
        check_rng_states(
            {RNG_PREFIX + k: v for k, v in rng.items()},
            {RNG_PREFIX + k: v for k, v in live.items()},
            where,
        )

    def _restore_rng(self, rng: Mapping[str, torch.Tensor]) -> None:
        if callable(getattr(self.model, "set_rng_state", None)):
            n = len("model/")
            mine = {k[n:]: v for k, v in rng.items() if k.startswith("model/")}
            self.model.set_rng_state(mine)  # type: ignore[operator]
        rank = self.dist.rank
        key = f"torch_cpu/rank{rank}"
        if key not in rng:
            key = "torch_cpu/rank0"
            if self.dist.enabled:
                warnings.warn(
                    f"the checkpoint has no RNG state for rank {rank} (saved with fewer "
                    "processes); using rank 0's, so dropout will not resume exactly.",
                    UserWarning,
                    stacklevel=6,
                )
        if key in rng:
            torch.set_rng_state(rng[key])
        if "data" in rng:
            self._data_gen.set_state(rng["data"])
        if "loader" in rng:  # absent from checkpoints of earlier versions (reseeded per epoch)
            self._loader_gen.set_state(rng["loader"])
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                k = f"torch_cuda/{i}/rank{rank}"
                if k in rng:
                    torch.cuda.set_rng_state(rng[k], i)

    @contextlib.contextmanager
    def _isolated_rng(self) -> Iterator[None]:
        """Run the block without touching training's random state: the global CPU (and this
        device's CUDA) generator and the model's own generators are put back afterwards, so
        evaluation, logging and display cannot change what training draws next."""
        cpu = torch.get_rng_state()
        cuda = None
        if self.device.type == "cuda" and torch.cuda.is_initialized():
            cuda = torch.cuda.get_rng_state(self.device)
        get_model_rng = getattr(self.model, "rng_state", None)
        has_model_rng = callable(get_model_rng) and callable(
            getattr(self.model, "set_rng_state", None)
        )
        model_rng = get_model_rng() if has_model_rng else None  # type: ignore[misc]
        try:
            yield
        finally:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
            if model_rng is not None:
                self.model.set_rng_state(model_rng)  # type: ignore[operator]

    def _snapshot(self) -> TrainState:
        """The current :class:`TrainState` with the weights, optimizer, scaler and RNG states
        (a collective under torchrun: every rank must call it)."""
        assert self.optimizer is not None
        rng = self._rng_tensors()
        objective = {}
        if isinstance(self.objective, nn.Module):
            objective = dict(self.objective.state_dict())
        return dataclasses.replace(
            self.state,
            model=self.model.state_dict(),
            objective=objective,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            rng=rng,
        )

    def _restore(self, state: TrainState, where: Path) -> None:
        """Load a :class:`TrainState` into the model, objective, optimizer, scaler and
        generators, and keep its counters as :attr:`state`. The RNG states are checked before
        anything is loaded; a part that does not fit is a :class:`CheckpointError`."""
        assert self.optimizer is not None
        self._check_rng(state.rng, where)
        try:
            self.model.load_state_dict(state.model or {}, strict=True)
            if isinstance(self.objective, nn.Module):
                self.objective.load_state_dict(state.objective, strict=True)
            if state.optimizer is not None:
                self.optimizer.load_state_dict(state.optimizer)
            if self.scaler is not None and state.scaler:
                self.scaler.load_state_dict(state.scaler)
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"the checkpoint in {str(where)!r} does not match this model / optimizer "
                f"({exc}); resume with the same model and TrainConfig."
            ) from exc
        self._restore_rng(state.rng)
        self.state = dataclasses.replace(
            state.counters(), world_size=self.dist.world_size, config=self.config.to_dict()
        )

    def _resume(self) -> int | None:
        """Restore ``<output_dir>/last``; returns the epochs it had completed (``None`` when
        there is no checkpoint: training starts from scratch with a warning)."""
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
                stacklevel=4,
            )
            return None
        state = TrainState.from_checkpoint(load_checkpoint(last), last, epochs=self.config.epochs)
        self._restore(state, last)
        if self.dist.is_main:
            logger.info("resumed from %s after epoch %d", last, state.epoch)
        return state.epoch

    def _checkpoint(self, *, improved: bool) -> None:
        """Write ``last/`` (and ``best/`` when the epoch improved) and ``metrics.jsonl``."""
        if self.output_dir is None:
            return
        snapshot = self._snapshot()  # every rank takes part in gathering the RNG states
        if self.dist.is_main:
            checkpoint = snapshot.to_checkpoint()
            if improved and self.config.save_best:
                save_checkpoint(self.output_dir / "best", checkpoint)
            save_checkpoint(self.output_dir / "last", checkpoint)
            self._write_metrics()
        _dist.barrier(self.dist)

    def _write_run_files(self, *, resumed_from: int | None) -> None:
        if not self.dist.is_main or self.output_dir is None:
            return
        meta = {
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "versions": {k: v or "not installed" for k, v in runtime.package_versions().items()},
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
        docstring); the model is put back into its previous mode afterwards, and the global
        and model random states are restored, so a :class:`Callback` may call it without
        changing what training draws next.

        Accuracy and worst-group accuracy come from
        :class:`~causalvl.diagnostics.probes.AccuracyProbe`, as in :func:`causalvl.diagnose`:
        the worst group is taken among groups of at least ``TrainConfig.min_group_size``
        (default :data:`~causalvl.diagnostics.metrics.DEFAULT_MIN_GROUP_SIZE`, 20) examples,
        and the groups left out are named in a warning (once per split and ``fit``). When no
        group of a split is that large, every group is considered (with a warning) so that
        the split still has a worst-group accuracy to select checkpoints by."""
        metrics: dict[str, float] = {}
        # an objective or dataset that draws must not shift training's random state
        with self._isolated_rng(), runtime.eval_mode(self.model):
            for split, data in self.eval_data.items():
                metrics.update(self._evaluate_split(split, data))
        return metrics

    def _evaluate_split(self, split: str, data: Dataset | DataLoader) -> dict[str, float]:
        probe = AccuracyProbe(groups=True, min_group_size=self.config.min_group_size)
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
            probe.add(scores, batch.get("group") if isinstance(batch, Mapping) else None)
        out = {f"{split}/loss": loss_sum / max(1, loss_batches)}
        if not probe.n:
            return out
        result = probe.finish()
        out[f"{split}/accuracy"] = result.accuracy
        groups = result.groups
        if groups is not None:
            worst = groups.worst_group_accuracy
            setting = f"TrainConfig(min_group_size={groups.min_group_size})"
            if worst is None:
                worst = min(g.accuracy for g in groups.per_group)
                self._warn_once(
                    split,
                    f"no group of eval split {split!r} has {groups.min_group_size} examples "
                    f"(the largest has {max(g.n for g in groups.per_group)}); its worst-group "
                    "accuracy is taken over every group and is mostly noise. Evaluate on more "
                    f"data, or lower {setting}.",
                )
            elif groups.small_groups:
                sizes = ", ".join(f"{g.name} ({g.n})" for g in groups.small_groups)
                self._warn_once(
                    split,
                    f"eval split {split!r}: {len(groups.small_groups)} group(s) under "
                    f"{groups.min_group_size} examples are left out of its worst-group "
                    f"accuracy: {sizes}. Lower {setting} to count them (1 counts every group).",
                )
            out[f"{split}/worst_group_accuracy"] = worst
        return out

    def _warn_once(self, split: str, message: str) -> None:
        """Warn about ``split``'s groups once per ``fit`` (evaluation runs every epoch)."""
        if split in self._group_warned:
            return
        self._group_warned.add(split)
        # the caller of evaluate(): past _evaluate_split, evaluate and its no_grad wrapper
        warnings.warn(message, UserWarning, stacklevel=5)

    # -- training ---------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp and self.device.type == "cuda":
            dtype = torch.bfloat16 if self.config.amp_dtype == "bfloat16" else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

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
        cfg = self.config
        self._setup()
        self.state = TrainState(world_size=self.dist.world_size, config=cfg.to_dict())
        resumed_from = self._resume() if resume else None
        self._write_run_files(resumed_from=resumed_from)
        self.should_stop = False
        self._group_warned = set()
        # a run that had already stopped early stays stopped when resumed
        stopped_early = self.state.patience_exhausted(cfg.patience)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        for epoch in range(self.state.epoch, cfg.epochs):
            if stopped_early or self.should_stop:
                break
            train_metrics = self._train_epoch(epoch)
            if self._end_epoch(epoch, train_metrics):
                stopped_early = True
            elif self.should_stop:
                stopped_early = epoch + 1 < cfg.epochs
        return self._finish(stopped_early=stopped_early)

    # -- the steps of fit -------------------------------------------------------------------
    def _setup(self) -> None:
        """Device, optimizer, GradScaler, the (DDP-wrapped) loss module and the optimizer
        stages; every setting is checked here, before the first step."""
        cfg = self.config
        self.device = self._resolve_device()
        if cfg.amp and self.device.type != "cuda":
            warnings.warn(
                f"TrainConfig.amp=True has no effect on device {self.device} (mixed precision "
                "runs on CUDA only); training in full precision.",
                UserWarning,
                stacklevel=4,
            )
        self.model.to(self.device)
        if isinstance(self.objective, nn.Module):
            self.objective.to(self.device)
        self._check_eval_splits()
        self._stages = self._optimizer_stages()
        self._total_steps = self._steps_per_epoch() * cfg.epochs
        self._params = self._trainable()
        self.optimizer = self._build_optimizer(self._params)
        self.scaler = None
        if cfg.amp and self.device.type == "cuda" and cfg.amp_dtype == "float16":
            self.scaler = torch.amp.GradScaler("cuda")
        self._loss_module = self._wrap_loss_module()

    def _wrap_loss_module(self) -> nn.Module:
        from ..wrapper import IntervenedModel

        loss_module: nn.Module = _LossModule(self.model, self.objective)
        if not self.dist.enabled:
            return loss_module
        from torch.nn.parallel import DistributedDataParallel

        unused = self.config.find_unused_parameters
        if unused is None:
            unused = isinstance(self.model, IntervenedModel)
        if isinstance(self.train_data, DataLoader) and not isinstance(
            getattr(self.train_data, "sampler", None), DistributedSampler
        ):
            warnings.warn(
                "train_data is a DataLoader without a DistributedSampler: every rank will "
                "see the same batches. Pass the Dataset and let the Trainer shard it.",
                UserWarning,
                stacklevel=5,
            )
        return DistributedDataParallel(
            loss_module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=unused,
        )

    def _optimizer_stages(self) -> list[int | None]:
        """``[None]`` (one optimizer step per batch on the whole objective), or one index per
        optimizer stage of an IntervenedModel that declares several (GGE-iter)."""
        from ..wrapper import IntervenedModel

        if not isinstance(self.model, IntervenedModel):
            return [None]
        stages = self.model.stages()
        if len(stages) <= 1:
            return [None]
        if self.objective is not _intervened_objective and not accepts_stage(self.objective):
            name = getattr(self.objective, "__qualname__", type(self.objective).__name__)
            raise ConfigError(
                f"the model trains in {len(stages)} optimizer stages per batch {stages} (one "
                f"forward pass and optimizer step each, objective(model, batch, stage=i)), but "
                f"the objective {name} takes no 'stage' argument, so the stages would be lost. "
                "Accept it and pass it on, e.g.\n"
                "    def objective(model, batch, stage=None):\n"
                "        return model.objective(model(batch), batch, stage=stage)"
            )
        if self.dist.is_main:
            logger.info("%d optimizer steps per batch: %s", len(stages), stages)
        return list(range(len(stages)))

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data; returns ``"train/<part>"`` means over its steps."""
        from ..wrapper import IntervenedModel

        cfg = self.config
        self.epoch = epoch
        if isinstance(self.model, IntervenedModel):  # epoch-scheduled losses (GGE-Decompose)
            self.model.set_epoch(epoch, cfg.epochs)
        for cb in self.callbacks:
            cb.on_epoch_begin(self, epoch)
        self.model.train()
        if isinstance(self.objective, nn.Module):
            self.objective.train()
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        show = cfg.progress and self.dist.is_main
        bar = progress_bar(self._train_loader(epoch), enabled=show, desc=self._bar_label(epoch))
        for batch in bar:
            record, parts = self._train_batch(to_device(batch, self.device), epoch)
            steps += 1
            for k, v in record.items():  # no zeros tensor per key and step: add in place
                if k in sums:
                    sums[k].add_(v)
                else:
                    sums[k] = v.detach().clone()
            if show and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(record['loss']):.4f}", refresh=False)
            if cfg.log_every and self.global_step % cfg.log_every == 0 and self.dist.is_main:
                logger.info(
                    "epoch %d step %d: loss %.4f",
                    epoch + 1,
                    self.global_step,
                    float(record["loss"]),
                )
            for cb in self.callbacks:
                cb.on_step_end(self, self.global_step, parts)
        if steps == 0:
            raise ConfigError(
                "an epoch had no training batches (drop_last=True with fewer examples than "
                "batch_size?); lower batch_size or set drop_last=False."
            )
        return {f"train/{k}": v for k, v in self._reduce_means(sums, steps).items()}

    def _train_batch(
        self, batch: Any, epoch: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Set the lr, then take one optimizer step per stage on ``batch``; returns the
        record (``"loss"``: summed over the stages, and the parts) and the last stage's parts."""
        assert self.optimizer is not None
        factor = lr_factor(
            self.config, epoch=epoch, step=self.global_step, total_steps=self._total_steps
        )
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self.state.lr_factor = factor
        set_progress = getattr(self.objective, "set_progress", None)
        if callable(set_progress):
            set_progress(self.global_step, self._total_steps)
        loss = torch.zeros((), device=self.device)
        parts: dict[str, torch.Tensor] = {}
        # several stages (GGE-iter): one forward pass and optimizer step each, the gradients
        # of earlier stages kept, as in the published recipe
        for stage in self._stages:
            stage_loss, parts = self._step(batch, stage, epoch)
            loss = loss + stage_loss.detach().float()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        record = {"loss": loss.detach().float(), **{k: v.float() for k, v in parts.items()}}
        return record, parts

    def _step(
        self, batch: Any, stage: int | None, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward, backward and one optimizer step (GradScaler and gradient clipping
        included) on ``stage`` of the objective; gradients are not zeroed."""
        assert self.optimizer is not None and self._loss_module is not None
        with self._autocast():
            loss, parts = self._loss_module(batch, stage)
        if not torch.isfinite(loss.detach()):
            raise InputError(
                f"the training loss is {float(loss)} at epoch {epoch + 1}, step "
                f"{self.global_step + 1}; lower TrainConfig.lr or set grad_clip."
            )
        scaler = self.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.config.grad_clip)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        return loss, parts

    def _end_epoch(self, epoch: int, train_metrics: Mapping[str, float]) -> bool:
        """Evaluate, record the epoch, select, checkpoint and call back; returns whether early
        stopping triggered."""
        cfg = self.config
        metrics = dict(train_metrics)
        metrics.update(self.evaluate())  # restores the random state itself
        state = self.state
        state.history.append({"epoch": float(epoch + 1), "lr": cfg.lr * state.lr_factor, **metrics})
        state.epoch = epoch + 1
        improved = self._select(metrics, epoch)
        if self.dist.is_main:
            logger.info(
                "epoch %d/%d: %s",
                epoch + 1,
                cfg.epochs,
                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            )
        stop = state.patience_exhausted(cfg.patience)
        self._checkpoint(improved=improved)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, metrics)
        if stop and self.dist.is_main:
            logger.info(
                "early stopping after epoch %d: %s did not improve for %d epochs",
                epoch + 1,
                cfg.select_metric,
                state.bad_epochs,
            )
        return stop

    def _select(self, metrics: Mapping[str, float], epoch: int) -> bool:
        """Track ``select_metric``; returns whether epoch ``epoch`` (0-based) is the best."""
        cfg = self.config
        if cfg.select_metric is None:
            return False
        value = metrics.get(cfg.select_metric)
        if value is None:
            raise ConfigError(
                f"TrainConfig.select_metric = {cfg.select_metric!r} was not produced "
                f"by evaluation; available: {sorted(metrics)}."
            )
        return self.state.update_best(
            value, epoch=epoch + 1, mode=cfg.select_mode, min_delta=cfg.min_delta
        )

    def _finish(self, *, stopped_early: bool) -> TrainResult:
        """Load ``best/`` if asked, build the :class:`TrainResult` and call back."""
        cfg, state = self.config, self.state
        if cfg.load_best_at_end and state.best_epoch is not None:
            self.load_best()
        final = dict(state.history[-1]) if state.history else {}
        final.pop("epoch", None)
        final.pop("lr", None)
        result = TrainResult(
            epochs_completed=len(state.history),
            global_step=state.step,
            history=tuple(dict(h) for h in state.history),
            final_metrics=final,
            best_metric=cfg.select_metric,
            best_value=state.best_value,
            best_epoch=state.best_epoch,
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
            self.objective.load_state_dict(strip_prefix(ckpt.extra_tensors, OBJECTIVE_PREFIX))


__all__: Sequence[str] = ["Callback", "Trainer", "TrainResult", "as_objective_output"]
