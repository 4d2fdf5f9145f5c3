"""The dowhy bridge recovers a known effect, refutes soundly, and leaves the caller's data alone."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("dowhy")

from causalvl.diagnostics import EffectEstimate, estimate_spurious_effect  # noqa: E402
from causalvl.errors import ConfigError, DataError  # noqa: E402


def confounded(n: int = 1000, effect: float = 0.3, seed: int = 0):
    """A question type drives both the cue and correctness; the cue adds ``effect``."""
    rng = np.random.default_rng(seed)
    qtype = rng.integers(0, 2, n)
    cue = (rng.uniform(size=n) < 0.2 + 0.6 * qtype).astype(int)
    correct = 0.2 + effect * cue + 0.3 * qtype + rng.normal(0, 0.1, n)
    return pd.DataFrame(
        {"cue": cue, "correct": correct, "qtype": qtype, "extra": rng.normal(size=n)}
    )


def test_recovers_known_effect_refuters_pass_and_input_unchanged():
    df = confounded()
    before = df.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning escapes the bridge
        est = estimate_spurious_effect(
            df, treatment="cue", outcome="correct", common_causes=["qtype"], num_simulations=50
        )
    assert isinstance(est, EffectEstimate)
    assert est.value == pytest.approx(0.3, abs=0.03)
    # the naive difference is confounded well away from the truth
    naive = df[df.cue == 1].correct.mean() - df[df.cue == 0].correct.mean()
    assert abs(naive - 0.3) > 0.1
    assert est.backdoor_variables == ("qtype",)
    assert est.n == 1000 and est.seed == 0 and est.elapsed_s > 0
    names = [r.name for r in est.refutations]
    assert names == ["placebo_treatment_refuter", "random_common_cause", "data_subset_refuter"]
    placebo = est.refutations[0]
    assert placebo.passed is True and abs(placebo.new_effect) < 0.03
    assert placebo.verdict.startswith("Passed") and "placebo" in placebo.verdict
    assert placebo.estimate_method == "backdoor.linear_regression"
    assert all(r.passed for r in est.refutations) and est.all_passed
    for r in est.refutations:
        # every refuter passed, so its p-value is at least the significance level (0.05)
        assert r.expectation and 0.05 <= r.p_value <= 1.0
    # the caller's DataFrame is unchanged: same columns, dtypes and values
    pd.testing.assert_frame_equal(df, before)
    assert EffectEstimate.from_json(est.to_json()) == est


def test_placebo_runs_on_linear_regression_for_propensity_estimators():
    df = confounded(n=600)
    est = estimate_spurious_effect(
        df,
        treatment="cue",
        outcome="correct",
        common_causes=["qtype"],
        method="backdoor.propensity_score_weighting",
        refuters=("placebo_treatment_refuter",),
        num_simulations=30,
    )
    assert est.value == pytest.approx(0.3, abs=0.06)
    (placebo,) = est.refutations
    assert placebo.estimate_method == "backdoor.linear_regression"
    assert "linear_regression" in placebo.verdict
    assert abs(placebo.new_effect) < 0.05
    assert "propensity_score" not in df.columns


def test_bad_arguments_say_what_to_do():
    df = confounded(n=50)
    with pytest.raises(DataError, match="not in the DataFrame"):
        estimate_spurious_effect(df, treatment="cue", outcome="missing")
    with pytest.raises(ConfigError, match="not supported"):
        estimate_spurious_effect(
            df, treatment="cue", outcome="correct", method="backdoor.econml.dml.DML"
        )
    with pytest.raises(ConfigError, match="unknown refuters"):
        estimate_spurious_effect(df, treatment="cue", outcome="correct", refuters=("nope",))
    const = df.assign(cue=1)
    with pytest.raises(DataError, match="constant"):
        estimate_spurious_effect(const, treatment="cue", outcome="correct")
    with pytest.raises(DataError, match="DataFrame"):
        estimate_spurious_effect(df.to_dict(), treatment="cue", outcome="correct")


def test_small_sample_note_is_dropped_and_loggers_restored(caplog):
    import logging

    df = confounded(n=200)
    with caplog.at_level(logging.INFO, logger="dowhy"):
        est = estimate_spurious_effect(
            df, treatment="cue", outcome="correct", common_causes=["qtype"],
            refuters=("random_common_cause",), num_simulations=10,
        )  # fmt: skip
    assert not any("Normal Distribution" in r.getMessage() for r in caplog.records)
    assert logging.getLogger("dowhy.causal_refuter").filters == []
    assert est.refutations[0].passed is True
