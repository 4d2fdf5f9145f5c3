"""The blind-solvability audit measures a benchmark's own language prior."""

from __future__ import annotations

import pytest
import torch

from causalvl.diagnostics import BlindSolvabilityAudit, audit_blind_solvability


def test_text_reveals_answer_vs_not():
    # answer given away by the question wording
    texts = [f"is the {w} thing red" for w in ("big", "small")] * 30
    labels = [1, 0] * 30
    a = audit_blind_solvability((texts, labels), folds=5, seed=0)
    assert isinstance(a, BlindSolvabilityAudit)
    assert a.text_model_accuracy == 1.0
    assert a.majority_class_accuracy == pytest.approx(0.5, abs=0.1)
    assert a.blind_gain > 0.4
    assert a.majority_per_question_type_accuracy is None
    # identical questions: no text model can beat the majority answer
    b = audit_blind_solvability((["what is it"] * 40, [0] * 30 + [1] * 10), folds=4, seed=0)
    assert b.text_model_accuracy == pytest.approx(0.75)
    assert b.majority_class_accuracy == pytest.approx(0.75)
    assert b.blind_gain == pytest.approx(0.0)


def test_majority_per_question_type_and_dataset_input():
    class Items:
        def __init__(self):
            self.items = []
            for i in range(48):
                qt = i % 3
                label = (
                    qt if i % 4 else (qt + 1) % 3
                )  # the type predicts the answer 3/4 of the time
                self.items.append(
                    {
                        "question": f"question {i}",
                        "labels": torch.tensor(label),
                        "question_type": torch.tensor(qt),
                    }
                )

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    a = audit_blind_solvability(Items(), folds=4, seed=1)
    assert a.majority_per_question_type_accuracy == pytest.approx(0.75)
    assert a.n == 48 and a.n_classes == 3 and a.text_source == "the example key 'question'"
    for m in a.metrics():
        assert m.definition


@pytest.mark.filterwarnings("ignore:the rarest answer:UserWarning")
def test_audit_on_prior_shift_data():
    datasets = pytest.importorskip("causalvl.datasets.prior_shift")
    ds = datasets.PriorShiftVQA(split="train", num_examples=200)
    a = audit_blind_solvability(ds, folds=3, seed=0)
    # the training split's prior makes the questions informative
    assert a.text_model_accuracy > a.majority_class_accuracy
    # the most common answer of each question type, counted directly on the whole split: the
    # cross-validated baseline (tables fitted on the other folds) lands within a few examples
    from collections import Counter

    qt = [int(ds[i]["question_type"]) for i in range(len(ds))]
    y = [int(ds[i]["labels"]) for i in range(len(ds))]
    top = {q: Counter(a for t, a in zip(qt, y) if t == q).most_common(1)[0][0] for q in set(qt)}
    in_sample = sum(top[t] == a for t, a in zip(qt, y)) / len(y)
    per_type = a.majority_per_question_type_accuracy
    assert per_type == pytest.approx(in_sample, abs=0.05)
    assert per_type * 200 == pytest.approx(round(per_type * 200))  # a share of the 200 items
    assert per_type > a.majority_class_accuracy + 0.3  # the prior is per question type
