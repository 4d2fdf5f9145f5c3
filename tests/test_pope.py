"""POPE questions, answer parsing and metrics."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

import causalvl
from causalvl.decoding.pope import (
    DEFINITIONS,
    POPEEvaluator,
    build_pope_questions,
    cooccurrence,
    object_frequencies,
    parse_yes_no,
    pope_metrics,
)
from causalvl.errors import ConfigError, DataError

# a small labelled set with clear frequency / co-occurrence structure
LABELS = {
    "i1": {"person", "dog", "frisbee"},
    "i2": {"person", "car"},
    "i3": {"person", "dog", "leash"},
    "i4": {"cat", "sofa"},
    "i5": {"person", "car", "traffic light"},
    "i6": {"dog", "frisbee", "grass"},
    "i7": {"cat", "sofa", "remote"},
    "i8": {"car", "traffic light", "bus"},
}


def _random_labels(seed: int) -> dict[str, set[str]]:
    rng = random.Random(seed)
    vocab = [f"obj{i}" for i in range(15)]
    return {f"img{i}": set(rng.sample(vocab, rng.randint(1, 6))) for i in range(30)}


@pytest.mark.parametrize("setting", ["random", "popular", "adversarial"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_questions_are_valid_and_balanced(setting: str, seed: int) -> None:
    labels = _random_labels(seed)
    qs = build_pope_questions(labels, setting=setting, num_per_image=3, seed=seed)
    per_image: dict[str, Counter[str]] = {}
    for q in qs:
        assert q.setting == setting
        assert q.text == f"Is there a {q.object} in the image?"
        if q.label == "yes":
            assert q.object in labels[q.image_id]
        else:
            assert q.object not in labels[q.image_id]
        per_image.setdefault(q.image_id, Counter())[q.label] += 1
    for image_id, counts in per_image.items():
        assert counts["yes"] == counts["no"] == min(3, len(labels[image_id]))
    # no duplicate question per image
    assert len({(q.image_id, q.object) for q in qs}) == len(qs)


def test_popular_negatives_are_the_most_frequent_absent_objects() -> None:
    freq = object_frequencies(LABELS)
    assert freq["person"] == 4 and freq["car"] == 3 and freq["dog"] == 3
    qs = build_pope_questions(LABELS, setting="popular", num_per_image=2)
    no = {i: [q.object for q in qs if q.image_id == i and q.label == "no"] for i in LABELS}
    # i4 = {cat, sofa}: most frequent absent objects are person (4), then car and dog (3; by name)
    assert no["i4"] == ["person", "car"]
    # i1 = {person, dog, frisbee}: car (3), then the 2-count objects by name: cat, sofa, traffic light
    assert no["i1"] == ["car", "cat"]
    for image_id, objects in no.items():
        absent = [o for o in freq if o not in LABELS[image_id]]
        top = sorted(absent, key=lambda o: (-freq[o], o))[: len(objects)]
        assert objects == top


def test_adversarial_negatives_are_the_most_cooccurring_absent_objects() -> None:
    co = cooccurrence(LABELS)
    assert (
        co["dog"]["frisbee"] == 2 and co["person"]["dog"] == 2 and co["car"]["traffic light"] == 2
    )
    qs = build_pope_questions(LABELS, setting="adversarial", num_per_image=1)
    pairs = {
        i: (
            [q.object for q in qs if q.image_id == i and q.label == "yes"][0],
            [q.object for q in qs if q.image_id == i and q.label == "no"][0],
        )
        for i in LABELS
    }
    # i4 = {cat, sofa}: both co-occur most with remote
    assert pairs["i4"][1] == "remote"
    # i2 = {person, car}: person -> dog (2, before frisbee/leash/traffic light), car -> traffic light (2)
    expected = {"person": "dog", "car": "traffic light"}
    assert pairs["i2"][1] == expected[pairs["i2"][0]]


@pytest.mark.parametrize("seed", [0, 1])
def test_adversarial_pairs_follow_pope_per_positive_object(seed: int) -> None:
    labels = _random_labels(seed)
    co = cooccurrence(labels)
    qs = build_pope_questions(labels, setting="adversarial", num_per_image=3, seed=seed)
    for image_id, objs in labels.items():
        yes = [q.object for q in qs if q.image_id == image_id and q.label == "yes"]
        no = [q.object for q in qs if q.image_id == image_id and q.label == "no"]
        used: list[str] = []
        for y, n in zip(yes, no):
            cands = {c: k for c, k in co.get(y, {}).items() if c not in objs and c not in used}
            if cands:
                best = max(cands.values())
                assert cands.get(n) == best, (image_id, y, n)
                assert n == min(c for c, k in cands.items() if k == best)  # ties by name
            else:
                assert n not in objs
            used.append(n)


def test_random_negatives_are_seeded_and_cover_the_absent_pool() -> None:
    a = build_pope_questions(LABELS, setting="random", num_per_image=2, seed=3)
    b = build_pope_questions(LABELS, setting="random", num_per_image=2, seed=3)
    assert a == b
    drawn = Counter()
    for seed in range(40):
        for q in build_pope_questions(LABELS, setting="random", num_per_image=1, seed=seed):
            if q.image_id == "i4" and q.label == "no":
                drawn[q.object] += 1
    # random negatives are not restricted to the popular ones: most absent objects appear
    absent = {o for objs in LABELS.values() for o in objs} - LABELS["i4"]
    assert set(drawn) <= absent and len(drawn) >= len(absent) - 2


def test_parse_yes_no_follows_the_pope_script() -> None:
    cases = {
        "Yes": "yes",
        "No": "no",
        "no.": "no",
        "No, there is not.": "no",
        "There is not a dog": "no",
        "Yes, there is a dog. No cat though.": "yes",
        "NO": "yes",  # the script only matches 'No', 'no' and 'not'
        "Nope": "yes",
        "": "yes",
        "there is no,dog": "yes",  # commas are removed before splitting: 'nodog'
        "I do not know": "no",
    }
    for text, expected in cases.items():
        assert parse_yes_no(text) == expected, text
    with pytest.raises(DataError):
        parse_yes_no(3)  # type: ignore[arg-type]


def test_metrics_equal_hand_computation() -> None:
    preds = ["Yes", "yes", "No", "no", "Yes there is", "No.", "yes", "not sure"]
    labels = ["yes", "no", "no", "yes", "yes", "no", "no", "yes"]
    # parsed: y y n n y n y n -> TP 2 (0, 4), FP 2 (1, 6), TN 2 (2, 5), FN 2 (3, 7)
    m = pope_metrics(preds, labels)
    assert (m.tp, m.fp, m.tn, m.fn, m.n) == (2, 2, 2, 2, 8)
    assert m.accuracy == 0.5 and m.precision == 0.5 and m.recall == 0.5 and m.f1 == 0.5
    assert m.yes_ratio == 0.5
    m2 = pope_metrics([True, True, True, False], [True, False, True, True])
    assert (m2.tp, m2.fp, m2.tn, m2.fn) == (2, 1, 0, 1)
    assert m2.precision == pytest.approx(2 / 3) and m2.recall == pytest.approx(2 / 3)
    assert m2.f1 == pytest.approx(2 / 3) and m2.accuracy == 0.5 and m2.yes_ratio == 0.75
    none_yes = pope_metrics(["no", "no"], ["yes", "no"])
    assert none_yes.precision == 0.0 and none_yes.f1 == 0.0 and none_yes.yes_ratio == 0.0
    with pytest.raises(DataError, match="predictions"):
        pope_metrics(["yes"], ["yes", "no"])
    with pytest.raises(DataError):
        pope_metrics(["yes"], ["maybe"])


def test_evaluator_reports_yes_ratio_and_serialises() -> None:
    ev = POPEEvaluator(LABELS, num_per_image=2, seed=0)
    assert set(ev.questions) == {"random", "popular", "adversarial"}
    always_yes = ev.evaluate(lambda qs: ["Yes"] * len(qs), name="always yes")
    oracle = ev.evaluate(lambda qs: [q.label for q in qs], name="oracle")
    for s in ev.questions:
        assert always_yes.settings[s].yes_ratio == 1.0 and always_yes.settings[s].accuracy == 0.5
        assert oracle.settings[s].accuracy == 1.0 and oracle.settings[s].yes_ratio == 0.5
    d = json.loads(json.dumps(oracle.to_dict()))
    assert d["name"] == "oracle" and d["settings"]["popular"]["f1"] == 1.0
    assert set(d["definitions"]) == set(DEFINITIONS) and "yes_ratio" in d["definitions"]
    assert "co-occurs" in d["setting_definitions"]["adversarial"]
    with pytest.raises(DataError, match="one answer per question"):
        ev.evaluate(lambda qs: ["yes"])
    with pytest.raises(ConfigError):
        ev.score("hard", [])


def test_result_becomes_a_report_section() -> None:
    ev = POPEEvaluator(LABELS, num_per_image=1, settings=["random", "adversarial"])
    res = ev.evaluate(lambda qs: ["yes" if i % 3 else "no" for i in range(len(qs))], name="vcd")
    table = res.to_metric_table()
    assert isinstance(table, causalvl.MetricTable)
    assert table.columns == ("random", "adversarial")
    rows = {r.name: r for r in table.rows}
    assert rows["yes_ratio"].values[0] == res.settings["random"].yes_ratio
    assert rows["yes_ratio"].definition == DEFINITIONS["yes_ratio"]
    assert rows["tp"].kind == "count"


def test_builder_errors() -> None:
    with pytest.raises(ConfigError, match="setting"):
        build_pope_questions(LABELS, setting="hard")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="object"):
        build_pope_questions(LABELS, template="Is it there?")
    with pytest.raises(DataError, match="collection"):
        build_pope_questions({"a": "dog"})
    with pytest.raises(DataError, match="no POPE question"):
        build_pope_questions({"a": {"dog"}, "b": {"dog"}})


def test_result_flows_into_diagnostics_and_the_bias_report(tmp_path) -> None:
    from causalvl.diagnostics.results import Diagnostics, SplitDiagnostics

    ev = POPEEvaluator(LABELS, num_per_image=1)
    res = ev.evaluate(lambda qs: ["Yes"] * len(qs), name="always yes")
    diag = Diagnostics(
        splits={"ood": SplitDiagnostics(name="ood", distribution="ood", n=10, accuracy=0.4)}
    ).with_extras(res)  # a POPE result converts itself, like any result with a metric table
    assert diag.extras == (res.to_metric_table(),)
    with pytest.raises(DataError, match="to_metric_table"):
        diag.with_extras({"not": "a table"})
    report = causalvl.BiasReport(diag, title="decoding")
    md = report.to_markdown()
    assert "## Hallucination (POPE): always yes" in md
    assert "| yes\\_ratio | 1.000 | 1.000 | 1.000 |" in md
    paths = report.save(tmp_path)
    assert "Hallucination (POPE): always yes" in paths["json"].read_text()
    assert "Hallucination (POPE): always yes" in paths["html"].read_text()
