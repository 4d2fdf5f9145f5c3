"""CF-VQA (CFVQAConfig) and model-agnostic prior subtraction (PriorSubtractionConfig)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import inputs_for
from torch import nn

import causalvl
from causalvl import CFVQAConfig, PriorSubtractionConfig
from causalvl.errors import ConfigError, InputError, InterventionStateError
from causalvl.interventions.fusion import effects, fuse

SMALL = dict(hidden_sizes=(16,))


def tiny_vqa(seed: int = 0, answers: int = 4) -> causalvl.models.TinyVQA:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return causalvl.models.TinyVQA(vocab_size=20, num_answers=answers, image_size=8, hidden=16)


def vqa_batch(n: int = 6, seed: int = 0, answers: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(n, 3, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, (n, 5), generator=g),
        "labels": torch.randint(0, answers, (n,), generator=g),
    }


class CustomNet(nn.Module):
    """A user's own model: image vector + token ids -> answers, described by GenericAdapter."""

    def __init__(self) -> None:
        super().__init__()
        self.img = nn.Linear(6, 8)
        self.txt = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self.head(torch.tanh(self.img(image)) * self.txt(tokens).mean(1))}


def custom_model() -> tuple[nn.Module, causalvl.GenericAdapter, dict[str, torch.Tensor]]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = CustomNet()
    adapter = causalvl.GenericAdapter(
        vision_keys=["image"],
        language_keys=["tokens"],
        logits=lambda out: out["scores"],
        roles={"vision_features": "img", "language_features": "txt"},
    )
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(4, 6, generator=g), "tokens": torch.randint(0, 10, (4, 3))}
    return net, adapter, batch


def _classifier_cases(hf_models):
    net, adapter, batch = custom_model()
    return {
        "vilt": (hf_models["vilt"], "auto", inputs_for("vilt")),
        "lxmert": (hf_models["lxmert"], "auto", inputs_for("lxmert")),
        "tiny_vqa": (tiny_vqa(), "auto", vqa_batch()),
        "custom": (net, adapter, batch),
    }


# -- config ------------------------------------------------------------------------------


def test_config_validation_and_round_trip():
    cfg = CFVQAConfig(fusion="sum", graph="simple", hidden_sizes=[8, 4], c_init=0.5)
    assert cfg.hidden_sizes == (8, 4)
    assert causalvl.InterventionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="graph='simple'"):
        CFVQAConfig(fusion="rubi")
    with pytest.raises(ConfigError, match="'max'"):
        CFVQAConfig(fusion="max")
    with pytest.raises(ConfigError, match="kl_weight = -1"):
        CFVQAConfig(kl_weight=-1)
    with pytest.raises(ConfigError, match="hidden"):
        CFVQAConfig(hidden_sizes=(0,))
    with pytest.raises(ConfigError, match="c_init"):
        CFVQAConfig(c_init=float("nan"))
    ps = PriorSubtractionConfig(alpha=0.5, space="log_softmax", cache=True, mode="mask")
    assert causalvl.InterventionConfig.from_dict(ps.to_dict()) == ps
    for mode in ("shuffle", "noise"):
        with pytest.raises(ConfigError, match=f"mode={mode!r}.*'zeros'"):
            PriorSubtractionConfig(cache=True, mode=mode)
    with pytest.raises(ConfigError, match="alpha"):
        PriorSubtractionConfig(alpha=-0.1)
    with pytest.raises(ConfigError, match="mode='mask'.*'zeros'"):
        causalvl.intervene(tiny_vqa(), PriorSubtractionConfig(mode="mask"))


# -- CF-VQA on every model kind ------------------------------------------------------------


@pytest.mark.parametrize("name", ["vilt", "lxmert", "tiny_vqa", "custom"])
@pytest.mark.parametrize("fusion", ["harmonic", "sum"])
def test_cfvqa_eval_logits_are_tie(hf_models, name, fusion):
    model, adapter, batch = _classifier_cases(hf_models)[name]
    cfg = CFVQAConfig(fusion=fusion, c_init=0.3, **SMALL)
    vl = causalvl.intervene(model, cfg, adapter=adapter).eval()
    with torch.no_grad():
        out = vl(batch)
        bare = vl.adapter.logits(model(**vl.adapter.model_inputs(batch)), batch)
    br = out.branch_logits
    assert set(br) == {"question", "question_head", "vision", "vision_head", "fused"}
    torch.testing.assert_close(out.factual_logits, bare)
    impl = next(iter(vl.interventions.values()))
    want = effects(out.factual_logits, br["question"], br["vision"], c=impl.c, mode=fusion)
    torch.testing.assert_close(out.logits, want["tie"])
    for key in ("te", "nde", "tie", "nie"):
        torch.testing.assert_close(out.effects[key], want[key])
    torch.testing.assert_close(br["fused"], fuse(bare, br["question"], br["vision"], mode=fusion))
    torch.testing.assert_close(br["question_head"], impl.question.head(br["question"]))
    assert out.logits.shape == bare.shape
    # the bare model is untouched: no hooks left, same logits
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("fusion", ["rubi", "harmonic", "sum"])
def test_cfvqa_simple_graph_and_inference_modes(fusion):
    net, batch = tiny_vqa(), vqa_batch()
    vl = causalvl.intervene(net, CFVQAConfig(fusion=fusion, graph="simple", **SMALL))
    out = vl(batch)
    assert set(out.branch_logits) == {"question", "question_head", "fused"}
    impl = next(iter(vl.interventions.values()))
    want = effects(out.factual_logits, out.branch_logits["question"], c=impl.c, mode=fusion)
    torch.testing.assert_close(out.logits, want["tie"])
    if fusion == "rubi":  # closed form of methods.md
        zq = out.branch_logits["question"]
        torch.testing.assert_close(out.logits, (out.factual_logits - impl.c) * torch.sigmoid(zq))
    assert set(vl.objective(out, batch).parts) == {"fused_ce", "question_ce", "kl"}
    for inference, key in (("te", "te"), ("factual", None)):
        cfg = CFVQAConfig(fusion=fusion, graph="simple", inference=inference, **SMALL)
        o = causalvl.intervene(net, cfg)(batch)
        torch.testing.assert_close(o.logits, o.effects[key] if key else o.factual_logits)


def test_cfvqa_contrastive_question_prior_per_candidate(hf_models):
    clip = hf_models["clip"]
    with pytest.raises(ConfigError, match="graph='simple'"):
        causalvl.intervene(clip, CFVQAConfig(**SMALL))
    vl = causalvl.intervene(clip, CFVQAConfig(graph="simple", **SMALL)).eval()
    batch = inputs_for("clip", batch=3)
    # 3 images, 5 candidate texts: the question branch scores each text, the same for every image
    texts = inputs_for("clip", batch=5, seed=1)
    batch = {
        **{k: texts[k] for k in ("input_ids", "attention_mask")},
        "pixel_values": batch["pixel_values"],
    }
    with torch.no_grad():
        out = vl(batch)
    zq = out.branch_logits["question"]
    assert out.logits.shape == zq.shape == (3, 5)
    torch.testing.assert_close(zq, zq[:1].expand(3, 5))
    impl = next(iter(vl.interventions.values()))
    with torch.no_grad():
        text = clip.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        text_feat = clip.text_projection(text.pooler_output)
        torch.testing.assert_close(zq[0], impl.question.mlp(text_feat)[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        out.logits, effects(out.factual_logits, zq, c=impl.c, mode="harmonic")["tie"]
    )
    assert torch.equal(out.branch_logits["question_head"], zq)
    # the same on the reference contrastive model, trained one step without labels (diagonal)
    net = causalvl.models.TinyContrastive(vocab_size=20, hidden=16, embed_dim=8)
    vl2 = causalvl.intervene(net, CFVQAConfig(graph="simple", **SMALL))
    b = vqa_batch(n=4)
    b.pop("labels")
    loss = vl2.objective(vl2(b), b)
    assert torch.isfinite(loss.loss) and set(loss.parts) == {"fused_ce", "question_ce", "kl"}


def test_cfvqa_gradient_flow():
    net, batch = tiny_vqa(), vqa_batch()
    vl = causalvl.intervene(net, CFVQAConfig(**SMALL))
    impl = next(iter(vl.interventions.values()))
    out = vl(batch)
    parts = impl.loss(out, batch)
    base = [p for p in net.parameters()]
    own = dict(impl.named_parameters())

    def grads(part, params):
        return torch.autograd.grad(parts[part], params, retain_graph=True, allow_unused=True)

    def zero(g):
        return g is None or bool((g == 0).all())

    # the branch heads send exactly zero gradient into the encoders
    for part in ("question_ce", "vision_ce"):
        assert all(zero(g) for g in grads(part, base)), part
    # only c learns from the KL term
    kl = dict(zip(own, grads("kl", list(own.values()))))
    assert not zero(kl["c"])
    assert all(zero(g) for name, g in kl.items() if name != "c")
    assert all(zero(g) for g in grads("kl", base))
    # the base model learns from the fused CE only, and c does not (TE has no c)
    fused = dict(zip(own, grads("fused_ce", list(own.values()))))
    assert zero(fused["c"]) and not zero(fused["question.mlp.net.0.weight"])
    assert zero(fused["question.head.weight"])  # the output head learns from its own CE only
    assert any(not zero(g) for g in grads("fused_ce", base))
    total = vl.objective(out, batch)
    torch.testing.assert_close(total.loss, sum(p.detach() for p in parts.values()))


def test_cfvqa_kl_value_is_cross_entropy_form():
    net, batch = tiny_vqa(), vqa_batch()
    cfg = CFVQAConfig(fusion="sum", graph="simple", kl_weight=2.0, c_init=0.7, **SMALL)
    vl = causalvl.intervene(net, cfg)
    out = vl(batch)
    parts = vl.objective(out, batch).parts
    zq = out.branch_logits["question"]
    c = torch.full_like(zq, 0.7)
    p_te = F.softmax(out.branch_logits["fused"], -1)
    want = -(p_te * F.log_softmax(fuse(c, zq, mode="sum"), -1)).sum(-1).mean()
    torch.testing.assert_close(parts["kl"], 2.0 * want.detach())
    torch.testing.assert_close(
        parts["fused_ce"], F.cross_entropy(out.branch_logits["fused"], batch["labels"]).detach()
    )


def test_cfvqa_soft_scores_and_errors():
    net, batch = tiny_vqa(), vqa_batch()
    vl = causalvl.intervene(net, CFVQAConfig(**SMALL))
    soft = F.one_hot(batch["labels"], 4).float() * 0.9
    out = vl(batch)
    hard = vl.objective(out, batch).parts
    soft_parts = vl.objective(out, {**batch, "labels": soft}).parts
    for key in ("fused_ce", "question_ce", "vision_ce", "kl"):
        torch.testing.assert_close(hard[key], soft_parts[key])
    with pytest.raises(InputError, match="num_answers=4"):
        causalvl.intervene(net, CFVQAConfig(num_answers=7, **SMALL))(batch)
    with pytest.raises(InputError, match="width"):
        causalvl.intervene(net, CFVQAConfig(question_feature_dim=5, **SMALL))(batch)


def test_cfvqa_trains_c_and_saves(tmp_path):
    net, batch = tiny_vqa(), vqa_batch(n=16)
    vl = causalvl.intervene(net, CFVQAConfig(c_init=0.0, **SMALL))
    opt = torch.optim.Adam(vl.parameters(), lr=1e-2)
    for _ in range(5):
        loss = vl.objective(vl(batch), batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    impl = next(iter(vl.interventions.values()))
    assert float(impl.c.detach()) != 0.0
    vl.save_pretrained(tmp_path)
    again = causalvl.load(tmp_path, net).eval()
    vl.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(batch).logits, vl(batch).logits)


def test_heads_follow_the_model_dtype():
    net, batch = tiny_vqa().double(), vqa_batch()
    batch["pixel_values"] = batch["pixel_values"].double()
    for cfg in (CFVQAConfig(**SMALL), causalvl.RUBiConfig(**SMALL)):
        vl = causalvl.intervene(net, cfg)
        assert {p.dtype for p in vl.intervention_parameters()} == {torch.float64}
        out = vl(batch)
        assert out.logits.dtype == torch.float64
        assert torch.isfinite(vl.objective(out, batch).loss)


# -- prior subtraction ---------------------------------------------------------------------


def _expected_subtraction(vl, batch, alpha, space="logits", mode="zeros"):
    inputs = vl.adapter.model_inputs(batch)
    base = vl.unwrap()
    f = vl.adapter.logits(base(**inputs), inputs)
    cf_inputs = vl.adapter.counterfactual_inputs(inputs, remove="vision", mode=mode)
    g = vl.adapter.logits(base(**cf_inputs), cf_inputs)
    if space == "log_softmax":
        f, g = F.log_softmax(f, -1), F.log_softmax(g, -1)
    return (1 + alpha) * f - alpha * g, f, g


@pytest.mark.parametrize("name", ["clip", "vilt", "lxmert", "tiny_vqa", "custom"])
@pytest.mark.parametrize("space", ["logits", "log_softmax"])
def test_prior_subtraction_formula(hf_models, name, space):
    if name == "clip":
        model, adapter, batch = hf_models["clip"], "auto", inputs_for("clip")
    else:
        model, adapter, batch = _classifier_cases(hf_models)[name]
    cfg = PriorSubtractionConfig(alpha=0.7, space=space)
    vl = causalvl.intervene(model, cfg, adapter=adapter).eval()
    with torch.no_grad():
        out = vl(batch)
        want, f, g = _expected_subtraction(vl, batch, 0.7, space)
    torch.testing.assert_close(out.logits, want)
    torch.testing.assert_close(out.effects["tie"], f - g)
    torch.testing.assert_close(out.effects["prior"], g)
    assert set(out.effects) == {"tie", "prior"}  # same keys, same quantities as CF-VQA
    assert out.counterfactual_logits is not None
    assert not torch.equal(out.logits, out.factual_logits)


def test_prior_subtraction_train_on():
    net, batch = tiny_vqa(), vqa_batch()
    vl = causalvl.intervene(net, PriorSubtractionConfig(alpha=1.0)).train()
    out = vl(batch)
    assert torch.equal(out.logits, out.factual_logits) and out.counterfactual_logits is None
    parts = vl.objective(out, batch).parts
    torch.testing.assert_close(
        parts["task"], F.cross_entropy(out.factual_logits, batch["labels"]).detach()
    )
    vl2 = causalvl.intervene(net, PriorSubtractionConfig(alpha=1.0, train_on="debiased")).train()
    out2 = vl2(batch)
    torch.testing.assert_close(out2.logits, 2 * out2.factual_logits - out2.counterfactual_logits)
    out2.logits.sum().backward()
    assert net.classifier.weight.grad is not None


@pytest.mark.parametrize("mode", ["zeros", "mean"])
def test_prior_subtraction_cache_hits_equal_uncached(mode):
    net = tiny_vqa()
    batch = vqa_batch(n=8)
    batch["input_ids"][4:] = batch["input_ids"][:4]  # every question asked twice
    plain = causalvl.intervene(net, PriorSubtractionConfig(mode=mode)).eval()
    cached = causalvl.intervene(net, PriorSubtractionConfig(mode=mode, cache=True)).eval()
    if mode == "mean":
        with pytest.raises(InterventionStateError, match="fit_vision_mean"):
            cached(batch)
        for vl in (plain, cached):
            vl.adapter.fit_vision_mean([batch])
    impl = next(iter(cached.interventions.values()))
    calls = []
    hook = net.register_forward_hook(
        lambda m, a, kw, out: calls.append(out.shape[0]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            want = plain(batch).logits
            calls.clear()
            first = cached(batch)
            assert impl.cache_misses == 4 and impl.cache_hits == 4
            second = cached(batch)
            assert impl.cache_misses == 4 and impl.cache_hits == 12
    finally:
        hook.remove()
    # factual (8) + counterfactual of the 4 distinct questions; then the factual pass only
    assert calls == [8, 4, 8]
    torch.testing.assert_close(first.logits, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second.logits, want, rtol=1e-5, atol=1e-6)
    cached.train()  # weights may change: the cache is emptied
    assert len(impl._cache) == 0 and impl.cache_hits == 0


def test_prior_subtraction_cache_contrastive(hf_models):
    clip = hf_models["clip"]
    batch = inputs_for("clip", batch=3)
    plain = causalvl.intervene(clip, PriorSubtractionConfig(space="log_softmax")).eval()
    cached = causalvl.intervene(
        clip, PriorSubtractionConfig(space="log_softmax", cache=True)
    ).eval()
    with torch.no_grad():
        want = plain(batch)
        got = cached(batch)
        again = cached(batch)
    impl = next(iter(cached.interventions.values()))
    assert impl.cache_misses == 3 and impl.cache_hits == 3
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again.logits, want.logits, rtol=1e-4, atol=1e-5)


# -- end to end: a shifted answer prior ----------------------------------------------------


def _load_example():
    path = Path(__file__).resolve().parents[1] / "examples" / "cfvqa_digits.py"
    spec = importlib.util.spec_from_file_location("cfvqa_digits_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_warms_the_branch_up_instead_of_a_faster_rate():
    from causalvl import efficacy

    methods = _load_example().methods(efficacy.EfficacySettings.demo(), 3)
    assert set(methods) == {"plain", "CF-VQA", "oracle"}
    (cfg,) = methods["CF-VQA"].configs
    assert isinstance(cfg, CFVQAConfig)
    assert (cfg.graph, cfg.fusion, cfg.branch_warmup_epochs) == ("simple", "sum", 3)
    assert "intervention_lr" not in methods["CF-VQA"].train_options
    assert methods["oracle"].train_split == "balanced"
    assert methods["plain"].train_split == "train"


def test_example_cfvqa_trains_only_the_branch_during_its_warmup():
    """Through causalvl.efficacy and the Trainer: one epoch, all of it warm-up, leaves the base
    model at its initial weights while the question branch learns."""
    from causalvl import efficacy

    settings = efficacy.EfficacySettings.smoke()
    data = efficacy.build_data(settings, 0)
    method = _load_example().methods(settings, 1)["CF-VQA"]
    vl = efficacy.train_method(method, settings, data, 0)
    fresh = efficacy.build_model(settings, data, 0)
    for (name, got), want in zip(vl.base_model.named_parameters(), fresh.parameters()):
        torch.testing.assert_close(got, want, msg=name)
    with torch.random.fork_rng(devices=[]):  # the heads as train_method initialises them
        torch.manual_seed(0)
        untrained = causalvl.intervene(fresh, list(method.configs)).interventions
    before = dict(untrained.named_parameters())
    assert before, "CF-VQA has branch parameters"
    moved = [n for n, p in vl.interventions.named_parameters() if not torch.equal(p, before[n])]
    assert moved
