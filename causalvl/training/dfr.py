"""Deep Feature Reweighting (Kirichenko et al., ICLR 2023): refit only the last layer of an ERM
model on a small balanced held-out set.

:func:`refit_last_layer` follows the official ``dfr_evaluate_spurious.py``: collect the input
features of the answer classifier (eval mode, ``no_grad``), standardise them, fit an
L1-penalised logistic regression on ``num_subsamples`` balanced subsamples (equal count per
balance cell, the smallest cell's count) and average the coefficients; with ``C=None`` the
penalty is chosen first on a held-out half (worst-cell accuracy on the unbalanced half, the
regression fit on a balanced subsample of the other half). The averaged classifier is written
back into the ``nn.Linear`` (un-standardised, on its device and dtype).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..batch import ordered_loader, to_device
from ..errors import ConfigError, InputError, NoMatchingModuleError, OptionalDependencyError
from ..runtime import eval_mode, module_device, version_at_least
from .trainer import default_predict

logger = logging.getLogger("causalvl.training")

__all__ = ["DFR_C_GRID", "RefitResult", "refit_last_layer"]

#: the official C grid (``C_OPTIONS`` of ``dfr_evaluate_spurious.py``)
DFR_C_GRID: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


@dataclass(frozen=True)
class RefitResult:
    """What :func:`refit_last_layer` returns.

    Attributes:
        layer: module path of the refit ``nn.Linear`` (relative to the base model).
        num_examples: size of the refit set.
        balance_key: the batch keys whose values define the balance cells.
        cells: the cells present in the refit set (tuples of key values, sorted).
        cell_counts: examples of each cell in the refit set (same order as ``cells``).
        subsample_size: examples per balanced subsample (smallest cell x number of cells).
        num_subsamples: balanced subsamples whose fits were averaged.
        C: the inverse regularisation strength used for the final fits.
        C_scores: worst-cell accuracy on the held-out half for every tried C (empty when
            ``C`` was given).
        penalty: ``"l1"`` or ``"l2"``.
        num_answers: output width of the layer.
        refit_accuracy: accuracy of the new layer on the refit set (fraction).
        refit_worst_cell_accuracy: its lowest per-cell accuracy on the refit set.
        previous_weight / previous_bias: the layer's parameters before the refit (CPU copies),
            to undo it: ``layer.weight.data.copy_(result.previous_weight)``.
    """

    layer: str
    num_examples: int
    balance_key: tuple[str, ...]
    cells: tuple[tuple[int, ...], ...]
    cell_counts: tuple[int, ...]
    subsample_size: int
    num_subsamples: int
    C: float
    C_scores: Mapping[float, float]
    penalty: str
    num_answers: int
    refit_accuracy: float
    refit_worst_cell_accuracy: float
    previous_weight: torch.Tensor = field(repr=False)
    previous_bias: torch.Tensor | None = field(default=None, repr=False)

    @property
    def cell_table(self) -> dict[tuple[int, ...], int]:
        """``{cell: count}``."""
        return dict(zip(self.cells, self.cell_counts))


# ----------------------------------------------------------------------------------------
# model plumbing
# ----------------------------------------------------------------------------------------
def _base_and_predict(vl: nn.Module, predict: Any) -> tuple[nn.Module, Any]:
    from ..wrapper import IntervenedModel

    if predict is not None:
        if not callable(predict):
            raise ConfigError(
                f"refit_last_layer: predict must be callable as predict(model, batch), got "
                f"{type(predict).__name__}."
            )
        base = vl.base_model if isinstance(vl, IntervenedModel) else vl
        return base, predict
    if isinstance(vl, IntervenedModel):

        def predict(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
            with vl.disable_interventions():
                return vl(batch).logits

        return vl.base_model, predict
    if not isinstance(vl, nn.Module):
        raise ConfigError(
            f"refit_last_layer: vl must be a causalvl.IntervenedModel or an nn.Module, got "
            f"{type(vl).__name__}."
        )
    return vl, default_predict


def _resolve_layer(
    base: nn.Module, layer: str | None, vl: nn.Module, predict: Any, first: Mapping[str, Any]
) -> tuple[str, nn.Linear]:
    if layer is not None:
        if not isinstance(layer, str) or not layer:
            raise ConfigError(
                f"refit_last_layer: layer = {layer!r}; pass a module path such as 'classifier'."
            )
        try:
            module = base.get_submodule(layer)
        except AttributeError as exc:
            linears = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)]
            raise NoMatchingModuleError(
                f"refit_last_layer: {type(base).__name__} has no module {layer!r}; its nn.Linear "
                f"modules are {linears[-8:]}."
            ) from exc
        if not isinstance(module, nn.Linear):
            raise ConfigError(
                f"refit_last_layer: layer {layer!r} is a {type(module).__name__}, not an "
                "nn.Linear; DFR refits a linear answer classifier (pass the path of the final "
                "nn.Linear)."
            )
        return layer, module
    # find the nn.Linear whose output is the logits
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in base.named_modules():
        if isinstance(module, nn.Linear):

            def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                if isinstance(out, torch.Tensor):
                    outputs[name] = out.detach()

            handles.append(module.register_forward_hook(hook))
    try:
        logits = predict(vl, first)
    finally:
        for h in handles:
            h.remove()
    found = [
        n
        for n, out in outputs.items()
        if out.shape == logits.shape and torch.allclose(out.float(), logits.float())
    ]
    if not found:
        raise NoMatchingModuleError(
            f"refit_last_layer: no nn.Linear of {type(base).__name__} produces the model's "
            f"logits {tuple(logits.shape)} (its last nn.Linear modules: "
            f"{[n for n, m in base.named_modules() if isinstance(m, nn.Linear)][-5:]}); pass "
            "layer='<module path of the answer classifier>'."
        )
    name = found[-1]
    return name, base.get_submodule(name)  # type: ignore[return-value]


def _key_values(batch: Mapping[str, Any], key: str, size: int) -> torch.Tensor:
    value = batch.get(key)
    if value is None:
        raise InputError(
            f"refit_last_layer: the batches have no {key!r} (keys: {sorted(batch)}); pass "
            "balance_key='labels' (answer-balanced) or 'group', or add the key to the data."
        )
    value = torch.as_tensor(value)
    if key == "labels" and value.is_floating_point() and value.dim() == 2:
        value = value.argmax(-1)  # soft scores: the best answer
    if value.is_floating_point() or value.is_complex() or value.dim() != 1 or len(value) != size:
        raise InputError(
            f"refit_last_layer: batch[{key!r}] must be ({size},) integer ids, got dtype "
            f"{value.dtype} and shape {tuple(value.shape)}."
        )
    return value.long().cpu()


@torch.no_grad()
def _collect(
    vl: nn.Module,
    predict: Any,
    layer: nn.Linear,
    loader: DataLoader,
    keys: tuple[str, ...],
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    captured: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        if not captured:  # the factual pass only
            captured.append(args[0].detach())

    feats, labels, cells = [], [], []
    handle = layer.register_forward_hook(hook)
    try:
        for batch in loader:
            if not isinstance(batch, Mapping):
                raise InputError(
                    f"refit_last_layer needs dict batches, got {type(batch).__name__}."
                )
            if batch.get("labels") is None:
                raise InputError(
                    f"refit_last_layer needs 'labels' in every batch; got keys {sorted(batch)}."
                )
            batch = to_device(batch, device)
            captured.clear()
            predict(vl, batch)
            if not captured:
                raise InputError(
                    "refit_last_layer: the layer was not called in the forward pass; pass "
                    "layer= the module that computes the answer logits."
                )
            x = captured[0]
            y = _key_values(batch, "labels", x.shape[0] if x.dim() else -1)
            if x.dim() != 2 or x.shape[0] != len(y):
                raise InputError(
                    f"refit_last_layer: the layer's input is {tuple(x.shape)}, expected "
                    f"(batch={len(y)}, features); DFR refits a classifier over pooled features."
                )
            feats.append(x.double().cpu())
            labels.append(y)
            cells.append(torch.stack([_key_values(batch, k, len(y)) for k in keys], dim=1))
    finally:
        handle.remove()
    return (
        torch.cat(feats).numpy(),
        torch.cat(labels).numpy(),
        torch.cat(cells).numpy(),
    )


# ----------------------------------------------------------------------------------------
# the fit
# ----------------------------------------------------------------------------------------
def _balanced(rng: np.random.Generator, members: Sequence[np.ndarray]) -> np.ndarray:
    m = min(len(ix) for ix in members)
    return np.concatenate([rng.choice(ix, size=m, replace=False) for ix in members])


def _rows(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, out: int) -> tuple:
    """sklearn coefficients -> ``(out, D)`` rows and ``(out,)`` biases of softmax logits."""
    d = coef.shape[1]
    if out == 1:  # one logit, sigmoid: the positive class's score
        return coef.reshape(1, d), intercept.reshape(1)
    w = np.zeros((out, d))
    b = np.zeros(out)
    if coef.shape[0] == 1:  # binary: softmax([-z/2, z/2]) = sigmoid(z)
        lo, hi = int(classes[0]), int(classes[1])
        w[hi], w[lo] = coef[0] / 2, -coef[0] / 2
        b[hi], b[lo] = intercept[0] / 2, -intercept[0] / 2
        return w, b
    for row, c in enumerate(classes):
        w[int(c)], b[int(c)] = coef[row], intercept[row]
    return w, b


_SKLEARN_L1_RATIO = version_at_least("scikit-learn", (1, 8))


def _fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    C: float,
    penalty: str,
    fit_intercept: bool,
    out: int,
    max_iter: int,
    random_state: int,
    stalled: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    multiclass = len(np.unique(y)) > 2
    if penalty == "l1":
        solver = "saga" if multiclass else "liblinear"
    else:
        solver = "lbfgs"
    kwargs: dict[str, Any] = dict(
        C=C,
        solver=solver,
        fit_intercept=fit_intercept,
        max_iter=max_iter,
        random_state=random_state,
    )
    if _SKLEARN_L1_RATIO:  # scikit-learn >= 1.8 deprecates penalty= in favour of l1_ratio=
        kwargs["l1_ratio"] = 1.0 if penalty == "l1" else 0.0
    else:
        kwargs["penalty"] = penalty
    from sklearn.exceptions import ConvergenceWarning

    clf = LogisticRegression(**kwargs)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    for w in seen:  # a stalled fit is counted and summarised once by refit_last_layer
        if issubclass(w.category, ConvergenceWarning):
            stalled.append(1)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    intercept = np.asarray(clf.intercept_, dtype=float).reshape(-1)
    if not fit_intercept:
        intercept = np.zeros(clf.coef_.shape[0])
    return _rows(np.asarray(clf.coef_, dtype=float), intercept, clf.classes_, out)


def _predict(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = x @ w.T + b
    if w.shape[0] == 1:
        return (z[:, 0] > 0).astype(int)
    return z.argmax(1)


def _worst_cell(pred: np.ndarray, y: np.ndarray, inverse: np.ndarray) -> tuple[float, float]:
    ok = pred == y
    per = [ok[inverse == c].mean() for c in np.unique(inverse)]
    return float(ok.mean()), float(min(per))


def refit_last_layer(
    vl: nn.Module,
    data: Dataset | DataLoader,
    *,
    layer: str | None = None,
    balance_key: str | Sequence[str] = ("question_type", "labels"),
    num_subsamples: int = 10,
    C: float | None = None,
    C_grid: Sequence[float] = DFR_C_GRID,
    penalty: Literal["l1", "l2"] = "l1",
    seed: int = 0,
    batch_size: int = 64,
    max_iter: int = 1000,
    predict: Any = None,
) -> RefitResult:
    """DFR: retrain only the answer classifier on a small balanced held-out set, in place.

    Steps: the input features of the classifier (an ``nn.Linear``) are collected with a
    forward hook (eval mode, ``no_grad``; for an :class:`~causalvl.IntervenedModel` the plain
    factual pass, interventions disabled) together with ``labels`` and the ``balance_key``
    values; they are standardised (mean and std over the refit set); for each of
    ``num_subsamples`` balanced subsamples (every cell drawn down to the smallest cell's count,
    without replacement) a logistic regression is fit (``penalty="l1"``: liblinear for two
    answers, saga multinomial for more; softmax over the answers); the coefficients and
    intercepts are averaged and written back into the layer un-standardised
    (``W / sigma``, ``b - (W / sigma) mu``).

    With ``C=None``, C is chosen from ``C_grid`` first (the official ``dfr_on_validation_tune``):
    every cell is split in halves; the regression is fit on a balanced subsample of one half and
    scored by worst-cell accuracy on the other (unbalanced) half; the first best C in grid order
    wins.

    Use it on an ERM model trained to convergence, with a refit set the model was **not**
    trained on (a validation split), balanced by answer (``balance_key="labels"``), by
    question type and answer (the default) or by spurious group (``"group"``).

    Args:
        vl: the trained model (``IntervenedModel`` or ``nn.Module``); its layer is changed.
        data: the refit set (a Dataset of dict examples, or a DataLoader), with ``labels``
            (class ids, or soft scores whose best answer is used) and the balance keys.
        layer: module path of the ``nn.Linear`` to refit (relative to the base model); by
            default the last ``nn.Linear`` whose output equals the model's logits.
        balance_key: one batch key or several; each distinct value tuple is a cell.
        num_subsamples: balanced subsamples whose fits are averaged (official final: 20).
        C: inverse L1 strength; ``None`` tunes it over ``C_grid`` on a held-out half.
        C_grid: candidate C values (default: the official grid).
        penalty: ``"l1"`` (official) or ``"l2"``.
        seed: seeds the splits and subsamples (a private ``numpy`` generator).
        batch_size: examples per forward pass when ``data`` is a Dataset.
        max_iter: iteration limit of the solver.
        predict: ``predict(model, batch) -> logits`` (default: the plain factual logits of an
            ``IntervenedModel``; a plain module is called with the batch's tensor inputs,
            metadata keys removed, as in the Trainer).

    Returns:
        :class:`RefitResult` (refit set size, cells and counts, chosen C, accuracies).

    Raises:
        ConfigError: bad settings, or a layer that is not an ``nn.Linear``.
        NoMatchingModuleError: ``layer`` not found, or no linear layer produces the logits.
        InputError: a missing key, an answer with no example in the refit set, too few
            examples (C tuning needs at least 2 per cell).

    Example:
        >>> from torch import nn
        >>> class Val(torch.utils.data.Dataset):
        ...     def __len__(self): return 40
        ...     def __getitem__(self, i):
        ...         y = i % 2
        ...         return {"input": torch.tensor([2.0 * y - 1 + 0.1 * (i % 5), 0.0]), "labels": y}
        >>> net = nn.Sequential(nn.Identity(), nn.Linear(2, 2))   # called as net(input=...)
        >>> res = refit_last_layer(net, Val(), balance_key="labels", C=1.0, num_subsamples=2)
        >>> res.layer, res.cell_counts, res.subsample_size, res.refit_accuracy
        ('1', (20, 20), 40, 1.0)
    """
    if isinstance(balance_key, str):
        keys: tuple[str, ...] = (balance_key,)
    elif (
        isinstance(balance_key, Sequence)
        and balance_key
        and all(isinstance(k, str) and k for k in balance_key)
    ):
        keys = tuple(balance_key)
    else:
        raise ConfigError(
            f"refit_last_layer: balance_key = {balance_key!r}; pass a batch key such as "
            "'labels' or 'group', or a tuple of keys such as ('question_type', 'labels')."
        )
    for name, value, low in (
        ("num_subsamples", num_subsamples, 1),
        ("seed", seed, 0),
        ("batch_size", batch_size, 1),
        ("max_iter", max_iter, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"refit_last_layer: {name} = {value!r}; pass an integer >= {low}.")
    if penalty not in ("l1", "l2"):
        raise ConfigError(f"refit_last_layer: penalty = {penalty!r}; choose 'l1' or 'l2'.")

    def _positive(v: Any) -> bool:
        return (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        )

    if C is not None and not _positive(C):
        raise ConfigError(f"refit_last_layer: C = {C!r}; pass a finite number > 0, or None.")
    grid = tuple(C_grid) if isinstance(C_grid, Sequence) and not isinstance(C_grid, str) else ()
    if C is None and (not grid or not all(_positive(c) for c in grid)):
        raise ConfigError(
            f"refit_last_layer: C_grid = {C_grid!r}; pass a non-empty list of numbers > 0."
        )
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:  # pragma: no cover - sklearn is a core dependency
        raise OptionalDependencyError(
            "refit_last_layer needs scikit-learn: pip install scikit-learn"
        ) from exc

    base, predict = _base_and_predict(vl, predict)
    if isinstance(data, DataLoader):
        loader = data
    else:
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise ConfigError(
                f"refit_last_layer: data must be a Dataset or a DataLoader, got "
                f"{type(data).__name__}."
            )
        if len(data) == 0:
            raise InputError("refit_last_layer: the refit set is empty.")
        loader = ordered_loader(data, batch_size)
    device = module_device(vl)
    with eval_mode(vl):
        with torch.no_grad():
            first = next(iter(loader), None)
            if first is None:
                raise InputError("refit_last_layer: the refit set is empty.")
            if not isinstance(first, Mapping):
                raise InputError(
                    f"refit_last_layer needs dict batches, got {type(first).__name__}."
                )
            path, linear = _resolve_layer(base, layer, vl, predict, to_device(first, device))
        x, y, cell_values = _collect(vl, predict, linear, loader, keys, device)

    out = linear.out_features
    n = len(y)
    classes = 2 if out == 1 else out
    if y.min() < 0 or y.max() >= classes:
        raise InputError(
            f"refit_last_layer: labels span [{int(y.min())}, {int(y.max())}] but layer {path!r} "
            f"has {out} output(s) ({classes} answers)."
        )
    missing = sorted(set(range(classes)) - set(np.unique(y).tolist()))
    if missing:
        shown = missing[:10] + (["..."] if len(missing) > 10 else [])
        raise InputError(
            f"refit_last_layer: answers {shown} ({len(missing)} of {classes}) have no example in "
            f"the refit set, so their rows of {path!r} cannot be refit; the refit set must hold "
            "every answer (add examples of them)."
        )
    cell_keys, inverse, counts = np.unique(
        cell_values, axis=0, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    members = [np.flatnonzero(inverse == c) for c in range(len(cell_keys))]
    if n < 2:
        raise InputError(f"refit_last_layer: the refit set has {n} example(s); DFR needs more.")
    if C is None and int(counts.min()) < 2:
        small = [tuple(int(v) for v in cell_keys[c]) for c in np.flatnonzero(counts < 2)][:5]
        raise InputError(
            f"refit_last_layer: cells {small} of {keys} have fewer than 2 examples, too few to "
            "tune C on a held-out half; add examples, pass a fixed C, or balance on fewer keys."
        )

    # standardise over the refit set (a bias-free layer cannot absorb a shift: scale only)
    has_bias = linear.bias is not None
    mu = x.mean(0) if has_bias else np.zeros(x.shape[1])
    sigma = x.std(0)
    sigma = np.where(sigma > 1e-12, sigma, 1.0)
    z = (x - mu) / sigma
    rng = np.random.default_rng(seed)
    stalled: list[int] = []  # fits that stopped at max_iter: one summary warning below
    fit_kw = dict(
        penalty=penalty, fit_intercept=has_bias, out=out, max_iter=max_iter, stalled=stalled
    )

    scores: dict[float, float] = {}
    if C is None:
        tune_fit, tune_eval = [], []
        for ix in members:
            perm = rng.permutation(ix)
            half = len(perm) // 2
            tune_eval.append(perm[:half])
            tune_fit.append(perm[half:])
        fit_ix = _balanced(rng, tune_fit)
        tune_state = int(rng.integers(2**31 - 1))
        eval_ix = np.concatenate(tune_eval)
        best = None
        for c in grid:
            w, b = _fit(z[fit_ix], y[fit_ix], C=float(c), random_state=tune_state, **fit_kw)
            _, worst = _worst_cell(_predict(w, b, z[eval_ix]), y[eval_ix], inverse[eval_ix])
            scores[float(c)] = worst
            if best is None or worst > scores[best]:
                best = float(c)
        C = best
        logger.info("DFR: C = %s (worst-cell accuracy on the held-out half %s)", C, scores)

    w_sum = b_sum = None
    for _ in range(num_subsamples):
        ix = _balanced(rng, members)
        state = int(rng.integers(2**31 - 1))
        w, b = _fit(z[ix], y[ix], C=float(C), random_state=state, **fit_kw)  # type: ignore[arg-type]
        w_sum = w if w_sum is None else w_sum + w
        b_sum = b if b_sum is None else b_sum + b
    if stalled:
        warnings.warn(
            f"refit_last_layer: {len(stalled)} logistic-regression fit(s) stopped at "
            f"max_iter={max_iter} before converging; the refit layer is usable, raise max_iter "
            "for a converged L1 solution.",
            UserWarning,
            stacklevel=2,
        )
    w_avg = w_sum / num_subsamples  # type: ignore[operator]
    b_avg = b_sum / num_subsamples  # type: ignore[operator]
    w_x = w_avg / sigma
    b_x = b_avg - w_x @ mu
    acc, worst = _worst_cell(_predict(w_x, b_x, x), y, inverse)

    previous_weight = linear.weight.detach().cpu().clone()
    previous_bias = linear.bias.detach().cpu().clone() if has_bias else None
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(w_x).to(linear.weight.device, linear.weight.dtype))
        if has_bias:
            linear.bias.copy_(torch.as_tensor(b_x).to(linear.bias.device, linear.bias.dtype))
    return RefitResult(
        layer=path,
        num_examples=n,
        balance_key=keys,
        cells=tuple(tuple(int(v) for v in row) for row in cell_keys),
        cell_counts=tuple(int(c) for c in counts),
        subsample_size=int(counts.min()) * len(cell_keys),
        num_subsamples=num_subsamples,
        C=float(C),  # type: ignore[arg-type]
        C_scores=scores,
        penalty=penalty,
        num_answers=classes,
        refit_accuracy=acc,
        refit_worst_cell_accuracy=worst,
        previous_weight=previous_weight,
        previous_bias=previous_bias,
    )
