"""Pure diagnostics metrics against hand computations and numpy references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from causalvl.diagnostics import (
    BiasAlignment,
    CalibrationResult,
    Diagnostics,
    GroupAccuracy,
    GroupMetrics,
    MetricTable,
    SplitDiagnostics,
    accuracy,
    bias_alignment,
    calibration,
    compositional_scores,
    correctness,
    counterfactual_flip_rate,
    effect_magnitudes,
    expected_calibration_error,
    foil_accuracy,
    group_accuracy,
    group_metrics,
    kl_divergence,
    mean_kl,
    prior_agreement,
    reliability_curve,
    winoground_scores,
    worst_group_accuracy,
)
from causalvl.errors import DataError, InputError


def numpy_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Direct ECE: bins (lo, hi], zero in the first bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.digitize(conf, edges[1:-1], right=True)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


# -- accuracy and groups -----------------------------------------------------------------


def test_accuracy_hard_and_soft_labels():
    preds = torch.tensor([0, 1, 2, 2])
    assert accuracy(preds, torch.tensor([0, 1, 1, 2])) == 0.75
    soft = torch.tensor([[1.0, 0, 0], [0, 0.3, 0], [0, 0, 0.6], [0, 0, 0]])
    assert correctness(preds, soft).tolist() == pytest.approx([1.0, 0.3, 0.6, 0.0])
    assert accuracy(preds, soft) == pytest.approx(1.9 / 4)


def test_group_metrics_hand_computed():
    # group 0: 3/4 right, group 1: 1/2 right, group 5: 0/2 right
    correct = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.float)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 5, 5])
    m = group_metrics(correct, groups, names={0: "answer=yes, prior=yes"})
    assert [g.group for g in m.per_group] == [0, 1, 5]
    assert [g.n for g in m.per_group] == [4, 2, 2]
    assert [g.accuracy for g in m.per_group] == [0.75, 0.5, 0.0]
    assert m.per_group[0].name == "answer=yes, prior=yes"
    assert m.per_group[1].name == "group=1"
    assert m.worst_group.group == 5
    assert m.worst_group_accuracy == 0.0
    assert m.average_sample_weighted == pytest.approx(4 / 8)
    assert m.average_over_groups == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert m.gap == pytest.approx(0.5)
    assert m.average_train_weighted is None
    m2 = group_metrics(correct, groups, train_weights={0: 0.5, 1: 0.25, 5: 0.25})
    assert m2.average_train_weighted == pytest.approx(0.5 * 0.75 + 0.25 * 0.5)
    for key in ("average_sample_weighted", "average_over_groups", "worst_group_accuracy", "gap"):
        assert GroupMetrics.DEFINITIONS[key]


def test_worst_group_is_lowest_accuracy_not_smallest():
    preds = torch.tensor([0, 0, 0, 0, 0, 1])
    labels = torch.tensor([0, 1, 1, 1, 0, 1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])  # group 0 large and bad, group 1 small and perfect
    w = worst_group_accuracy(preds, labels, groups)
    assert (w.group, w.accuracy, w.n) == (0, 0.25, 4)
    assert group_accuracy(preds, labels, groups) == {0: 0.25, 1: 1.0}


def test_tiny_groups_do_not_decide_the_worst_group():
    """A group of 2 examples wrong by chance made every model's worst-group accuracy 0.000."""
    correct = torch.cat([torch.ones(70), torch.zeros(30), torch.ones(38), torch.zeros(4)])
    groups = torch.cat([torch.zeros(100), torch.ones(40), torch.full((2,), 2.0)]).long()
    every = group_metrics(correct, groups)  # min_group_size=1: every group counts
    assert every.worst_group_accuracy == 0.0 and every.small_groups == ()
    m = group_metrics(correct, groups, min_group_size=20)
    assert m.worst_group.group == 0 and m.worst_group_accuracy == pytest.approx(0.7)
    assert [(g.group, g.n, g.accuracy) for g in m.small_groups] == [(2, 2, 0.0)]
    assert len(m.per_group) == 3 and m.min_group_size == 20
    assert m.gap == pytest.approx(m.average_sample_weighted - 0.7)
    none = group_metrics(correct, groups, min_group_size=500)
    assert none.worst_group is None and none.worst_group_accuracy is None and none.gap is None
    assert type(m).from_dict(json.loads(json.dumps(m.to_dict()))) == m
    acc = GroupAccuracy(min_group_size=20)
    acc.update(torch.zeros(142).long(), (1 - correct).long(), groups)
    assert acc.compute() == m
    with pytest.raises(InputError, match="min_group_size = 0 must be a positive integer"):
        group_metrics(correct, groups, min_group_size=0)
    assert (
        worst_group_accuracy(
            torch.zeros(142).long(), (1 - correct).long(), groups, min_group_size=500
        )
        is None
    )


def test_group_accuracy_accumulator_matches_one_shot():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 3, generator=g)
    labels = torch.randint(0, 3, (50,), generator=g)
    groups = torch.randint(0, 4, (50,), generator=g)
    acc = GroupAccuracy(names={0: "first"})
    for i in range(0, 50, 16):
        acc.update(logits[i : i + 16], labels[i : i + 16], groups[i : i + 16])
    one_shot = group_metrics(correctness(logits.argmax(-1), labels), groups, names={0: "first"})
    assert acc.compute() == one_shot
    acc.reset()
    with pytest.raises(InputError, match="before any update"):
        acc.compute()


def test_bias_alignment_hand_computed():
    correct = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    aligned = torch.tensor([True, True, True, False, False])
    r = bias_alignment(correct, aligned)
    assert r.accuracy_aligned == pytest.approx(2 / 3)
    assert r.accuracy_conflicting == pytest.approx(0.5)
    assert r.gap == pytest.approx(2 / 3 - 0.5)
    assert (r.n_aligned, r.n_conflicting) == (3, 2)
    only = bias_alignment(torch.ones(3), torch.ones(3, dtype=torch.bool))
    assert only.accuracy_conflicting is None and only.gap is None


def test_metric_input_errors_say_what_was_wrong():
    with pytest.raises(InputError, match="same number of examples"):
        group_metrics(torch.ones(3), torch.zeros(4))
    with pytest.raises(InputError, match="zero examples"):
        group_metrics(torch.ones(0), torch.zeros(0))
    with pytest.raises(InputError, match="shape"):
        correctness(torch.zeros(2), torch.zeros(2, 2, 2))


# -- reliance -----------------------------------------------------------------------------


def test_prior_agreement_flip_rate_and_kl():
    a = torch.tensor([1, 2, 3, 4])
    b = torch.tensor([1, 2, 0, 0])
    assert prior_agreement(a, b) == 0.5
    assert counterfactual_flip_rate(a, b) == 0.5
    logits_p = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    logits_q = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    # KL([0.5, 0.5] || [0.5, 0.5]) = 0; KL([0.75, 0.25] || [0.5, 0.5]) by hand
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_divergence(logits_p, logits_q).tolist() == pytest.approx([0.0, expected])
    assert mean_kl(logits_p, logits_q) == pytest.approx(expected / 2)
    # predictions may be given as logits
    assert prior_agreement(logits_p, torch.tensor([0, 0])) == 1.0


# -- calibration --------------------------------------------------------------------------


def test_ece_matches_numpy_reference():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 500)
    conf[:5] = [0.0, 1.0, 0.2, 0.3, 0.6]  # exact edges
    correct = (rng.uniform(0, 1, 500) < conf).astype(float)
    for bins in (1, 7, 10, 15):
        got = expected_calibration_error(torch.tensor(conf), torch.tensor(correct), n_bins=bins)
        assert got == pytest.approx(numpy_ece(conf, correct, bins), abs=1e-12)


def test_ece_hand_computed_and_reliability_curve():
    conf = torch.tensor([0.88, 0.88, 0.58, 0.58], dtype=torch.float64)
    correct = torch.tensor([1.0, 1.0, 0.0, 1.0])
    # bin (0.5, 0.6]: conf 0.58, acc 0.5; bin (0.8, 0.9]: conf 0.88, acc 1.0
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(
        0.5 * 0.08 + 0.5 * 0.12
    )
    edges, mc, ma, count = reliability_curve(conf, correct, n_bins=10)
    assert count.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    assert mc[5].item() == pytest.approx(0.58) and ma[5].item() == pytest.approx(0.5)
    assert math.isnan(mc[0].item())
    assert edges[0].item() == 0.0 and edges[-1].item() == 1.0


def test_calibration_result_and_confidence_by_alignment():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=torch.float64)
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0])
    aligned = torch.tensor([True, True, False, False])
    r = calibration(probs, correct, n_bins=5, aligned=aligned)
    assert isinstance(r, CalibrationResult)
    assert r.mean_confidence == pytest.approx((0.9 + 0.8 + 0.6 + 0.7) / 4)
    assert r.confidence_aligned == pytest.approx(0.85)
    assert r.confidence_conflicting == pytest.approx(0.65)
    assert r.ece == pytest.approx(numpy_ece(np.array([0.9, 0.8, 0.6, 0.7]), correct.numpy(), 5))
    assert sum(r.bin_count) == 4 and len(r.bin_edges) == 6


@settings(max_examples=60, deadline=None)
@given(
    conf=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
    seed=st.integers(0, 1000),
    bins=st.integers(1, 20),
)
def test_calibration_matches_numpy_bins(conf, seed, bins):
    g = np.random.default_rng(seed)
    correct = (g.uniform(size=len(conf)) < 0.5).astype(float)
    r = calibration(torch.tensor(conf, dtype=torch.float64), torch.tensor(correct), n_bins=bins)
    assert r.ece == pytest.approx(numpy_ece(np.array(conf), correct, bins), abs=1e-9)
    # every bin against a direct numpy binning: (lo, hi], zero in the first bin
    idx = np.digitize(np.array(conf), np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True)
    for b in range(bins):
        mask = idx == b
        assert r.bin_count[b] == int(mask.sum())
        if mask.any():
            assert r.bin_confidence[b] == pytest.approx(np.array(conf)[mask].mean(), abs=1e-12)
            assert r.bin_accuracy[b] == pytest.approx(correct[mask].mean(), abs=1e-12)
        else:
            assert r.bin_confidence[b] is None and r.bin_accuracy[b] is None


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 4), st.booleans()),
        min_size=1,
        max_size=80,
    )
)
def test_group_and_bias_results_match_a_direct_count(data):
    preds, labels, groups, aligned = (torch.tensor(c) for c in zip(*data))
    correct = correctness(preds, labels)
    m = group_metrics(correct, groups)
    # the same numbers counted example by example in plain Python
    hits: dict[int, list[int]] = {}
    for p, y, g, _ in data:
        hits.setdefault(g, []).append(int(p == y))
    per_group = {g: sum(h) / len(h) for g, h in sorted(hits.items())}
    assert [(s.group, s.n) for s in m.per_group] == [(g, len(hits[g])) for g in per_group]
    assert [s.accuracy for s in m.per_group] == pytest.approx(list(per_group.values()))
    average = sum(int(p == y) for p, y, _, _ in data) / len(data)
    assert m.average_sample_weighted == pytest.approx(average)
    assert m.average_over_groups == pytest.approx(sum(per_group.values()) / len(per_group))
    assert m.worst_group_accuracy == pytest.approx(min(per_group.values()))
    assert m.worst_group.group == min(per_group, key=lambda g: (per_group[g], g))
    assert m.gap == pytest.approx(average - min(per_group.values()))
    b = bias_alignment(correct, aligned)
    on = [int(p == y) for p, y, _, a in data if a]
    off = [int(p == y) for p, y, _, a in data if not a]
    assert (b.n_aligned, b.n_conflicting) == (len(on), len(off))
    assert b.accuracy_aligned == (pytest.approx(sum(on) / len(on)) if on else None)
    assert b.accuracy_conflicting == (pytest.approx(sum(off) / len(off)) if off else None)
    assert prior_agreement(preds, labels) == pytest.approx(average)


def test_results_reject_percentages_and_nan():
    with pytest.raises(DataError, match="fraction in \\[0, 1\\]"):
        BiasAlignment(
            accuracy_aligned=85.0, accuracy_conflicting=0.1, gap=0.1, n_aligned=1, n_conflicting=1
        )
    with pytest.raises(DataError, match="not finite"):
        SplitDiagnostics(name="x", distribution="id", n=1, accuracy=float("nan"))
    with pytest.raises(DataError, match="distribution"):
        SplitDiagnostics(name="x", distribution="test", n=1, accuracy=0.5)


# -- compositional ------------------------------------------------------------------------


def test_winoground_definitions():
    # scores[k, caption, image]
    s = torch.tensor(
        [
            [[2.0, 0.0], [0.0, 1.0]],  # text ok, image ok -> group ok
            [[2.0, 1.5], [1.0, 1.0]],  # text: 2>1 and 1>1.5? no; image: 2>1.5 and 1>1? no
            [[2.0, 0.0], [3.0, 4.0]],  # text: 2>3 no; image: 2>0 and 4>3 yes
            [[2.0, 3.0], [0.0, 4.0]],  # text: 2>0 and 4>3 yes; image: 2>3 no
        ]
    )
    r = winoground_scores(s)
    assert (r.text_score, r.image_score, r.group_score, r.n_pairs) == (0.5, 0.5, 0.25, 4)
    # a constant scorer fails everything (ties are failures)
    assert winoground_scores(torch.ones(3, 2, 2)).group_score == 0.0


def test_compositional_scores_from_a_scoring_function():
    emb = {
        "a mug in grass": torch.tensor([1.0, 0.0]),
        "grass in a mug": torch.tensor([0.0, 1.0]),
        "a cat": torch.tensor([-1.0, 0.0]),
    }

    def score(images, captions):  # (n_img, n_cap)
        return images @ torch.stack([emb[c] for c in captions]).T

    pairs = [(torch.eye(2), ["a mug in grass", "grass in a mug"])]
    foils = [
        (torch.tensor([[1.0, 0.0]]), "a mug in grass", "a cat"),
        (torch.tensor([[0.0, 1.0]]), "a cat", "grass in a mug"),
    ]
    r = compositional_scores(score, pairs=pairs, foils=foils)
    assert (r.text_score, r.image_score, r.group_score) == (1.0, 1.0, 1.0)
    assert (r.foil_accuracy, r.n_foils) == (0.5, 2)
    assert foil_accuracy(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 2.0, 4.0])) == 1 / 3


def test_effect_magnitudes_hand_computed():
    te = torch.tensor([[1.0, -3.0], [2.0, 0.0]])
    m = effect_magnitudes({"te": te, "nde": torch.zeros(2, 2)}, torch.tensor([1, 0]))
    assert m.effects["te"].mean_abs == 1.5
    assert m.effects["te"].mean_predicted == pytest.approx((-3.0 + 2.0) / 2)
    assert sum(m.effects["te"].hist_counts) == 2
    assert m.effects["nde"].mean_abs == 0.0
    keys = [x.key for x in m.metrics()]
    assert "te_mean_abs" in keys and "nde_mean_predicted" in keys


# -- containers ---------------------------------------------------------------------------


def test_diagnostics_json_round_trip_and_combine():
    sp = SplitDiagnostics(
        name="id",
        distribution="id",
        n=8,
        accuracy=0.5,
        groups=group_metrics(torch.tensor([1.0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])),
        calibration=calibration(torch.tensor([0.9, 0.2, 0.7, 0.6]), torch.tensor([1.0, 0, 1, 1])),
    )
    d = Diagnostics(splits={"id": sp}, config={"seed": 0})
    ood = Diagnostics(
        splits={"ood": SplitDiagnostics(name="ood", distribution="ood", n=3, accuracy=0.2)}
    )
    both = Diagnostics.join(d, ood)
    assert list(both) == ["id", "ood"] and both["ood"].accuracy == 0.2
    text = both.to_json()
    json.loads(text)
    assert Diagnostics.from_json(text) == both
    assert "definitions" in json.loads(text)["splits"]["id"]["groups"]
    with pytest.raises(DataError, match="appears twice"):
        Diagnostics.join(d, d)
    with pytest.warns(FutureWarning, match=r"Diagnostics\.join"):
        assert Diagnostics.combine(d, ood) == both  # the former name, for one release
    with pytest.raises(KeyError, match="no split named"):
        both["test"]
    keys = [m.key for m in both.metrics()]
    assert len(keys) == len(set(keys))  # every number has a unique key
    pope = MetricTable.from_mapping("Hallucination (POPE)", {"random": {"accuracy": 0.9}})
    assert both.with_extras(pope).extras == (pope,)


def test_metric_table_validates_values():
    t = MetricTable.from_mapping("t", {"a": {"x": 0.5, "y": 3.0}, "b": {"x": 0.25}})
    assert t.columns == ("a", "b")
    assert t.rows[0].kind == "fraction" and t.rows[1].kind == "real"
    assert t.rows[1].values == (3.0, None)
    with pytest.raises(DataError, match="fraction"):
        MetricTable.from_mapping("t", {"a": {"x": 1.5}}, kinds={"x": "fraction"})


def test_heavy_dependencies_stay_unimported():
    import subprocess
    import sys

    code = (
        "import sys, causalvl; causalvl.diagnose; causalvl.BiasReport; "
        "causalvl.estimate_spurious_effect; causalvl.audit_blind_solvability; "
        "print(sorted(m for m in ('pandas', 'dowhy', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
