"""LMH / BiasProduct / GGE bias ensembles: formulas, gradient flow, model families, end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import inputs_for
from torch import nn

import causalvl
from causalvl.config import InterventionConfig
from causalvl.interventions.ensembles import (
    bias_product_loss,
    gge_pseudo_label,
    greedy_gradient_loss,
    lmh_bce_loss,
    lmh_softmax_loss,
    prior_log_probs,
    question_type_prior,
    set_bias_prior,
)

A = 5  # answers of the tiny models
T = 3  # question types


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _prior(seed=0) -> torch.Tensor:
    return torch.rand(T, A, generator=torch.Generator().manual_seed(seed)) * 0.9


def _tiny_vqa(seed=0, num_answers=A):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return causalvl.models.TinyVQA(
            vocab_size=20, num_answers=num_answers, image_size=8, hidden=16
        )


def _tiny_batch(batch=6, seed=0, soft=False):
    g = torch.Generator().manual_seed(seed)
    out = {
        "pixel_values": torch.rand(batch, 3, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, (batch, 5), generator=g),
        "question_type": torch.randint(0, T, (batch,), generator=g),
    }
    if soft:
        out["labels"] = torch.rand(batch, A, generator=g).round(decimals=1)
    else:
        out["labels"] = torch.randint(0, A, (batch,), generator=g)
    return out


def _wrapped(cfg, seed=0, prior=None):
    vl = causalvl.intervene(_tiny_vqa(seed), cfg)
    if getattr(cfg, "bias", "both") != "question":  # GGE's q_bias variant uses no prior
        set_bias_prior(vl, _prior() if prior is None else prior)
    return vl


# ---------------------------------------------------------------------------------------
# direct transcriptions of the reference formulas (methods.md §4b, §4c, §5)
# ---------------------------------------------------------------------------------------
def _lmh_bce_reference(f, y, b, g, smooth):
    """§4b written out elementwise, in float64."""
    f, y, b = f.double(), y.double(), b.double()
    g = g.double().reshape(-1, 1)
    l1 = torch.log(torch.sigmoid(f)) + g * torch.log(b + smooth)
    l0 = torch.log(torch.sigmoid(-f)) + g * torch.log(1 - b + smooth)
    z = torch.log(torch.exp(l1) + torch.exp(l0))
    l1, l0 = l1 - z, l0 - z
    loss = (-(y * l1 + (1 - y) * l0)).sum(1).mean()
    e1 = torch.exp(g * torch.log(b + smooth))
    e0 = torch.exp(g * torch.log(1 - b + smooth))
    p1, p0 = e1 / (e1 + e0), e0 / (e1 + e0)
    entropy = (-(p1 * torch.log(p1) + p0 * torch.log(p0))).mean()
    return loss, entropy


def _lmh_softmax_reference(f, a, log_b, g):
    """§4c: CE(log_softmax(f) + g log b, a) + per-example softmax entropy of g log b."""
    f, log_b = f.double(), log_b.double()
    g = g.double().reshape(-1, 1)
    mixed = torch.log(torch.exp(f) / torch.exp(f).sum(1, keepdim=True)) + g * log_b
    logp = mixed - torch.log(torch.exp(mixed).sum(1, keepdim=True))
    ce = -logp[torch.arange(len(a)), a].mean()
    q = torch.exp(g * log_b) / torch.exp(g * log_b).sum(1, keepdim=True)
    entropy = (-(q * torch.log(q)).sum(1)).mean()
    return ce, entropy


def _bce_sum(z, t):
    """A * mean BCE with logits, written out: mean_batch sum_answers."""
    z, t = z.double(), t.double()
    p = torch.sigmoid(z)
    return (-(t * torch.log(p) + (1 - t) * torch.log(1 - p))).sum(1).mean()


# ---------------------------------------------------------------------------------------
# the prior
# ---------------------------------------------------------------------------------------
def test_question_type_prior_equals_hand_computation():
    # type 0: three questions, one of them without any annotated answer (still counted)
    qtype = torch.tensor([0, 0, 0, 1, 1, 2])
    scores = torch.tensor(
        [
            [1.0, 0.3, 0.0],
            [0.0, 0.6, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.9, 0.0, 1.0],
            [0.3, 0.3, 0.3],
        ]
    )
    prior = question_type_prior(qtype, scores, num_types=4, num_answers=3)
    expected = torch.tensor(
        [
            [1.0 / 3, 0.9 / 3, 0.0],
            [0.45, 0.0, 1.0],
            [0.3, 0.3, 0.3],
            [0.0, 0.0, 0.0],  # no example of type 3
        ]
    )
    assert torch.allclose(prior, expected, atol=1e-6)
    assert not torch.allclose(prior[:3].sum(1), torch.ones(3))  # not renormalised
    # class ids count as one-hot scores
    ids = question_type_prior(torch.tensor([1, 1, 1, 0]), torch.tensor([2, 2, 0, 1]), 2, 3)
    assert torch.allclose(ids, torch.tensor([[0.0, 1.0, 0.0], [1 / 3, 0.0, 2 / 3]]))


def test_question_type_prior_rejects_bad_input():
    with pytest.raises(causalvl.InputError, match="num_types = 2"):
        question_type_prior(torch.tensor([0, 2]), torch.tensor([0, 1]), 2, 3)
    with pytest.raises(causalvl.InputError, match="soft-score labels"):
        question_type_prior(torch.tensor([0, 1]), torch.rand(2, 4), 2, 3)
    with pytest.raises(causalvl.ConfigError, match="num_answers"):
        question_type_prior(torch.tensor([0]), torch.tensor([0]), 1, 0)


def test_prior_log_probs_normalises_and_floors():
    lp = prior_log_probs(torch.tensor([[0.2, 0.6, 0.0], [0.0, 0.0, 0.0]]), floor=1e-3)
    assert torch.allclose(lp[0], torch.log(torch.tensor([0.25, 0.75, 1e-3])))
    assert torch.allclose(lp[1], torch.full((3,), math.log(1 / 3)))


# ---------------------------------------------------------------------------------------
# LMH formulas
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("soft", [False, True])
def test_lmh_bce_loss_equals_transcription(soft):
    f = _rand(7, A, seed=1) * 3
    b = torch.rand(7, A, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = F.softplus(_rand(7, seed=3))
    labels = torch.rand(7, A, dtype=torch.float64) if soft else torch.randint(0, A, (7,))
    y = labels if soft else F.one_hot(labels, A).double()
    smooth = torch.sigmoid(torch.tensor(-1.0, dtype=torch.float64)) + 0.05
    nll, ent = lmh_bce_loss(f, labels, b, g, smoothing=smooth)
    ref_nll, ref_ent = _lmh_bce_reference(f, y, b, g, smooth)
    assert torch.allclose(nll.double(), ref_nll, atol=1e-5)
    assert torch.allclose(ent.double(), ref_ent, atol=1e-6)


def test_lmh_with_gate_one_equals_bias_product():
    f = _rand(6, A, seed=4) * 2
    b = torch.rand(6, A, generator=torch.Generator().manual_seed(5))
    labels = torch.randint(0, A, (6,), generator=torch.Generator().manual_seed(6))
    s = torch.sigmoid(torch.tensor([-1.0]))
    nll, _ = lmh_bce_loss(f, labels, b, torch.ones(6), smoothing=s)
    assert torch.allclose(nll, bias_product_loss(f, labels, b, smoothing=s), atol=1e-6)
    # a gate that is not 1 gives a different loss (the test can fail)
    other, _ = lmh_bce_loss(f, labels, b, torch.full((6,), 2.0), smoothing=s)
    assert not torch.allclose(other, nll, atol=1e-3)

    # through intervene: BiasProductConfig == LMHConfig(learned_mixin=False) == bias_product_loss
    batch = _tiny_batch()
    for cfg in (causalvl.BiasProductConfig(), causalvl.LMHConfig(learned_mixin=False)):
        vl = _wrapped(cfg)
        out = vl(batch)
        obj = vl.objective(out, batch)
        prior = _prior()[batch["question_type"]]
        expected = bias_product_loss(
            out.factual_logits, batch["labels"], prior, smoothing=torch.sigmoid(torch.tensor(-1.0))
        )
        assert set(obj.parts) == {"lmh_nll", "entropy"}
        assert float(obj.parts["entropy"]) == 0.0
        assert torch.allclose(obj.loss, expected, atol=1e-6)
        assert "task" not in obj.parts


@pytest.mark.parametrize("soft", [False, True])
def test_lmh_intervention_loss_equals_transcription(soft):
    batch = _tiny_batch(soft=soft)
    vl = _wrapped(causalvl.LMHConfig())
    impl = vl.interventions["0_lmh"]
    with torch.no_grad():
        impl.smoothing.fill_(-0.4)
    out = vl(batch)
    parts = vl.objective(out, batch).parts
    g = out.features["lmh_gate"]
    expected_g = F.softplus(impl.gate(out.features["fused"])).squeeze(-1)
    assert torch.allclose(g, expected_g)
    y = batch["labels"] if soft else F.one_hot(batch["labels"], A)
    nll, ent = _lmh_bce_reference(
        out.factual_logits.detach(),
        y.double(),
        _prior()[batch["question_type"]],
        g.detach(),
        torch.sigmoid(torch.tensor(-0.4, dtype=torch.float64)),
    )
    assert torch.allclose(parts["lmh_nll"].double(), nll, atol=1e-5)
    assert torch.allclose(parts["entropy"].double(), 0.36 * ent, atol=1e-6)


def test_lmh_softmax_loss_equals_transcription():
    f = _rand(8, A, seed=7) * 2
    prior = torch.rand(8, A, generator=torch.Generator().manual_seed(8))
    prior[:, 0] = 0.0  # an answer never seen: the floor keeps log b finite
    log_b = prior_log_probs(prior, floor=1e-3)
    g = F.softplus(_rand(8, seed=9))
    a = torch.randint(0, A, (8,), generator=torch.Generator().manual_seed(10))
    nll, ent = lmh_softmax_loss(f, a, log_b, g)
    ref_nll, ref_ent = _lmh_softmax_reference(f, a, log_b, g)
    assert torch.isfinite(nll)
    assert torch.allclose(nll.double(), ref_nll, atol=1e-5)
    assert torch.allclose(ent.double(), ref_ent, atol=1e-5)

    # through intervene, with the default floor and entropy weight 0.03
    batch = _tiny_batch()
    vl = _wrapped(causalvl.LMHConfig(form="softmax"))
    out = vl(batch)
    parts = vl.objective(out, batch).parts
    log_b = prior_log_probs(_prior()[batch["question_type"]], floor=1e-4)
    ref_nll, ref_ent = _lmh_softmax_reference(
        out.factual_logits.detach(), batch["labels"], log_b, out.features["lmh_gate"].detach()
    )
    assert torch.allclose(parts["lmh_nll"].double(), ref_nll, atol=1e-5)
    assert torch.allclose(parts["entropy"].double(), 0.03 * ref_ent, atol=1e-6)
    assert vl.interventions["0_lmh"].smoothing is None


# ---------------------------------------------------------------------------------------
# GGE formulas
# ---------------------------------------------------------------------------------------
def test_gge_pseudo_labels_match_both_formulas():
    y = torch.tensor([[1.0, 0.0, 0.6, 0.3]])
    r = torch.tensor([[0.5, 2.0, -1.0, 0.2]])
    published = gge_pseudo_label(y, r, "published")
    expected = torch.tensor(
        [[2 / (1 + math.exp(1.0)), 0.0, 1.2 / (1 + math.exp(-1.2)), 0.6 / (1 + math.exp(0.12))]]
    )
    assert torch.allclose(published, expected, atol=1e-6)
    corrected = gge_pseudo_label(y, r, "corrected")
    sig = 1 / (1 + torch.exp(-r))
    assert torch.allclose(corrected, (y - sig).clamp(0, 1))
    assert float(corrected[0, 1]) == 0.0 and float(corrected[0, 0]) == pytest.approx(
        1 - 1 / (1 + math.exp(-0.5))
    )
    with pytest.raises(causalvl.ConfigError, match="published"):
        gge_pseudo_label(y, r, "other")  # type: ignore[arg-type]


def test_greedy_gradient_loss_is_answer_summed_bce():
    f = _rand(4, A, seed=11)
    y = torch.rand(4, A, generator=torch.Generator().manual_seed(12))
    r = torch.rand(4, A, generator=torch.Generator().manual_seed(13))
    for form in ("published", "corrected"):
        expected = _bce_sum(f, gge_pseudo_label(y, r, form))
        assert torch.allclose(greedy_gradient_loss(f, y, r, form).double(), expected, atol=1e-5)


GGE_CASES = [
    ("both", "iterative"),
    ("both", "together"),
    ("question", "iterative"),
    ("distribution", "iterative"),
]


@pytest.mark.parametrize("bias, variant", GGE_CASES)
@pytest.mark.parametrize("form", ["published", "corrected"])
def test_gge_losses_equal_direct_computation(bias, variant, form):
    batch = _tiny_batch(soft=True, seed=3)
    vl = _wrapped(
        causalvl.GGEConfig(bias=bias, variant=variant, pseudo_label=form, hidden_sizes=(8,))
    )
    out = vl(batch)
    parts = vl.objective(out, batch).parts
    f = out.factual_logits.detach()
    y = batch["labels"]
    b = _prior()[batch["question_type"]]

    def pl(r):
        r = r.double()
        if form == "published":
            return 2 * y * torch.sigmoid(-2 * y * r)
        return (y - torch.sigmoid(r)).clamp(0, 1)

    if bias == "distribution":
        assert set(parts) == {"gge_base"}
        assert torch.allclose(parts["gge_base"].double(), _bce_sum(f, pl(b)), atol=1e-5)
        return
    impl = vl.interventions["0_gge"]
    q_out = out.branch_logits["question"].detach()
    z_q = out.features["gge_question_hidden"].detach()
    assert torch.allclose(q_out, impl.c_2(z_q))
    if bias == "question":
        expected_q, expected = _bce_sum(q_out, y), _bce_sum(f, pl(q_out))
    else:
        expected_q = _bce_sum(q_out, pl(b))
        source = z_q if variant == "iterative" else q_out
        expected = _bce_sum(f, pl(torch.sigmoid(source) + b))
    assert set(parts) == {"gge_question", "gge_base"}
    assert torch.allclose(parts["gge_question"].double(), expected_q, atol=1e-5)
    assert torch.allclose(parts["gge_base"].double(), expected, atol=1e-5)


# ---------------------------------------------------------------------------------------
# gradient flow
# ---------------------------------------------------------------------------------------
def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in module.parameters() if p.grad is not None]


def _norm(module: nn.Module) -> float:
    return float(sum(g.abs().sum() for g in _grads(module)) or 0.0)


def test_gge_question_branch_reads_a_stop_gradient_feature():
    batch = _tiny_batch(soft=True)
    vl = _wrapped(causalvl.GGEConfig(hidden_sizes=(8,)))
    net, impl = vl.base_model, vl.interventions["0_gge"]
    out = vl(batch)
    impl.loss(out, batch)["gge_question"].backward()
    assert _norm(impl.c_1) > 0 and _norm(impl.c_2) > 0
    # the question encoder is upstream of the branch only: its gradient is exactly zero
    enc = [p.grad for p in net.question_encoder.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in enc)
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in net.parameters())


@pytest.mark.parametrize("detach", [False, True])
def test_gge_base_loss_reaches_c1_unless_detached(detach):
    batch = _tiny_batch(soft=True)
    vl = _wrapped(causalvl.GGEConfig(hidden_sizes=(8,), detach_pseudo_label=detach))
    impl = vl.interventions["0_gge"]
    impl.loss(vl(batch), batch)["gge_base"].backward()
    assert _norm(vl.base_model.classifier) > 0
    assert (_norm(impl.c_1) == 0) == detach  # published: the pseudo label is not detached
    assert _norm(impl.c_2) == 0  # GGE-iter's base loss reads c_1's output, not c_2's


def test_lmh_gate_trains_the_hidden_vector():
    batch = _tiny_batch()
    vl = _wrapped(causalvl.LMHConfig())
    impl = vl.interventions["0_lmh"]
    out = vl(batch)
    # the entropy term depends on the batch only through g(x) = softplus(w.h + beta)
    impl.loss(out, batch)["entropy"].backward()
    assert _norm(impl.gate) > 0
    assert _norm(vl.base_model.fusion) > 0  # h is not detached
    assert _norm(vl.base_model.question_encoder) > 0
    assert _norm(vl.base_model.classifier) == 0  # f does not enter the entropy


# ---------------------------------------------------------------------------------------
# model families
# ---------------------------------------------------------------------------------------
class _GenericNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Linear(12, 16)
        self.txt = nn.Embedding(30, 16)
        self.fuse = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Linear(16, A)

    def forward(self, image, tokens):
        return self.head(self.fuse(self.img(image) * self.txt(tokens).mean(1)))


def _generic():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = _GenericNet()
    adapter = causalvl.GenericAdapter(
        vision_keys=["image"],
        language_keys=["tokens"],
        roles={"vision_features": "img", "language_features": "txt", "fused": "fuse"},
    )
    g = torch.Generator().manual_seed(0)
    inputs = {"image": torch.randn(3, 12, generator=g), "tokens": torch.randint(0, 30, (3, 4))}
    return net, adapter, inputs


def _family(name, hf_models):
    if name == "tiny_vqa":
        net = _tiny_vqa()
        g = torch.Generator().manual_seed(0)
        inputs = {"pixel_values": torch.rand(3, 3, 8, 8, generator=g)}
        inputs["input_ids"] = torch.randint(1, 20, (3, 5), generator=g)
        return net, "auto", inputs
    if name == "generic":
        return _generic()
    return hf_models[name], "auto", inputs_for(name)  # shared: only gradients are written


def _base_logits(vl, net, inputs):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return vl.adapter.logits(net(**inputs), inputs)


def _wrapped_logits(vl, inputs):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return vl(**inputs)


FAMILY_CONFIGS = [
    causalvl.LMHConfig(),
    causalvl.LMHConfig(form="softmax"),
    causalvl.GGEConfig(hidden_sizes=(16,)),
    causalvl.GGEConfig(hidden_sizes=(16,), variant="together", pseudo_label="corrected"),
]


@pytest.mark.parametrize("family", ["tiny_vqa", "generic", "vilt", "lxmert"])
def test_runs_on_every_family_and_eval_logits_are_the_base_logits(family, hf_models):
    net, adapter, inputs = _family(family, hf_models)
    was_training = net.training
    try:
        _check_family(net, adapter, inputs)
    finally:
        net.zero_grad(set_to_none=True)
        net.train(was_training)


def _check_family(net, adapter, inputs):
    net.eval()
    batch = {**inputs, "labels": torch.tensor([0, 3, 4]), "question_type": torch.tensor([2, 0, 1])}
    for cfg in FAMILY_CONFIGS:
        vl = causalvl.intervene(net, cfg, adapter=adapter)
        set_bias_prior(vl, _prior())
        vl.eval()
        with torch.no_grad():
            out = _wrapped_logits(vl, inputs)
            bare = _base_logits(vl, net, inputs)
        assert torch.equal(out.logits, out.factual_logits)
        assert torch.allclose(out.logits, bare, atol=1e-6)
        # the training objective runs and trains both the model and the intervention
        vl.train()
        obj = vl.objective(vl(batch), batch)
        assert torch.isfinite(obj.loss) and "task" not in obj.parts
        obj.loss.backward()
        assert _norm(vl.interventions) > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        net.zero_grad(set_to_none=True)


class _VisionOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, A)

    def forward(self, x):
        return self.head(x)


def test_distribution_only_gge_needs_no_roles():
    net = _VisionOnly()
    adapter = causalvl.GenericAdapter(vision_keys=["x"], language_keys=[])
    vl = causalvl.intervene(net, causalvl.GGEConfig(bias="distribution"), adapter=adapter)
    set_bias_prior(vl, _prior())
    batch = {"x": torch.randn(4, 6), "labels": torch.tensor([0, 1, 2, 3])}
    batch["question_type"] = torch.tensor([0, 1, 2, 0])
    assert vl.interventions["0_gge"].capture_roles == ()
    assert torch.isfinite(vl.objective(vl(batch), batch).loss)


# ---------------------------------------------------------------------------------------
# two-step GGE-iter, errors, save / load
# ---------------------------------------------------------------------------------------
def test_gge_iterative_stages_drive_two_optimizer_steps():
    batch = _tiny_batch(soft=True)
    vl = _wrapped(causalvl.GGEConfig(hidden_sizes=(8,)))
    impl = vl.interventions["0_gge"]
    assert impl.stages() == (("gge_question",), ("gge_base",))
    assert causalvl.GGEConfig(variant="together").bias == "both"
    together = causalvl.intervene(
        _tiny_vqa(), causalvl.GGEConfig(variant="together", hidden_sizes=(8,))
    )
    assert together.interventions["0_gge"].stages() == (("gge_question", "gge_base"),)

    # the summed objective is the sum of both stages (the single-step fallback)
    out = vl(batch)
    obj = vl.objective(out, batch)
    assert torch.allclose(obj.loss, obj.parts["gge_question"] + obj.parts["gge_base"])

    # the staged protocol: step on stage 1 (only the branch moves), forward, step on stage 2
    base_before = [p.detach().clone() for p in vl.base_model.parameters()]
    c1_before = [p.detach().clone() for p in impl.c_1.parameters()]
    opt = torch.optim.SGD(vl.parameters(), lr=0.1)
    opt.zero_grad()
    assert vl.stages() == impl.stages()
    for i, names in enumerate(impl.stages()):
        out = vl(batch)
        loss = vl.objective(out, batch, stage=i).loss
        assert torch.allclose(loss, impl.loss(out, batch)[names[0]])
        loss.backward()
        opt.step()
        moved = any(not torch.equal(a, p) for a, p in zip(base_before, vl.base_model.parameters()))
        assert moved == (i == 1)
        if i == 0:
            assert any(not torch.equal(a, p) for a, p in zip(c1_before, impl.c_1.parameters()))


def test_clear_errors():
    batch = _tiny_batch()
    vl = causalvl.intervene(_tiny_vqa(), causalvl.LMHConfig())
    with pytest.raises(causalvl.InterventionStateError, match="question_type_prior"):
        vl.objective(vl(batch), batch)
    set_bias_prior(vl, _prior())
    no_type = {k: v for k, v in batch.items() if k != "question_type"}
    with pytest.raises(causalvl.InputError, match="'question_type'"):
        vl.objective(vl(no_type), no_type)
    bad = {**batch, "question_type": torch.tensor([0, 1, 2, 3, 0, 0])}
    with pytest.raises(causalvl.InputError, match="3 question types"):
        vl.objective(vl(bad), bad)
    with pytest.raises(causalvl.InputError, match="built for 3"):
        set_bias_prior(vl, torch.rand(4, A))
    with pytest.raises(causalvl.InputError, match="answer columns"):
        set_bias_prior(vl, torch.rand(T, A + 1))
    with pytest.raises(causalvl.InputError, match=r"\[0, 1\]"):
        set_bias_prior(vl, torch.full((T, A), 1.5))
    with pytest.raises(causalvl.ConfigError, match="form"):
        causalvl.LMHConfig(form="sigmoid")
    with pytest.raises(causalvl.ConfigError, match="same non-zero length"):
        causalvl.LMHConfig(prior=[[0.1, 0.2], [0.3]])
    with pytest.raises(causalvl.ConfigError, match="num_question_types"):
        causalvl.GGEConfig(prior=[[0.1, 0.2]], num_question_types=2)
    with pytest.raises(causalvl.ConfigError, match="variant"):
        causalvl.GGEConfig(variant="alternate")
    with pytest.raises(causalvl.ConfigError, match="learned_mixin"):
        causalvl.BiasProductConfig(learned_mixin=True)
    plain = causalvl.intervene(_tiny_vqa(), causalvl.IdentityConfig())
    with pytest.raises(causalvl.ConfigError, match="question-type prior"):
        set_bias_prior(plain, _prior())


def test_configs_round_trip_through_json():
    for cfg in (
        causalvl.LMHConfig(form="softmax", entropy_weight=0.1, prior=[[0.5, 0.25]]),
        causalvl.BiasProductConfig(num_question_types=4),
        causalvl.GGEConfig(bias="question", hidden_sizes=[32, 16], pseudo_label="corrected"),
    ):
        back = InterventionConfig.from_json(cfg.to_json())
        assert back == cfg and type(back) is type(cfg)


def test_prior_survives_save_and_load(tmp_path):
    batch = _tiny_batch()
    net = _tiny_vqa()
    vl = causalvl.intervene(net, [causalvl.LMHConfig(), causalvl.GGEConfig(hidden_sizes=(8,))])
    set_bias_prior(vl, _prior(seed=4))
    before = vl.objective(vl(batch), batch).loss
    vl.save_pretrained(tmp_path)
    loaded = causalvl.load(tmp_path, net)
    for impl in loaded.interventions.values():
        assert torch.equal(impl.prior, _prior(seed=4))
        assert impl.config.num_question_types == T
    assert torch.allclose(loaded.objective(loaded(batch), batch).loss, before)


def test_heads_are_seeded_without_touching_the_global_rng():
    net = _tiny_vqa()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    cfg = [causalvl.LMHConfig(), causalvl.GGEConfig(hidden_sizes=(8,))]
    a = causalvl.intervene(net, cfg).interventions.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    torch.manual_seed(7)
    b = causalvl.intervene(net, cfg).interventions.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = causalvl.intervene(net, causalvl.LMHConfig(init_seed=1)).interventions
    assert not torch.equal(other["0_lmh"].gate.weight, a["0_lmh.gate.weight"])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_heads_and_prior_follow_the_models_dtype_and_device(device):
    net = _tiny_vqa().to(device=device, dtype=torch.float64)
    vl = causalvl.intervene(net, [causalvl.LMHConfig(), causalvl.GGEConfig(hidden_sizes=(8,))])
    set_bias_prior(vl, _prior())
    for name, t in vl.interventions.state_dict().items():
        assert t.device.type == device, name
        assert not t.is_floating_point() or t.dtype == torch.float64, name
    batch = {k: v.to(device) for k, v in _tiny_batch().items()}
    batch["pixel_values"] = batch["pixel_values"].double()
    obj = vl.objective(vl(batch), batch)
    assert torch.isfinite(obj.loss) and obj.loss.device.type == device
    obj.loss.backward()


def test_small_prior_in_the_config():
    cfg = causalvl.LMHConfig(prior=[[0.9, 0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5, 0.0]])
    vl = causalvl.intervene(_tiny_vqa(), cfg)
    assert bool(vl.interventions["0_lmh"].prior_is_set)
    batch = {**_tiny_batch(), "question_type": torch.tensor([0, 1, 0, 1, 0, 1])}
    assert torch.isfinite(vl.objective(vl(batch), batch).loss)
    with pytest.raises(causalvl.ConfigError, match="columns"):
        causalvl.intervene(_tiny_vqa(num_answers=3), cfg)


# ---------------------------------------------------------------------------------------
# end to end: a shifted answer prior
# ---------------------------------------------------------------------------------------
def _train_eval(cfg, data, prior, *, epochs, seed=0):
    train, evals, vocab, num_answers = data
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = causalvl.models.TinyVQA(vocab_size=vocab, num_answers=num_answers, image_size=16)
    vl = causalvl.intervene(net, cfg)
    if not isinstance(cfg, causalvl.IdentityConfig):
        set_bias_prior(vl, prior)
    opt = torch.optim.Adam(vl.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    n = train["labels"].shape[0]
    vl.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            b = {k: v[perm[i : i + 64]] for k, v in train.items()}
            loss = vl.objective(vl(b), b).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    vl.eval()
    with torch.no_grad():
        return [float((vl(d).logits.argmax(1) == d["labels"]).float().mean()) for d in evals]


@pytest.mark.slow
def test_the_bias_product_learns_less_of_the_prior_than_plain():
    """On the uniform held-out split (no blind rule beats chance there), the product of experts
    with the training prior gives the training-favoured answer less often than plain, and
    keeps answering within the question type."""
    from causalvl import efficacy

    settings = efficacy.EfficacySettings(
        num_train=1200, num_val=60, num_test=600, num_refit=60, epochs=8
    )
    data = efficacy.build_data(settings, seed=0)
    methods = efficacy.default_methods(settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is faster and leaves a core free
    try:
        scores = {}
        for name in ("plain", "BiasProduct"):
            vl = efficacy.train_method(methods[name], settings, data, seed=0)
            test = data.tests["ood"]
            scores[name] = efficacy.score(efficacy.predict(vl, test), test, data, 20)
    finally:
        torch.set_num_threads(threads)
    plain = scores["plain"]["training_favoured_share"]
    assert plain > 0.5  # the shortcut is attractive: plain follows the prior
    product = scores["BiasProduct"]
    assert product["training_favoured_share"] < plain - 0.1, (plain, product)
    assert product["valid_answer_share"] > 0.95, product
