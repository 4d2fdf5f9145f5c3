"""The efficacy protocol: no blind rule beats chance on the primary split, the probe sees the
image, and the summary / targets arithmetic is right."""

from __future__ import annotations

import pytest
import torch

from causalvl import efficacy as E


@pytest.fixture(scope="module")
def data():
    settings = E.EfficacySettings(num_train=600, num_val=100, num_test=600, num_refit=120, epochs=1)
    return E.build_data(settings, seed=0)


def test_blind_rules_sit_at_chance_on_the_uniform_split_but_not_on_the_legacy_one(data):
    test = data.tests["ood"]
    t = test.tensors()
    chance = float(
        torch.tensor([1.0 / int(data.support[q].sum()) for q in t["question_type"].tolist()]).mean()
    )
    for rule in E.BLIND_RULES:
        acc = E.score(E.blind_predictions(data, test, rule), test, data, 5)["accuracy"]
        assert abs(acc - chance) < 0.05, (rule, acc, chance)
    # the training-prior rule follows the prior in distribution
    ident = data.tests["id"]
    id_acc = E.score(E.blind_predictions(data, ident, "training-prior rule"), ident, data, 5)
    assert id_acc["accuracy"] > 0.6 and id_acc["training_favoured_share"] == 1.0
    # on the legacy split (disjoint test-favoured answers) avoiding the prior wins
    from causalvl.datasets import PriorShiftVQA

    legacy = PriorShiftVQA(
        split="test",
        seed=0,
        prior_strength=0.9,
        noise_std=0.0,
        num_examples=600,
        tokenizer=data.train.tokenizer,
    )
    anti = E.score(E.blind_predictions(data, legacy, "anti-prior rule"), legacy, data, 5)
    assert anti["accuracy"] > chance + 0.15


def test_random_prior_split_overlaps_the_training_favourites(data):
    rand = data.tests["ood_random"]
    prior = rand.configured_prior()
    train = data.train.base.configured_prior("train")
    # not the training prior, not uniform, and not disjoint from the training favourites
    assert (prior - train).abs().sum() > 1.0
    favourite = prior.argmax(1)
    assert any(train[t, favourite[t]] > 0.3 for t in range(prior.shape[0]))


def test_image_probe_reads_the_image(data):
    probe = E.fit_probe(data, seed=0)
    acc = E.score(probe(data.tests["ood"]), data.tests["ood"], data, 5)
    assert acc["accuracy"] > 0.75 and acc["valid_answer_share"] == 1.0


def _row(ood, id_acc=0.8, **extra):
    split = {
        "accuracy": ood,
        "worst_group_accuracy": ood / 2,
        "valid_answer_share": 1.0,
        "training_favoured_share": 0.2,
        "accuracy_yesno": ood,
        "accuracy_other": ood,
        "groups": {},
        "groups_below_min_size": {},
        "per_type": {},
    }
    return {
        "val": dict(split),
        "id": dict(split, accuracy=id_acc),
        "ood": split,
        "ood_random": dict(split),
        **extra,
    }


def test_summary_gap_closed_per_seed_and_the_targets():
    seeds = []
    for plain, oracle, method in ((0.5, 0.8, 0.7), (0.6, 0.8, 0.75), (0.55, 0.85, 0.72)):
        seeds.append(
            {
                "training-prior rule": _row(0.34),
                "anti-prior rule": _row(0.33),
                "image-only probe": _row(0.86),
                "plain": _row(plain, 0.95),
                "oracle": _row(oracle, 0.80),
                "good": _row(method, 0.80),
                "costly": _row(method, 0.70),
                "blind": _row(0.30),
            }
        )
    summary = E.summarise(seeds)
    closed = summary["good"]["gap_closed"]["values"]
    assert closed == pytest.approx([2 / 3, 0.75, 17 / 30])
    assert summary["blind"]["blind_rule_matches"] and not summary["good"]["blind_rule_matches"]
    j = E.judge(summary)
    assert j["gap_ok"] and j["oracle_learns_image"]
    assert j["met"] == ["good"]  # "costly" closes as much but loses 10 points ID
    assert j["methods"]["costly"]["id_minus_oracle_id"] == pytest.approx(-0.10)
    text = " ".join(E.verdict(summary))
    assert "Target met" in text and "good" in text
    table = E.table(summary)
    assert "⚑ blind rule matches" in table.split("| blind")[1].split("\n")[0]


def test_targets_missed_when_the_gap_is_noise():
    seeds = [
        {
            "training-prior rule": _row(0.34),
            "anti-prior rule": _row(0.33),
            "image-only probe": _row(0.9),
            "plain": _row(0.60),
            "oracle": _row(0.65),
            "m": _row(0.64),
        }
        for _ in range(2)
    ]
    j = E.judge(E.summarise(seeds))
    assert not j["gap_ok"] and not j["oracle_learns_image"]


def test_the_probe_fits_with_one_blas_thread(monkeypatch):
    """The probe's lbfgs fit sums in a thread-dependent order, so it runs single-threaded: the
    same seed gives the same probe row on any machine."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    from causalvl.runtime import single_threaded_blas

    seen = []
    fit = LogisticRegression.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(max((p["num_threads"] for p in threadpool_info()), default=1))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", recording_fit)
    settings = E.EfficacySettings.smoke()
    E.fit_probe(E.build_data(settings, 0), 0)
    assert seen == [1, 1]
    with single_threaded_blas():
        assert all(p["num_threads"] == 1 for p in threadpool_info())
