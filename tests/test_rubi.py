"""RUBi (RUBiConfig): mask fusion, losses, gradient flow and inference on several models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import inputs_for
from test_counterfactual import _classifier_cases, tiny_vqa, vqa_batch

import causalvl
from causalvl import RUBiConfig
from causalvl.errors import ConfigError

SMALL = dict(hidden_sizes=(16,))


def test_config():
    cfg = RUBiConfig(hidden_sizes=[8], question_loss_weight=0.5)
    assert cfg.hidden_sizes == (8,)
    assert causalvl.InterventionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="question_loss_weight"):
        RUBiConfig(question_loss_weight=-1.0)
    with pytest.raises(ConfigError, match="num_answers"):
        RUBiConfig(num_answers=0)


@pytest.mark.parametrize("name", ["vilt", "lxmert", "tiny_vqa", "custom"])
def test_rubi_outputs_on_classifiers(hf_models, name):
    model, adapter, batch = _classifier_cases(hf_models)[name]
    vl = causalvl.intervene(model, RUBiConfig(**SMALL), adapter=adapter).eval()
    with torch.no_grad():
        out = vl(batch)
        bare = vl.adapter.logits(model(**vl.adapter.model_inputs(batch)), batch)
    # inference is the base model
    torch.testing.assert_close(out.logits, bare)
    assert torch.equal(out.logits, out.factual_logits)
    br = out.branch_logits
    assert set(br) == {"question", "question_head", "fused"}
    torch.testing.assert_close(br["fused"], bare * torch.sigmoid(br["question"]))
    impl = next(iter(vl.interventions.values()))
    torch.testing.assert_close(br["question_head"], impl.question.head(br["question"]))


def test_rubi_contrastive(hf_models):
    clip = hf_models["clip"]
    vl = causalvl.intervene(clip, RUBiConfig(**SMALL)).eval()
    batch = inputs_for("clip", batch=3)
    with torch.no_grad():
        out = vl(batch)
    zq = out.branch_logits["question"]
    assert zq.shape == (3, 3)
    torch.testing.assert_close(zq, zq[:1].expand(3, 3))
    torch.testing.assert_close(out.branch_logits["fused"], out.logits * torch.sigmoid(zq))
    parts = vl.objective(out, {**batch, "labels": torch.tensor([0, 1, 2])}).parts
    assert set(parts) == {"rubi_ce", "question_ce"}


def test_rubi_loss_values_and_gradient_flow():
    net, batch = tiny_vqa(), vqa_batch()
    vl = causalvl.intervene(net, RUBiConfig(question_loss_weight=0.5, **SMALL))
    impl = next(iter(vl.interventions.values()))
    out = vl(batch)
    parts = impl.loss(out, batch)
    y = batch["labels"]
    torch.testing.assert_close(parts["rubi_ce"], F.cross_entropy(out.branch_logits["fused"], y))
    torch.testing.assert_close(
        parts["question_ce"], 0.5 * F.cross_entropy(out.branch_logits["question_head"], y)
    )
    obj = vl.objective(out, batch)
    assert set(obj.parts) == {"rubi_ce", "question_ce"}  # replaces the task loss
    torch.testing.assert_close(obj.loss, parts["rubi_ce"] + parts["question_ce"])

    def grads(part, params):
        return torch.autograd.grad(parts[part], params, retain_graph=True, allow_unused=True)

    def zero(g):
        return g is None or bool((g == 0).all())

    base = list(net.parameters())
    # Z_k (the base model) gets gradient only through the fused CE
    assert all(zero(g) for g in grads("question_ce", base))
    assert any(not zero(g) for g in grads("rubi_ce", base))
    zk = out.factual_logits
    (gk,) = torch.autograd.grad(parts["question_ce"], zk, retain_graph=True, allow_unused=True)
    assert zero(gk)
    # the question MLP from both terms; the A->A classifier from the question loss only
    mlp_w, head_w = impl.question.mlp.net[0].weight, impl.question.head.weight
    g_rubi = grads("rubi_ce", [mlp_w, head_w])
    g_q = grads("question_ce", [mlp_w, head_w])
    assert not zero(g_rubi[0]) and not zero(g_q[0])
    assert zero(g_rubi[1]) and not zero(g_q[1])


def test_rubi_soft_scores_and_training_step():
    net, batch = tiny_vqa(), vqa_batch(n=16)
    vl = causalvl.intervene(net, RUBiConfig(**SMALL))
    soft = F.one_hot(batch["labels"], 4).float()
    out = vl(batch)
    a = vl.objective(out, batch).parts
    b = vl.objective(out, {**batch, "labels": soft}).parts
    torch.testing.assert_close(a["rubi_ce"], b["rubi_ce"])
    opt = torch.optim.Adam(vl.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        loss = vl.objective(vl(batch), batch).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
