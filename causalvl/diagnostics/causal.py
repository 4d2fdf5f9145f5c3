"""The dowhy bridge: the causal effect of a spurious cue on correctness, with refutations.

A thin, replaceable layer over dowhy's classic facade with built-in estimator names only.
Rules it follows (dowhy 0.14):

* every estimate and every refutation runs on its own copy of the data, so dowhy's in-place
  columns (propensity scores, weights) can neither leak into the caller's DataFrame nor into
  another refutation;
* the placebo-treatment check always runs on a linear-regression estimate (dowhy 0.14's
  propensity estimators reuse a stale ``propensity_score`` column and report placebo effects
  far from 0);
* refuters get ``random_seed`` and ``num_simulations`` (>= 100 avoids dowhy's small-sample
  normal approximation);
* dowhy's pandas deprecation warnings are silenced for dowhy's own modules only.

dowhy and pandas are imported on first call, never when ``causalvl`` is imported.

    >>> import numpy as np, pandas as pd                                  # doctest: +SKIP
    >>> rng = np.random.default_rng(0); z = rng.normal(size=2000)           # doctest: +SKIP
    >>> t = (z + rng.normal(size=2000) > 0).astype(int)                     # doctest: +SKIP
    >>> df = pd.DataFrame({"t": t, "z": z, "y": 0.3 * t + z})               # doctest: +SKIP
    >>> est = estimate_spurious_effect(df, treatment="t", outcome="y",
    ...                                common_causes=["z"])                  # doctest: +SKIP
    >>> round(est.value, 2), [r.passed for r in est.refutations]            # doctest: +SKIP
    (0.3, [True, True, True])
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ConfigError, DataError, OptionalDependencyError
from .results import EffectEstimate, RefutationResult

logger = logging.getLogger("causalvl.diagnostics.causal")

ESTIMATORS: tuple[str, ...] = (
    "backdoor.linear_regression",
    "backdoor.propensity_score_weighting",
    "backdoor.propensity_score_matching",
    "backdoor.propensity_score_stratification",
    "backdoor.doubly_robust",
)

#: refuter name -> (what a sound estimate should show, what a pass means, what a fail means)
REFUTERS: dict[str, tuple[str, str, str]] = {
    "placebo_treatment_refuter": (
        "Replacing the treatment by a random permutation of itself should give an effect "
        "close to 0.",
        "the placebo treatment has no effect, so the estimate is not an artefact of the "
        "estimator or of the data layout",
        "a randomly permuted treatment still shows an effect, so the estimate may come from "
        "the estimator or the data layout rather than from the treatment",
    ),
    "random_common_cause": (
        "Adding an independent random variable as a common cause should leave the estimate "
        "unchanged.",
        "the estimate is stable when an irrelevant confounder is added",
        "the estimate moves when an irrelevant confounder is added, so it is fragile",
    ),
    "data_subset_refuter": (
        "Re-estimating on random subsets of the rows should give about the same estimate.",
        "the estimate is stable across random subsets of the data, so no small part of the "
        "data drives it",
        "the estimate changes across random subsets, so it depends on a few rows",
    ),
    "bootstrap_refuter": (
        "Re-estimating on bootstrap resamples should give about the same estimate.",
        "the estimate is stable under resampling",
        "the estimate changes under resampling, so it is not robust",
    ),
}


def _require() -> tuple[Any, Any, Any]:
    try:
        import networkx as nx
        import pandas as pd
        from dowhy import CausalModel
    except ImportError as exc:  # pragma: no cover - dowhy is a dependency
        raise OptionalDependencyError(
            f"estimate_spurious_effect needs dowhy and pandas ({exc}); install them with "
            "pip install 'dowhy>=0.14,<0.15' pandas."
        ) from exc
    return pd, nx, CausalModel


class _DropSmallSampleNote(logging.Filter):
    """Drops dowhy's note that fewer than 100 simulations use a normal approximation (the
    choice is the caller's ``num_simulations``); every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("We assume a Normal Distribution")


@contextlib.contextmanager
def _quiet_dowhy() -> Iterator[None]:
    """Silence dowhy's pandas deprecation warnings and its small-sample note, nothing else."""
    note_filter = _DropSmallSampleNote()
    refuter_logger = logging.getLogger("dowhy.causal_refuter")
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"dowhy(\.|$)")
        try:  # pandas >= 3 deprecation category, raised from dowhy's regression estimator
            from pandas.errors import Pandas4Warning  # type: ignore[attr-defined]

            warnings.filterwarnings("ignore", category=Pandas4Warning, module=r"dowhy(\.|$)")
        except ImportError:  # pragma: no cover - older pandas
            pass
        refuter_logger.addFilter(note_filter)
        try:
            yield
        finally:
            refuter_logger.removeFilter(note_filter)


def _verdict(name: str, passed: bool | None, p: float | None, alpha: float, method: str) -> str:
    expectation, good, bad = REFUTERS.get(
        name,
        (
            "The refuted estimate should agree with the original.",
            "the check passed",
            "the check failed",
        ),
    )
    on = f" (run on a {method} estimate)" if method else ""
    if passed is None:
        return f"No verdict{on}: dowhy returned no p-value for this check."
    if passed:
        return f"Passed{on}: p = {p:.3g} ≥ {alpha}, so the check found no problem: {good}."
    return f"Failed{on}: p = {p:.3g} < {alpha}, so the check found a problem: {bad}."


def estimate_spurious_effect(
    df: Any,
    *,
    treatment: str,
    outcome: str,
    common_causes: Sequence[str] = (),
    method: str = "backdoor.linear_regression",
    refuters: Sequence[str] = (
        "placebo_treatment_refuter",
        "random_common_cause",
        "data_subset_refuter",
    ),
    num_simulations: int = 100,
    seed: int = 0,
    significance_level: float = 0.05,
    subset_fraction: float = 0.8,
) -> EffectEstimate:
    """Estimate the causal effect of ``treatment`` on ``outcome`` with backdoor adjustment.

    Typical use: ``treatment`` a 0/1 spurious cue (e.g. ``bias_aligned``: the answer agrees
    with the training prior), ``outcome`` a 0/1 ``correct`` column, ``common_causes`` what
    drives both (e.g. ``question_type``). The graph is ``common_cause -> treatment``,
    ``common_cause -> outcome``, ``treatment -> outcome``.

    Args:
        df: a pandas DataFrame (never modified; each dowhy call gets its own copy).
        treatment, outcome: column names.
        common_causes: confounder column names.
        method: a built-in dowhy estimator name (see :data:`ESTIMATORS`).
        refuters: dowhy refuter names (see :data:`REFUTERS`).
        num_simulations: simulations per refuter (>= 100 recommended).
        seed: seeds every refuter (``random_seed``); global RNGs are not touched.
        significance_level: a refuter passes when its p-value is at least this.
        subset_fraction: share of rows kept by ``data_subset_refuter``.

    Returns:
        :class:`EffectEstimate` with one :class:`RefutationResult` per refuter; each carries a
        ``verdict`` sentence that says whether it passed and what that means.

    Raises:
        DataError: missing columns, too few rows, or a constant treatment.
        ConfigError: an unknown estimator or refuter name, or bad numbers.
    """
    pd, nx, CausalModel = _require()
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"estimate_spurious_effect expects a pandas DataFrame, got {type(df).__name__}; "
            "build one with pandas.DataFrame({...})."
        )
    common_causes = [str(c) for c in common_causes]
    columns = [treatment, outcome, *common_causes]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"columns {missing} are not in the DataFrame; it has {list(df.columns)}.")
    if len(set(columns)) != len(columns):
        raise ConfigError(
            f"treatment, outcome and common causes must be distinct columns, got {columns}."
        )
    if method not in ESTIMATORS:
        raise ConfigError(
            f"method = {method!r} is not supported; choose one of {list(ESTIMATORS)} (built-in "
            "dowhy estimators; string EconML names are deprecated in dowhy)."
        )
    unknown = [r for r in refuters if r not in REFUTERS]
    if unknown:
        raise ConfigError(f"unknown refuters {unknown}; choose from {list(REFUTERS)}.")
    if not isinstance(num_simulations, int) or num_simulations < 1:
        raise ConfigError(
            f"num_simulations = {num_simulations!r} must be an integer >= 1 (100 recommended)."
        )
    if not 0 < significance_level < 1:
        raise ConfigError(f"significance_level = {significance_level!r} must be in (0, 1).")
    if not 0 < subset_fraction < 1:
        raise ConfigError(f"subset_fraction = {subset_fraction!r} must be in (0, 1).")
    data = df[columns].dropna()
    if len(data) < 10:
        raise DataError(
            f"only {len(data)} complete rows in columns {columns}; a causal estimate needs more."
        )
    if data[treatment].nunique() < 2:
        raise DataError(
            f"treatment column {treatment!r} is constant ({data[treatment].iloc[0]!r}); the "
            "effect of a cue that never varies cannot be estimated."
        )
    # booleans -> 0/1 so the estimators treat them as numbers
    data = data.astype({c: int for c in columns if data[c].dtype == bool})

    graph = nx.DiGraph()
    graph.add_nodes_from(columns)
    graph.add_edge(treatment, outcome)
    for c in common_causes:
        graph.add_edge(c, treatment)
        graph.add_edge(c, outcome)

    def fit(method_name: str) -> tuple[Any, Any, Any]:
        model = CausalModel(data=data.copy(), treatment=treatment, outcome=outcome, graph=graph)
        estimand = model.identify_effect()
        estimate = model.estimate_effect(estimand, method_name=method_name)
        return model, estimand, estimate

    start = time.perf_counter()
    results: list[RefutationResult] = []
    with _quiet_dowhy():
        _, estimand, estimate = fit(method)
        value = float(estimate.value)
        backdoor = tuple(sorted(str(v) for v in (estimand.get_backdoor_variables() or ())))
        for name in refuters:
            # each refutation on its own fresh copy; the placebo check on linear regression
            refute_method = (
                "backdoor.linear_regression" if name == "placebo_treatment_refuter" else method
            )
            model_r, estimand_r, estimate_r = fit(refute_method)
            kwargs: dict[str, Any] = {"num_simulations": num_simulations, "random_seed": seed}
            if name == "placebo_treatment_refuter":
                kwargs["placebo_type"] = "permute"
            if name == "data_subset_refuter":
                kwargs["subset_fraction"] = subset_fraction
            t0 = time.perf_counter()
            ref = model_r.refute_estimate(estimand_r, estimate_r, method_name=name, **kwargs)
            logger.info("%s took %.2fs", name, time.perf_counter() - t0)
            res = getattr(ref, "refutation_result", None) or {}
            p = res.get("p_value") if isinstance(res, dict) else None
            p = None if p is None else min(max(float(p), 0.0), 1.0)
            passed = None if p is None else bool(p >= significance_level)
            note = "" if refute_method == method else refute_method
            results.append(
                RefutationResult(
                    name=name,
                    new_effect=None if ref.new_effect is None else float(ref.new_effect),
                    p_value=p,
                    passed=passed,
                    expectation=REFUTERS[name][0],
                    verdict=_verdict(name, passed, p, significance_level, note),
                    estimate_method=refute_method,
                    significance_level=significance_level,
                )
            )
    return EffectEstimate(
        value=value,
        method=method,
        treatment=treatment,
        outcome=outcome,
        backdoor_variables=backdoor,
        refutations=tuple(results),
        n=len(data),
        elapsed_s=time.perf_counter() - start,
        seed=seed,
    )


__all__ = ["ESTIMATORS", "REFUTERS", "estimate_spurious_effect"]
