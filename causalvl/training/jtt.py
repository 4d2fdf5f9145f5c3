"""Just Train Twice (Liu et al., ICML 2021): train ERM briefly, then retrain a fresh model on the
training set with the examples the first model got wrong repeated.

* :func:`jtt_error_set` -- the indices of the training examples a model misclassifies;
* :func:`upsample` -- a Dataset view in which listed examples appear ``factor`` times;
* :func:`train_jtt` -- the whole recipe with :class:`~causalvl.training.Trainer`.

The official code (``anniesch/jtt``) duplicates the error set: stage 2 trains on
``ConcatDataset([train, Subset(train, errors * up_weight)])``, so each error example appears
``1 + up_weight`` times; ``train_jtt(upweight=...)`` takes the same ``up_weight``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..batch import collate_of, ordered_loader, to_device
from ..errors import ConfigError, InputError
from ..runtime import eval_mode, module_device
from .config import TrainConfig
from .trainer import PredictFn, Trainer, TrainResult, default_predict

logger = logging.getLogger("causalvl.training")

__all__ = ["JTTResult", "UpsampledDataset", "jtt_error_set", "train_jtt", "upsample"]


def _check_dataset(data: Any, where: str) -> int:
    if isinstance(data, DataLoader):
        raise ConfigError(
            f"{where} needs a Dataset (indexable, with len), not a DataLoader: the indices must "
            "refer to a fixed order. Pass loader.dataset."
        )
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ConfigError(
            f"{where} needs a map-style Dataset (with __getitem__ and __len__), got "
            f"{type(data).__name__}."
        )
    n = len(data)
    if n == 0:
        raise InputError(f"{where}: the dataset is empty.")
    return n


def _check_batch_size(batch_size: Any, where: str) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"{where}: batch_size = {batch_size!r}; pass an integer >= 1.")
    return batch_size


# ----------------------------------------------------------------------------------------
# stage 1: the error set
# ----------------------------------------------------------------------------------------
@torch.no_grad()
def jtt_error_set(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 64,
    predict: PredictFn | None = None,
) -> torch.Tensor:
    """Indices of the examples of ``data`` that ``model`` gets wrong (JTT's error set).

    The model runs in eval mode under ``no_grad`` (as SpuCo does; the official JTT code reads
    the predictions of the training-mode pass of the last identification epoch) and is put
    back into its previous mode. An example is an error when the top answer is not the label
    (class ids ``(B,)``) or, for soft scores ``(B, A)``, when the top answer's score is below
    the example's best score.

    Args:
        model: an :class:`~causalvl.IntervenedModel` (its ``logits`` are used) or any
            ``nn.Module`` (called with the batch's tensor inputs, metadata keys removed).
        data: a map-style Dataset yielding dicts with ``labels``; its ``collate`` attribute is
            used when present. Read in order, so index ``i`` is ``data[i]``.
        batch_size: examples per forward pass.
        predict: ``predict(model, batch) -> logits (B, A)``; default as in the Trainer.

    Returns:
        ``(num_errors,)`` long tensor (CPU) of sorted indices into ``data``.

    Example:
        >>> from torch import nn
        >>> class Pairs(torch.utils.data.Dataset):
        ...     def __len__(self): return 4
        ...     def __getitem__(self, i):
        ...         return {"input": torch.tensor([float(i), 1.0]), "labels": i % 2}
        >>> net = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad(): _ = net.weight.copy_(torch.tensor([[0.0, 1.5], [1.0, 0.0]]))
        >>> jtt_error_set(net, Pairs(), batch_size=3)   # predicts 0, 0, 1, 1 for labels 0 1 0 1
        tensor([1, 2])
    """
    n = _check_dataset(data, "jtt_error_set")
    _check_batch_size(batch_size, "jtt_error_set")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"jtt_error_set: model must be an nn.Module, got {type(model).__name__}.")
    predict = predict or default_predict
    loader = ordered_loader(data, batch_size)
    device = module_device(model)
    with eval_mode(model):
        wrong: list[torch.Tensor] = []
        seen = 0
        for batch in loader:
            if not isinstance(batch, Mapping) or batch.get("labels") is None:
                keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
                raise InputError(
                    f"jtt_error_set needs 'labels' in every batch (class ids or soft scores); "
                    f"got {keys}."
                )
            batch = to_device(batch, device)
            logits = predict(model, batch)
            labels = torch.as_tensor(batch["labels"]).to(logits.device)
            if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
                raise InputError(
                    f"jtt_error_set needs answer logits (B, A) for B = {labels.shape[0]}; got "
                    f"{tuple(logits.shape)}."
                )
            pred = logits.argmax(-1)
            if labels.is_floating_point():
                if labels.shape != logits.shape:
                    raise InputError(
                        f"soft-score labels {tuple(labels.shape)} do not match the logits "
                        f"{tuple(logits.shape)}."
                    )
                got = labels.gather(1, pred[:, None]).squeeze(1)
                err = got < labels.max(-1).values
            else:
                if labels.dim() != 1:
                    raise InputError(
                        f"class-id labels must be (B,), got shape {tuple(labels.shape)}."
                    )
                err = pred != labels.long()
            wrong.append(err.nonzero().flatten().cpu() + seen)
            seen += int(labels.shape[0])
    if seen != n:
        raise InputError(f"jtt_error_set read {seen} examples but len(data) = {n}.")
    return torch.cat(wrong).long() if wrong else torch.zeros(0, dtype=torch.long)


# ----------------------------------------------------------------------------------------
# upsampling
# ----------------------------------------------------------------------------------------
class UpsampledDataset(Dataset):
    """A view of ``data`` followed by ``factor - 1`` extra copies of the listed examples.

    Item ``i < len(data)`` is ``data[i]``; item ``len(data) + j`` is
    ``data[indices[j % len(indices)]]`` (the layout of the official JTT code). Nothing is
    copied; ``collate`` is forwarded from ``data``. ``source_indices`` ``(len(self),)`` maps
    every item to its index in ``data``.
    """

    def __init__(self, data: Dataset, indices: torch.Tensor, factor: int) -> None:
        self.data = data
        self.indices = indices
        self.factor = factor
        self._n = len(data)  # type: ignore[arg-type]
        self._extra = indices.repeat(factor - 1)

    def __len__(self) -> int:
        return self._n + int(self._extra.numel())

    def __getitem__(self, i: int) -> Any:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for an UpsampledDataset of {len(self)}")
        if i < self._n:
            return self.data[i]
        return self.data[int(self._extra[i - self._n])]

    @property
    def source_indices(self) -> torch.Tensor:
        return torch.cat([torch.arange(self._n), self._extra])

    @property
    def collate(self) -> Callable[[list[Any]], Any] | None:
        return collate_of(self.data)


def upsample(data: Dataset, indices: Any, factor: int) -> UpsampledDataset:
    """A Dataset view in which the examples at ``indices`` appear ``factor`` times in total
    (``factor - 1`` extra copies appended after the original data); the others once.

    Args:
        data: a map-style Dataset.
        indices: ``(K,)`` integer indices into ``data`` (a tensor, list or array; no
            duplicates), e.g. from :func:`jtt_error_set`.
        factor: total copies of each listed example, ``>= 1`` (JTT's ``1 + up_weight``).

    Returns:
        :class:`UpsampledDataset` of length ``len(data) + (factor - 1) * K``.

    Example:
        >>> view = upsample(list("abcd"), [1, 3], factor=3)
        >>> len(view), "".join(view[i] for i in range(len(view)))
        (8, 'abcdbdbd')
    """
    n = _check_dataset(data, "upsample")
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ConfigError(
            f"upsample: factor = {factor!r}; pass an integer >= 1 (total copies of each listed "
            "example; JTT's up_weight u gives factor = u + 1)."
        )
    try:
        idx = torch.as_tensor(indices)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"upsample: indices must be integer indices into data ({exc}).") from exc
    if idx.numel() == 0:
        idx = idx.reshape(0).long()
    if idx.dim() != 1 or idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise InputError(
            f"upsample: indices must be a (K,) integer tensor, got dtype {idx.dtype} and shape "
            f"{tuple(idx.shape)} (use (mask).nonzero().flatten() for a boolean mask)."
        )
    idx = idx.long().cpu()
    if idx.numel():
        if int(idx.min()) < 0 or int(idx.max()) >= n:
            raise InputError(
                f"upsample: indices span [{int(idx.min())}, {int(idx.max())}] but the dataset "
                f"has {n} examples."
            )
        if idx.unique().numel() != idx.numel():
            raise InputError(
                "upsample: indices contain duplicates; pass each example once and set factor."
            )
    return UpsampledDataset(data, idx, factor)


# ----------------------------------------------------------------------------------------
# the recipe
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JTTResult:
    """What :func:`train_jtt` returns.

    Attributes:
        model: the stage-2 model (trained on the upsampled data; the best checkpoint when the
            config loads it at the end).
        error_set: ``(K,)`` long indices of the training examples the identification model
            got wrong.
        identification: the :class:`TrainResult` of stage 1 (ERM for ``id_epochs``).
        result: the :class:`TrainResult` of stage 2.
        upweight: the ``up_weight`` used (each error example appears ``1 + upweight`` times).
        upsampled_size: examples per stage-2 epoch, ``len(train_data) + upweight * K``.
    """

    model: nn.Module
    error_set: torch.Tensor
    identification: TrainResult
    result: TrainResult
    upweight: int
    upsampled_size: int

    @property
    def error_rate(self) -> float:
        """``K / len(train_data)``: the identification model's training error."""
        k = int(self.error_set.numel())
        return k / (self.upsampled_size - self.upweight * k)


def _stage_dir(config: TrainConfig, name: str) -> str | None:
    return None if config.output_dir is None else str(Path(config.output_dir) / name)


def train_jtt(
    build_model: Callable[[], nn.Module],
    train_data: Dataset,
    *,
    id_epochs: int,
    upweight: int,
    config: TrainConfig,
    eval_data: Any = None,
    id_config: TrainConfig | None = None,
    objective: Any = None,
    predict: PredictFn | None = None,
) -> JTTResult:
    """Just Train Twice: ERM for ``id_epochs``, find its errors, retrain a fresh model with each
    error example repeated ``1 + upweight`` times.

    1. ``id_model = build_model()`` trained on ``train_data`` for ``id_epochs`` epochs with
       ``id_config`` (default: ``config`` with ``epochs=id_epochs``, no evaluation, no
       selection, checkpoints in ``<output_dir>/identification``);
    2. ``errors = jtt_error_set(id_model, train_data)``;
    3. ``model = build_model()`` trained on ``upsample(train_data, errors, upweight + 1)`` with
       ``config`` and ``eval_data`` (checkpoints in ``<output_dir>/final``): select it by
       worst-group validation accuracy (``select_metric="val/worst_group_accuracy"``, with
       ``group`` in the validation batches), as the paper does.

    The paper uses strong weight decay in both stages (1.0 Waterbirds, 0.1 CelebA, lr 1e-5,
    SGD) and ``up_weight`` in {20, 50, 100}: without regularisation the identification model
    fits its training set and the error set comes out empty (a warning says so).

    Args:
        build_model: returns a **new** model each call (same architecture and init recipe),
            an :class:`~causalvl.IntervenedModel` or an ``nn.Module`` with ``objective``.
        train_data: the training Dataset (map-style; ``labels`` in every example).
        id_epochs: ``T``, epochs of the identification model (>= 1).
        upweight: ``up_weight`` (>= 0): extra copies of each error example.
        config: the stage-2 :class:`TrainConfig`.
        eval_data: stage-2 evaluation splits (as for :class:`Trainer`).
        id_config: the stage-1 config (overrides the default described above).
        objective, predict: passed to both Trainers (see :class:`Trainer`).

    Returns:
        :class:`JTTResult`.
    """
    n = _check_dataset(train_data, "train_jtt")
    if isinstance(build_model, nn.Module) or not callable(build_model):
        raise ConfigError(
            f"train_jtt: build_model must be a function returning a new model, got "
            f"{type(build_model).__name__}."
        )
    for name, value, low in (("id_epochs", id_epochs, 1), ("upweight", upweight, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"train_jtt: {name} = {value!r}; pass an integer >= {low}.")
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            f"train_jtt: config must be a causalvl.TrainConfig, got {type(config).__name__}."
        )
    if id_config is None:
        id_config = config.replace(
            epochs=id_epochs,
            output_dir=_stage_dir(config, "identification"),
            select_metric=None,
            patience=None,
            load_best_at_end=False,
        )
    elif not isinstance(id_config, TrainConfig):
        raise ConfigError(
            f"train_jtt: id_config must be a causalvl.TrainConfig, got {type(id_config).__name__}."
        )
    id_model = build_model()
    ident = Trainer(
        id_model, train_data, config=id_config, objective=objective, predict=predict
    ).fit()
    errors = jtt_error_set(
        id_model,
        train_data,
        batch_size=config.eval_batch_size or config.batch_size,
        predict=predict,
    )
    if errors.numel() == 0:
        warnings.warn(
            f"train_jtt: the identification model classifies all {n} training examples "
            "correctly, so nothing is upweighted and stage 2 is plain ERM; use fewer id_epochs "
            "or stronger weight decay (the paper: lr 1e-5, weight_decay 1.0 / 0.1).",
            UserWarning,
            stacklevel=2,
        )
    logger.info("JTT: %d of %d training examples in the error set", int(errors.numel()), n)
    model = build_model()
    if model is id_model:
        raise ConfigError(
            "train_jtt: build_model returned the same model twice; it must build a fresh one "
            "(e.g. lambda: causalvl.intervene(make_net(), config))."
        )
    data = upsample(train_data, errors, upweight + 1)
    final_cfg = config
    if config.output_dir is not None:
        final_cfg = config.replace(output_dir=_stage_dir(config, "final"))
    result = Trainer(
        model,
        data,
        eval_data=eval_data,
        config=final_cfg,
        objective=objective,
        predict=predict,
    ).fit()
    return JTTResult(
        model=model,
        error_set=errors,
        identification=ident,
        result=result,
        upweight=upweight,
        upsampled_size=len(data),
    )
