"""GGE's other official variants: the softmax pseudo label, GreedyGradient_softmaxCE, the
Decompose loss and its sin epoch schedule (methods.md §5), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import causalvl
from causalvl.interventions.ensembles import (
    gge_decompose_loss,
    gge_pseudo_label,
    gge_schedule_weight,
    greedy_gradient_softmax_ce_loss,
    set_bias_prior,
)
from causalvl.training import Callback, Trainer

A, T = 5, 3


def _prior() -> torch.Tensor:
    return torch.rand(T, A, generator=torch.Generator().manual_seed(0)) * 0.9


def _batch(batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(batch, 3, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, (batch, 5), generator=g),
        "question_type": torch.randint(0, T, (batch,), generator=g),
        "labels": torch.rand(batch, A, generator=g).round(decimals=1),
    }


def _wrapped(cfg):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = causalvl.models.TinyVQA(vocab_size=20, num_answers=A, image_size=8, hidden=16)
    vl = causalvl.intervene(net, cfg)
    if cfg.bias != "question":
        set_bias_prior(vl, _prior())
    return vl


# ---------------------------------------------------------------------------------------
# pure functions, hand-computed
# ---------------------------------------------------------------------------------------
def test_softmax_pseudo_label_uses_the_reference_as_a_probability():
    y = torch.tensor([[1.0, 0.0, 0.6, 0.3]])
    r = torch.tensor([[0.25, 0.5, 0.1, 0.7]])
    # clamp(y - r, 0, 1) by hand: 0.75, 0 (negative), 0.5, 0 (negative)
    expected = torch.tensor([[0.75, 0.0, 0.5, 0.0]])
    torch.testing.assert_close(gge_pseudo_label(y, r, "softmax"), expected)
    # "corrected" applies a sigmoid to r first: a different label
    assert not torch.allclose(gge_pseudo_label(y, r, "corrected"), expected)


def test_softmax_ce_loss_matches_hand_computation():
    # probabilities 0.5, 0.25, 0.25; y = (1, 0.5, 0), r = (0.25, 0.75, 0.5)
    f = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]))
    y = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    r = torch.tensor([[0.25, 0.75, 0.5], [0.0, 0.0, 0.2]])
    # row 0: pseudo (0.75, 0, 0) -> 0.75 * log 2; row 1: pseudo (0, 0, 0.8) -> 0.8 * log 2
    expected = (0.75 * math.log(2) + 0.8 * math.log(2)) / 2
    assert float(greedy_gradient_softmax_ce_loss(f, y, r)) == pytest.approx(expected, abs=1e-6)
    # class ids are one-hot scores
    ids = greedy_gradient_softmax_ce_loss(f, torch.tensor([0, 2]), r)
    assert float(ids) == pytest.approx((0.75 * math.log(2) + 0.8 * math.log(2)) / 2, abs=1e-6)


def test_softmax_ce_pseudo_label_is_detached():
    f = torch.randn(3, A, requires_grad=True)
    r = torch.rand(3, A, requires_grad=True)
    greedy_gradient_softmax_ce_loss(f, torch.rand(3, A), r).backward()
    assert f.grad is not None and r.grad is None


def test_decompose_loss_matches_hand_computation():
    f = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    y = torch.tensor([[1.0, 0.0, 0.5]])
    ref = torch.tensor([[0.6, 0.9, 1.7]])  # clamp -> (0.6, 0.9, 1.0), times y -> (0.6, 0, 0.5)
    w = 0.5
    # A * [mean(-y log p) - w mean(-r log p)] = sum_a -(y - w r)_a log p_a (one example)
    by_hand = (1.0 - 0.5 * 0.6) * math.log(2) + (0.5 - 0.5 * 0.5) * math.log(4)
    assert float(gge_decompose_loss(f, y, ref, w)) == pytest.approx(by_hand, abs=1e-6)
    # w = 0 is the plain soft-label cross-entropy
    assert float(gge_decompose_loss(f, y, ref, 0.0)) == pytest.approx(
        math.log(2) + 0.5 * math.log(4), abs=1e-6
    )


def test_schedule_weight_is_the_official_sin():
    assert gge_schedule_weight(0, 25) == pytest.approx(math.sin(math.pi / 2 * 30 / 55))
    assert gge_schedule_weight(10, 25) == pytest.approx(math.sin(math.pi / 2 * 40 / 55))
    ws = [gge_schedule_weight(e, 25) for e in range(25)]
    assert all(a < b for a, b in zip(ws, ws[1:])) and ws[-1] < 1.0
    with pytest.raises(causalvl.ConfigError, match="num_epochs"):
        gge_schedule_weight(0, 0)
    with pytest.raises(causalvl.ConfigError, match="epoch"):
        gge_schedule_weight(-1, 5)


# ---------------------------------------------------------------------------------------
# the config options, wrapped
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", ["both", "question", "distribution"])
@pytest.mark.parametrize("variant", ["iterative", "together"])
def test_softmax_ce_config_equals_direct_computation(bias, variant):
    batch = _batch(seed=3)
    vl = _wrapped(
        causalvl.GGEConfig(bias=bias, variant=variant, loss="softmax_ce", hidden_sizes=(8,))
    )
    out = vl(batch)
    parts = vl.objective(out, batch).parts
    f, y = out.factual_logits.detach().double(), batch["labels"].double()
    b = _prior()[batch["question_type"]].double()

    def sce(x, r):
        return (-(torch.clamp(y - r, 0, 1) * F.log_softmax(x, -1)).sum(-1)).mean()

    if bias == "distribution":
        torch.testing.assert_close(parts["gge_base"].double(), sce(f, b), atol=1e-5, rtol=0)
        return
    q_out = out.branch_logits["question"].detach().double()
    z_q = out.features["gge_question_hidden"].detach().double()
    if bias == "question":
        exp_q = (-(y * F.log_softmax(q_out, -1)).sum(-1)).mean()
        exp_base = sce(f, torch.softmax(q_out, -1))
    else:
        exp_q = sce(q_out, b)
        source = z_q if variant == "iterative" else q_out
        exp_base = sce(f, torch.softmax(source, -1) + b)
    torch.testing.assert_close(parts["gge_question"].double(), exp_q, atol=1e-5, rtol=0)
    torch.testing.assert_close(parts["gge_base"].double(), exp_base, atol=1e-5, rtol=0)


def test_bce_with_softmax_pseudo_label_uses_softmax_of_the_branch():
    batch = _batch(seed=4)
    vl = _wrapped(causalvl.GGEConfig(pseudo_label="softmax", variant="together", hidden_sizes=(8,)))
    out = vl(batch)
    parts = vl.objective(out, batch).parts
    f, y = out.factual_logits.detach().double(), batch["labels"].double()
    b = _prior()[batch["question_type"]].double()
    q_out = out.branch_logits["question"].detach().double()
    target = torch.clamp(y - (torch.softmax(q_out, -1) + b), 0, 1)
    expected = F.binary_cross_entropy_with_logits(f, target) * A
    torch.testing.assert_close(parts["gge_base"].double(), expected, atol=1e-5, rtol=0)


def test_decompose_config_with_sin_schedule_reads_the_epoch():
    batch = _batch(seed=5)
    cfg = causalvl.GGEConfig(
        loss="decompose", variant="together", weight_schedule="sin", hidden_sizes=(8,)
    )
    vl = _wrapped(cfg)
    out = vl(batch)
    with pytest.raises(causalvl.InterventionStateError, match="set_epoch"):
        vl.objective(out, batch)
    vl.set_epoch(3, 10)
    parts = vl.objective(out, batch).parts
    f, y = out.factual_logits.detach().double(), batch["labels"].double()
    b = _prior()[batch["question_type"]].double()
    q_out = out.branch_logits["question"].detach().double()
    w = math.sin(math.pi / 2 * 33 / 40)
    r = torch.clamp(torch.softmax(q_out, -1) + b, 0, 1) * y
    log_p = F.log_softmax(f, -1)
    expected = A * ((-y * log_p).mean() - w * (-r * log_p).mean())
    torch.testing.assert_close(parts["gge_base"].double(), expected, atol=1e-5, rtol=0)
    exp_q = (-(torch.clamp(y - b, 0, 1) * F.log_softmax(q_out, -1)).sum(-1)).mean()
    torch.testing.assert_close(parts["gge_question"].double(), exp_q, atol=1e-5, rtol=0)


def test_decompose_detaches_the_reference_by_default():
    batch = _batch(seed=6)
    for detach in (None, False):
        cfg = causalvl.GGEConfig(loss="decompose", hidden_sizes=(8,), detach_pseudo_label=detach)
        vl = _wrapped(cfg)
        impl = vl.interventions["0_gge"]
        impl.loss(vl(batch), batch)["gge_base"].backward()
        c1 = sum(float(p.grad.abs().sum()) for p in impl.c_1.parameters() if p.grad is not None)
        assert (c1 == 0) == (detach is None)


def test_trainer_sets_the_epoch_of_the_schedule():
    seen = []

    class Spy(Callback):
        def on_epoch_begin(self, trainer, epoch):
            seen.append(trainer.model.interventions["0_gge"].epoch)

    data = [_batch(batch=4, seed=s) for s in range(4)]
    rows = [{k: v[i] for k, v in b.items()} for b in data for i in range(4)]
    cfg = causalvl.GGEConfig(loss="decompose", weight_schedule="sin", hidden_sizes=(8,))
    vl = _wrapped(cfg)
    trainer = Trainer(
        vl,
        rows,
        config=causalvl.TrainConfig(epochs=2, batch_size=8, progress=False),
        callbacks=[Spy()],
    )
    trainer.fit()
    assert seen == [(0, 2), (1, 2)]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"loss": "softmax_ce", "pseudo_label": "published"}, "pseudo_label"),
        ({"loss": "decompose", "pseudo_label": "corrected"}, "pseudo_label"),
        ({"pseudo_label": "other"}, "pseudo_label"),
        ({"loss": "other"}, "loss"),
        ({"weight_schedule": "sin"}, "weight_schedule"),
        ({"loss": "decompose", "weight_schedule": "cosine"}, "weight_schedule"),
        ({"loss": "decompose", "decompose_weight": -1.0}, "decompose_weight"),
        ({"detach_pseudo_label": "yes"}, "detach_pseudo_label"),
    ],
)
def test_bad_variant_options_name_the_field(kwargs, field):
    with pytest.raises(causalvl.ConfigError, match=field):
        causalvl.GGEConfig(**kwargs)


def test_variant_options_round_trip_json():
    cfg = causalvl.GGEConfig(loss="decompose", weight_schedule="sin", decompose_weight=0.5)
    back = causalvl.GGEConfig.from_json(cfg.to_json())
    assert back == cfg and back.effective_pseudo_label() == "softmax" and back.effective_detach()
    assert causalvl.GGEConfig().effective_pseudo_label() == "published"
    assert not causalvl.GGEConfig().effective_detach()
