"""ReweightConfig: the three weightings against hand-computed values, and its plumbing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import causalvl
from causalvl.errors import ConfigError, InputError
from causalvl.interventions.ensembles import lmh_softmax_loss, set_bias_prior
from causalvl.interventions.reweight import reweight_loss

F_ = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
B_ = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
Y_ = torch.tensor([0, 1])


def _ce(i: int) -> float:
    return float(F.cross_entropy(F_[i : i + 1], Y_[i : i + 1]))


def test_inverse_prior_weights_each_example_by_one_over_its_answer_prior():
    w = [1 / 0.7, 1 / 0.3]
    want = (w[0] * _ce(0) + w[1] * _ce(1)) / sum(w)
    assert float(reweight_loss(F_, Y_, B_, "inverse_prior")) == pytest.approx(want, rel=1e-6)


def test_lmh_ce_weights_by_one_minus_prior():
    w = [0.3, 0.7]
    want = (w[0] * _ce(0) + w[1] * _ce(1)) / sum(w)
    assert float(reweight_loss(F_, Y_, B_, "lmh_ce")) == pytest.approx(want, rel=1e-6)


def test_lmh_bce_weights_every_answer_by_one_minus_prior():
    y = F.one_hot(Y_, 3).float()
    total, norm = 0.0, 0.0
    for i in range(2):
        for a in range(3):
            p = 1 / (1 + math.exp(-float(F_[i, a])))
            bce = -(float(y[i, a]) * math.log(p) + (1 - float(y[i, a])) * math.log(1 - p))
            total += (1 - float(B_[i, a])) * bce
            norm += 1 - float(B_[i, a])
    assert float(reweight_loss(F_, Y_, B_, "lmh_bce")) == pytest.approx(total / norm, rel=1e-6)


def test_rare_answers_get_most_weight():
    # the gradient on the rare answer's example is larger under inverse_prior than plain CE
    f = torch.zeros(2, 2, requires_grad=True)
    b = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    reweight_loss(f, torch.tensor([0, 1]), b).backward()
    g = f.grad.abs().sum(1)
    assert float(g[1] / g[0]) == pytest.approx(9.0, rel=1e-5)


def test_wrapped_reweight_trains_saves_and_loads(tmp_path):
    net = causalvl.models.TinyVQA(vocab_size=12, num_answers=4)
    vl = causalvl.intervene(net, causalvl.ReweightConfig(kind="lmh_ce"))
    prior = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    set_bias_prior(vl, prior)
    batch = {
        "pixel_values": torch.rand(4, 3, 16, 16),
        "input_ids": torch.randint(1, 12, (4, 5)),
        "labels": torch.tensor([0, 1, 2, 3]),
        "question_type": torch.tensor([0, 0, 1, 1]),
    }
    out = vl(**batch)
    parts = vl.objective(out, batch).parts
    assert set(parts) == {"reweighted"}
    want = reweight_loss(
        out.factual_logits, batch["labels"], prior[batch["question_type"]], "lmh_ce"
    )
    assert torch.allclose(parts["reweighted"], want)
    vl.save_pretrained(tmp_path)
    again = causalvl.load(tmp_path, causalvl.models.TinyVQA(vocab_size=12, num_answers=4))
    assert torch.equal(again.interventions["0_reweight"].prior, prior)


def test_reweight_errors():
    with pytest.raises(ConfigError, match="kind"):
        causalvl.ReweightConfig(kind="inverse")
    with pytest.raises(ConfigError, match="min_prior"):
        causalvl.ReweightConfig(min_prior=0)
    vl = causalvl.intervene(
        causalvl.models.TinyVQA(vocab_size=12, num_answers=4), causalvl.ReweightConfig()
    )
    with pytest.raises(InputError, match="3 answer columns but the model has 4"):
        set_bias_prior(vl, torch.full((2, 3), 0.3))
    batch = {
        "pixel_values": torch.rand(2, 3, 16, 16),
        "input_ids": torch.randint(1, 12, (2, 5)),
        "labels": torch.tensor([0, 1]),
    }
    with pytest.raises(Exception, match="question-type prior|question_type"):
        vl.objective(vl(**batch), batch)
    with pytest.raises(InputError, match="soft scores"):
        reweight_loss(torch.zeros(2, 3), torch.rand(2, 3), torch.full((2, 3), 0.3), "inverse_prior")


def test_lmh_softmax_support_leaves_off_type_answers_to_the_model():
    f = torch.zeros(1, 4, requires_grad=True)
    log_b = torch.log(torch.tensor([[0.9, 0.1, 1e-4, 1e-4]]))
    support = torch.tensor([[True, True, False, False]])
    lmh_softmax_loss(f, torch.tensor([1]), log_b, 3.0)[0].backward()
    floored = f.grad.clone()
    f.grad = None
    lmh_softmax_loss(f, torch.tensor([1]), log_b, 3.0, support)[0].backward()
    # with the floor, g log b explains the off-type answers away: almost no gradient on them
    assert float(floored[0, 2:].abs().max()) < 1e-9
    # with the support, the model itself is pushed down on them
    assert float(f.grad[0, 2:].min()) > 0.05
