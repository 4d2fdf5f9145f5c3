"""Top-label calibration: expected calibration error and the reliability curve.

Confidences are binned into ``n_bins`` equal-width bins over ``[0, 1]``; a confidence ``c``
falls in bin ``b`` when ``edges[b] < c <= edges[b + 1]`` (``c = 0`` falls in bin 0), i.e.
``numpy.digitize(c, edges[1:-1], right=True)``.

    >>> import torch
    >>> from causalvl.diagnostics.calibration import expected_calibration_error
    >>> conf = torch.tensor([0.9, 0.9, 0.6, 0.6])
    >>> correct = torch.tensor([1.0, 1.0, 0.0, 1.0])
    >>> round(expected_calibration_error(conf, correct, n_bins=10), 6)
    0.1
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from .results import CalibrationResult


def _inputs(confidence: Any, correct: Any) -> tuple[torch.Tensor, torch.Tensor]:
    conf = torch.as_tensor(confidence).detach().cpu().to(torch.float64)
    corr = torch.as_tensor(correct).detach().cpu().to(torch.float64)
    if conf.dim() != 1 or conf.shape != corr.shape or conf.numel() == 0:
        raise InputError(
            f"confidence and correct must be non-empty (N,) tensors of equal length, got "
            f"{tuple(conf.shape)} and {tuple(corr.shape)}."
        )
    if bool(((conf < 0) | (conf > 1) | conf.isnan()).any()):
        raise InputError("confidences must be probabilities in [0, 1]; pass softmax outputs.")
    return conf, corr


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise InputError(f"n_bins = {n_bins!r} must be an integer >= 1 (15 is common).")


def reliability_curve(
    confidence: Any, correct: Any, n_bins: int = 15
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin mean confidence, accuracy and count.

    Args:
        confidence: ``(N,)`` probability of the predicted class.
        correct: ``(N,)`` correctness in [0, 1].
        n_bins: number of equal-width bins.

    Returns:
        ``(edges (n_bins + 1,), mean_confidence (n_bins,), accuracy (n_bins,), count (n_bins,))``;
        empty bins hold NaN confidence and accuracy.
    """
    _check_bins(n_bins)
    conf, corr = _inputs(confidence, correct)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # edges[b] < c <= edges[b+1]
    count = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    sum_acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, corr)
    nan = torch.full((n_bins,), float("nan"), dtype=torch.float64)
    nonempty = count > 0
    mean_conf = torch.where(nonempty, sum_conf / count.clamp_min(1), nan)
    mean_acc = torch.where(nonempty, sum_acc / count.clamp_min(1), nan)
    return edges, mean_conf, mean_acc, count.long()


def expected_calibration_error(confidence: Any, correct: Any, n_bins: int = 15) -> float:
    """Top-label ECE: ``Σ_b (n_b / N) · |accuracy_b − confidence_b|`` over non-empty bins."""
    _, mean_conf, mean_acc, count = reliability_curve(confidence, correct, n_bins)
    n = count.sum()
    nonempty = count > 0
    gaps = (mean_acc[nonempty] - mean_conf[nonempty]).abs()
    return float((count[nonempty].to(torch.float64) / n * gaps).sum())


def calibration(
    probs: Any,
    correct: Any,
    *,
    n_bins: int = 15,
    aligned: Any | None = None,
) -> CalibrationResult:
    """Calibration summary from answer probabilities.

    Args:
        probs: ``(N, A)`` answer probabilities (softmax of the logits) or ``(N,)``
            predicted-class confidences.
        correct: ``(N,)`` correctness in [0, 1].
        n_bins: equal-width bins for ECE and the reliability curve.
        aligned: optional ``(N,)`` bool bias-aligned flags, for the mean confidence on
            bias-aligned vs. bias-conflicting examples.
    """
    p = torch.as_tensor(probs).detach().cpu().to(torch.float64)
    conf = p.max(-1).values if p.dim() == 2 else p
    conf, corr = _inputs(conf, correct)
    edges, mean_conf, mean_acc, count = reliability_curve(conf, corr, n_bins)
    ece = expected_calibration_error(conf, corr, n_bins)

    def opt(t: torch.Tensor) -> tuple[float | None, ...]:
        return tuple(None if v != v else float(v) for v in t.tolist())

    conf_a = conf_c = None
    if aligned is not None:
        mask = torch.as_tensor(aligned).detach().cpu().bool()
        if mask.shape != conf.shape:
            raise InputError(
                f"aligned must be (N,) = {tuple(conf.shape)}, got {tuple(mask.shape)}."
            )
        conf_a = float(conf[mask].mean()) if bool(mask.any()) else None
        conf_c = float(conf[~mask].mean()) if bool((~mask).any()) else None
    return CalibrationResult(
        ece=ece,
        n_bins=n_bins,
        bin_edges=tuple(float(e) for e in edges),
        bin_confidence=opt(mean_conf),
        bin_accuracy=opt(mean_acc),
        bin_count=tuple(int(c) for c in count),
        mean_confidence=float(conf.mean()),
        accuracy=float(corr.mean()),
        confidence_aligned=conf_a,
        confidence_conflicting=conf_c,
    )


__all__ = ["calibration", "expected_calibration_error", "reliability_curve"]
