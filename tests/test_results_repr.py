"""Results print short and readable; to_frame() has every number."""

from __future__ import annotations

from causalvl.diagnostics.results import (
    CalibrationResult,
    Diagnostics,
    GroupMetrics,
    GroupScore,
    SplitDiagnostics,
)


def _diagnostics(n_groups: int = 40) -> Diagnostics:
    scores = tuple(
        GroupScore(group=g, name=f"group {g}", accuracy=g / n_groups, n=10) for g in range(n_groups)
    )
    groups = GroupMetrics(
        per_group=scores,
        worst_group=scores[0],
        average_sample_weighted=0.5,
        average_over_groups=0.5,
        worst_group_accuracy=0.0,
        gap=0.5,
    )
    calibration = CalibrationResult(
        ece=0.1234,
        n_bins=15,
        bin_edges=tuple(i / 15 for i in range(16)),
        bin_confidence=(None,) * 15,
        bin_accuracy=(None,) * 15,
        bin_count=(0,) * 15,
        mean_confidence=0.6,
        accuracy=0.5,
    )
    split = SplitDiagnostics(
        name="ood", distribution="ood", n=400, accuracy=0.5, groups=groups, calibration=calibration
    )
    return Diagnostics(
        splits={
            "id": SplitDiagnostics(name="id", distribution="id", n=400, accuracy=0.9),
            "ood": split,
        }
    )


def test_diagnostics_repr_is_short_and_names_the_headline_numbers():
    d = _diagnostics()
    text = repr(d)
    assert len(text) < 400 and len(text.splitlines()) == 3
    assert text.startswith("Diagnostics(2 splits)")
    assert "'ood': distribution='ood', n=400, accuracy=0.500, worst_group_accuracy=0.000" in text
    assert "ece=0.123" in text and "group 17" not in text


def test_nested_results_abbreviate_long_fields():
    d = _diagnostics()
    assert repr(d["ood"]).startswith("SplitDiagnostics('ood', distribution='ood', n=400")
    groups = repr(d["ood"].groups)
    assert "per_group=<40 GroupScores>" in groups and "worst_group=GroupScore(…)" in groups
    assert "bin_edges=<16 values>" in repr(d["ood"].calibration)
    assert repr(d["ood"].groups.worst_group) == (
        "GroupScore(group=0, name='group 0', accuracy=0.000, n=10)"
    )


def test_to_frame_has_every_number():
    d = _diagnostics()
    frame = d.to_frame()
    assert list(frame.columns) == ["id", "ood", "label"]
    assert frame.loc["groups.worst_group_accuracy", "ood"] == 0.0
    assert frame.loc["accuracy", "id"] == 0.9
    assert set(frame.index) == {m.key for sp in d.splits.values() for m in sp.metrics()}
    one = d["ood"].to_frame()
    assert list(one.columns) == ["value", "label"] and one.loc["calibration.ece", "value"] == 0.1234


def test_effects_keep_one_order_through_json():
    from causalvl.diagnostics.results import EffectMagnitudes, EffectSummary

    found = ["nie", "tie", "nde", "te", "extra"]  # the order an intervention happened to emit
    e = EffectMagnitudes(
        effects={k: EffectSummary(effect=k, mean_abs=0.1, mean_predicted=0.0, n=3) for k in found}
    )
    assert list(e.effects) == ["te", "nde", "tie", "nie", "extra"]
    # JSON files sort keys alphabetically (nde, nie, te, tie); reading one back keeps the order
    assert list(EffectMagnitudes.from_json(e.to_json()).effects) == list(e.effects)
