"""Models and inputs off the beaten path: generative families under prior subtraction,
unusual forward signatures, sequence-first features, roles that never run, and mismatched
batches. Each case is reproduced on a tiny random-init model."""

from __future__ import annotations

import pytest
import torch

import causalvl
from causalvl.decoding.tiny import tiny_generative_model
from causalvl.errors import InputError


# -- prior subtraction on generative families ---------------------------------------------
@pytest.mark.parametrize(("family", "batch"), [("smolvlm", 2), ("idefics3", 1), ("idefics3", 2)])
def test_zero_image_counterfactual_is_not_dropped_as_padding(family, batch):
    model, inputs = tiny_generative_model(family, batch_size=batch)
    vl = causalvl.intervene(model, causalvl.PriorSubtractionConfig(mode="zeros")).eval()
    with torch.no_grad():
        out = vl(**inputs)
    assert out.logits.shape == out.factual_logits.shape
    assert torch.isfinite(out.logits).all()
    cf = vl.adapter.counterfactual_inputs(inputs, remove="vision", mode="zeros")
    px = cf["pixel_values"]
    assert float(px.abs().max()) <= 1e-6 and bool((px != 0).all())


def test_idefics3_padding_crops_stay_padding():
    model, inputs = tiny_generative_model("idefics3", batch_size=1)
    pixels = inputs["pixel_values"]
    padded = torch.cat([pixels, torch.zeros_like(pixels)], dim=1)  # a second, padding crop
    adapter = causalvl.intervene(model, causalvl.IdentityConfig()).adapter
    cf = adapter.counterfactual_inputs({**inputs, "pixel_values": padded}, mode="zeros")
    assert bool((cf["pixel_values"][:, 0] != 0).all())
    assert bool((cf["pixel_values"][:, 1] == 0).all())


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_shuffle_swaps_whole_images(family):
    model, inputs = tiny_generative_model(family, batch_size=3)
    vl = causalvl.intervene(model, causalvl.PriorSubtractionConfig(mode="shuffle")).eval()
    with torch.no_grad():
        out = vl(**inputs)
    assert out.logits.shape == out.factual_logits.shape
    cf = vl.adapter.counterfactual_inputs(
        inputs, mode="shuffle", generator=torch.Generator().manual_seed(0)
    )
    blocks = inputs["pixel_values"].reshape(3, 16, -1)
    new = cf["pixel_values"].reshape(3, 16, -1)
    assert cf["pixel_values"].shape == inputs["pixel_values"].shape
    for i in range(3):  # each example now holds another example's whole image
        match = [j for j in range(3) if torch.equal(new[i], blocks[j])]
        assert match and match[0] != i
    assert vl.adapter.batch_size(inputs) == 3


def test_qwen_shuffle_refuses_images_of_different_grids():
    model, inputs = tiny_generative_model("qwen2_vl", batch_size=2)
    adapter = causalvl.intervene(model, causalvl.IdentityConfig()).adapter
    odd = dict(inputs)
    odd["image_grid_thw"] = torch.tensor([[1, 4, 4], [1, 2, 8]])
    with pytest.raises(InputError, match="same image grid"):
        adapter.counterfactual_inputs(odd, mode="shuffle")


# -- feature widths of LMH / GGE heads ----------------------------------------------------
class BiGRUNet(torch.nn.Module):
    """A question encoder whose output is twice its ``hidden_size`` wide (bidirectional)."""

    def __init__(self) -> None:
        super().__init__()
        self.img = torch.nn.Linear(4, 16)
        self.emb = torch.nn.Embedding(10, 8)
        self.gru = torch.nn.GRU(8, 8, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, image, tokens):
        seq, _ = self.gru(self.emb(tokens))
        return self.head(self.img(image) * seq.mean(1))


def _gru_adapter(**extra):
    return causalvl.GenericAdapter(
        vision_keys=["image"],
        language_keys=["tokens"],
        roles={"vision_features": "img", "language_features": "gru", "fused": "gru"},
        **extra,
    )


def _gru_batch(batch=4):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(batch, 4, generator=g),
        "tokens": torch.randint(0, 10, (batch, 5), generator=g),
        "labels": torch.tensor([0, 1, 2, 0][:batch]),
        "question_type": torch.zeros(batch, dtype=torch.long),
    }


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (causalvl.LMHConfig(hidden_role="fused"), "feature_dim"),
        (causalvl.GGEConfig(bias="both", hidden_sizes=(8,)), "feature_dim"),
    ],
)
def test_ensemble_heads_check_the_feature_width(config, field):
    vl = causalvl.intervene(BiGRUNet(), config, adapter=_gru_adapter())
    with pytest.raises(InputError, match=rf"width 16.*{field}=16"):
        vl(_gru_batch())
    fixed = type(config).from_dict({**config.to_dict(), field: 16})
    vl = causalvl.intervene(BiGRUNet(), fixed, adapter=_gru_adapter())
    assert vl(_gru_batch()).logits.shape == (4, 3)


# -- discriminative objectives on generative models ---------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        causalvl.CFVQAConfig(num_answers=256, hidden_sizes=(8,)),
        causalvl.RUBiConfig(hidden_sizes=(8,)),
        causalvl.LMHConfig(),
        causalvl.GGEConfig(hidden_sizes=(8,)),
    ],
)
def test_discriminative_objectives_refuse_generative_models(config):
    model, _ = tiny_generative_model("llava", batch_size=2)
    with pytest.raises(causalvl.ConfigError, match="CounterfactualDecodingConfig"):
        causalvl.intervene(model, config)


# -- batch sizes and ranks ----------------------------------------------------------------
def _tiny_vqa_batch(images=2, texts=2, ids_shape=None):
    g = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.rand(images, 3, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, ids_shape or (texts, 5), generator=g),
    }


@pytest.mark.parametrize(
    "config", [causalvl.IdentityConfig(), causalvl.PriorSubtractionConfig(alpha=1.0)]
)
def test_mismatched_batches_and_ranks_are_refused(config):
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
    vl = causalvl.intervene(net, config).eval()
    assert vl(**_tiny_vqa_batch()).logits.shape == (2, 4)
    with pytest.raises(InputError, match="disagree on the batch size"):
        vl(**_tiny_vqa_batch(images=1, texts=4))
    with pytest.raises(InputError, match=r"'input_ids' has shape \(2, 2, 5\).*2-D"):
        vl(**_tiny_vqa_batch(ids_shape=(2, 2, 5)))
    bad = _tiny_vqa_batch()
    bad["attention_mask"] = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(InputError, match="per-token"):
        vl(**bad)


def test_batch_checks_follow_the_model_kind(hf_models):
    from conftest import inputs_for

    clip = causalvl.intervene(hf_models["clip"], causalvl.IdentityConfig()).eval()
    batch = inputs_for("clip", 3)
    batch["pixel_values"] = batch["pixel_values"][:2]  # 2 images x 3 candidate texts is fine
    assert clip(**batch).logits.shape == (2, 3)
    model, inputs = tiny_generative_model("qwen2_vl", batch_size=2)  # patches are not rows
    vl = causalvl.intervene(model, causalvl.IdentityConfig())
    assert vl(**inputs).logits.shape[0] == 2


# -- forward signatures --------------------------------------------------------------------
class PositionalOnlyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.img = torch.nn.Linear(4, 8)
        self.txt = torch.nn.Embedding(10, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, image, tokens, /, scale=1.0):
        return self.head(self.img(image) * self.txt(tokens).mean(1)) * scale


class StarArgsNet(PositionalOnlyNet):
    def forward(self, *args):
        image, tokens = args
        return super().forward(image, tokens)


def _pos_batch():
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(2, 4, generator=g), "tokens": torch.randint(0, 10, (2, 5))}


def _pos_adapter():
    return causalvl.GenericAdapter(
        vision_keys=["image"],
        language_keys=["tokens"],
        roles={"vision_features": "img", "language_features": "txt", "fused": "head"},
    )


def test_positional_only_forward_gets_its_inputs_by_position():
    net = PositionalOnlyNet()
    batch = _pos_batch()
    vl = causalvl.intervene(net, causalvl.PriorSubtractionConfig(), adapter=_pos_adapter()).eval()
    out = vl(**batch)
    assert torch.equal(out.factual_logits, net(batch["image"], batch["tokens"]))
    fn = causalvl.intervene(
        lambda image, tokens, /: net(image, tokens),
        causalvl.IdentityConfig(),
        adapter=_pos_adapter(),
    )
    assert torch.equal(fn(**batch).logits, out.factual_logits)


def test_star_args_forward_is_refused_with_a_wrapping_recipe():
    with pytest.raises(causalvl.ConfigError, match=r"\*args.*lambda \*\*kw: model\(kw\['image'\]"):
        causalvl.intervene(StarArgsNet(), causalvl.IdentityConfig(), adapter=_pos_adapter())
    net = StarArgsNet()
    vl = causalvl.intervene(
        lambda **kw: net(kw["image"], kw["tokens"]),
        causalvl.IdentityConfig(),
        adapter=_pos_adapter(),
    )
    assert vl(**_pos_batch()).logits.shape == (2, 3)


# -- targets whose forward never runs -----------------------------------------------------
class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = torch.nn.Embedding(10, 8)
        self.layer = torch.nn.Linear(8, 8)

    def forward(self, ids):  # never called: the parent runs the parts one by one
        return self.layer(self.embeddings(ids))


class PartsNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.img = torch.nn.Linear(4, 8)
        self.text_model = Encoder()
        self.head = torch.nn.Linear(8, 3)

    def forward(self, image, tokens):
        text = self.text_model.layer(self.text_model.embeddings(tokens)).mean(1)
        return self.head(self.img(image) * text)


def _parts_adapter(language="text_model"):
    return causalvl.GenericAdapter(
        vision_keys=["image"],
        language_keys=["tokens"],
        roles={"vision_features": "img", "language_features": language, "fused": "head"},
    )


def test_a_role_whose_module_never_runs_is_reported():
    batch = {**_pos_batch(), "labels": torch.tensor([0, 1])}
    vl = causalvl.intervene(
        PartsNet(), causalvl.CFVQAConfig(hidden_sizes=(8,)), adapter=_parts_adapter()
    )
    with pytest.raises(causalvl.InterventionStateError, match=r"did not run.*text_model\.layer"):
        vl(batch)
    info = {t.role: t for t in causalvl.inspect_targets(PartsNet(), adapter=_parts_adapter())}
    assert info["language_features"].ran is None
    info = {
        t.role: t
        for t in causalvl.inspect_targets(PartsNet(), adapter=_parts_adapter(), inputs=batch)
    }
    assert (
        info["language_features"].ran is False and "did not run" in info["language_features"].error
    )
    assert info["vision_features"].ran is True and info["vision_features"].error is None
    fixed = causalvl.intervene(
        PartsNet(),
        causalvl.CFVQAConfig(hidden_sizes=(8,)),
        adapter=_parts_adapter("text_model.layer"),
    )
    assert fixed(batch).logits.shape == (2, 3)


def test_a_backdoor_target_that_never_runs_is_not_a_silent_no_op():
    d = causalvl.ConfounderDictionary(torch.randn(3, 8))
    cfg = causalvl.BackdoorConfig(target="text_model", dictionary=d, feature_dim=8)
    vl = causalvl.intervene(PartsNet(), cfg, adapter=_parts_adapter())
    with pytest.raises(causalvl.InterventionStateError, match="did not run"):
        vl(**_pos_batch())


# -- undeclared inputs of forward(**kwargs) models ----------------------------------------
class KwargsNet(PositionalOnlyNet):
    def forward(self, **batch):
        return super().forward(batch["image"], batch["tokens"], batch.get("scale", 1.0))


def test_undeclared_inputs_of_a_kwargs_forward_are_warned_about_once_or_passed():
    net = KwargsNet()
    batch = {**_pos_batch(), "scale": torch.tensor(3.0), "labels": torch.tensor([0, 1])}
    vl = causalvl.intervene(net, causalvl.IdentityConfig(), adapter=_pos_adapter())
    with pytest.warns(UserWarning, match=r"\['scale'\].*extra_keys") as record:
        vl(batch)
    assert not any("labels" in str(w.message) for w in record)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vl(batch)  # once per key
    adapter = causalvl.GenericAdapter(
        vision_keys=["image"], language_keys=["tokens"], extra_keys=["scale"]
    )
    vl = causalvl.intervene(net, causalvl.IdentityConfig(), adapter=adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = vl(batch)
    assert torch.equal(out.logits, net(**{k: batch[k] for k in ("image", "tokens", "scale")}))
    with pytest.raises(causalvl.ConfigError, match="list each key once"):
        causalvl.GenericAdapter(vision_keys=["image"], language_keys=["t"], extra_keys=["image"])


# -- edit hooks under generate ---------------------------------------------------------------
def test_backdoor_edits_run_under_generate():
    from causalvl.hooks import count_hooks

    model, inputs = tiny_generative_model("llava", batch_size=1)
    with torch.no_grad():
        model(**inputs)  # transformers installs its own hooks on the first call
    own_hooks = count_hooks(model)
    d = causalvl.ConfounderDictionary(
        torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    )
    bd = causalvl.BackdoorConfig(target="vision_features", dictionary=d, feature_dim=32)
    cd = causalvl.CounterfactualDecodingConfig()
    opts = dict(max_new_tokens=2, do_sample=False, return_dict_in_generate=True, output_scores=True)

    def first_logits(configs):
        out = causalvl.intervene(model, configs).eval().generate(**inputs, **opts)
        return out.factual_logits[0] if hasattr(out, "factual_logits") else out.scores[0]

    assert not torch.allclose(first_logits([bd, cd]), first_logits([cd]))
    assert not torch.allclose(first_logits([bd]), first_logits([causalvl.IdentityConfig()]))
    vl = causalvl.intervene(model, [bd, cd]).eval()
    with vl.disable_interventions():
        plain = vl.generate(**inputs, **opts).scores[0]
    assert torch.allclose(plain, first_logits([causalvl.IdentityConfig()]))
    assert count_hooks(model) == own_hooks


# -- what save_pretrained keeps of the adapter ---------------------------------------------
def test_vision_mean_and_generic_adapter_survive_save_and_load(tmp_path):
    net = PositionalOnlyNet()
    batch = _pos_batch()
    vl = causalvl.intervene(
        net, causalvl.PriorSubtractionConfig(mode="mean"), adapter=_pos_adapter()
    ).eval()
    vl.adapter.fit_vision_mean([{"image": torch.full((4, 4), 2.0)}])
    before = vl(**batch).logits
    vl.save_pretrained(tmp_path)
    loaded = causalvl.load(tmp_path, PositionalOnlyNet().eval())  # no adapter passed
    loaded.base_model.load_state_dict(net.state_dict())
    assert isinstance(loaded.adapter, causalvl.GenericAdapter)
    assert loaded.adapter.roles == vl.adapter.roles
    assert torch.equal(loaded.adapter.vision_mean["image"], vl.adapter.vision_mean["image"])
    assert torch.allclose(loaded(**batch).logits, before)
    # saved again without a mean: the stale mean file goes away
    plain = causalvl.intervene(net, causalvl.IdentityConfig(), adapter=_pos_adapter())
    plain.save_pretrained(tmp_path)
    assert causalvl.load(tmp_path, net).adapter.vision_mean == {}


def test_generic_adapter_with_a_logits_callable_says_what_to_pass(tmp_path):
    adapter = causalvl.GenericAdapter(
        vision_keys=["image"], language_keys=["tokens"], roles={"fused": "head"}, logits=lambda o: o
    )
    causalvl.intervene(
        PositionalOnlyNet(), causalvl.IdentityConfig(), adapter=adapter
    ).save_pretrained(tmp_path)
    with pytest.raises(causalvl.UnsupportedModelError, match=r"vision_keys=\['image'\].*logits="):
        causalvl.load(tmp_path, PositionalOnlyNet())
    assert causalvl.load(tmp_path, PositionalOnlyNet(), adapter=adapter).adapter.roles == {
        "fused": "head"
    }


# -- sequence-first features ---------------------------------------------------------------
class SeqFirstNet(torch.nn.Module):
    """A question encoder that works sequence-first, (length, batch, dim)."""

    def __init__(self, flagged: bool = True) -> None:
        super().__init__()
        self.img = torch.nn.Linear(4, 8)
        self.emb = torch.nn.Embedding(10, 8)
        self.gru = torch.nn.GRU(8, 8) if flagged else None
        self.enc = SeqFirstLinear()
        self.head = torch.nn.Linear(8, 3)

    def forward(self, image, tokens):
        x = self.emb(tokens).transpose(0, 1)  # (L, B, 8)
        seq = self.gru(x)[0] if self.gru is not None else self.enc(x)
        return self.head(self.img(image) * seq.mean(0))


class SeqFirstLinear(torch.nn.Linear):
    def __init__(self) -> None:
        super().__init__(8, 8)


def _seq_adapter(role_module, **extra):
    return causalvl.GenericAdapter(
        vision_keys=["image"],
        language_keys=["tokens"],
        roles={"vision_features": "img", "language_features": role_module},
        **extra,
    )


def _seq_batch(batch, length):
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(batch, 4, generator=g),
        "tokens": torch.randint(0, 10, (batch, length), generator=g),
        "labels": torch.arange(batch) % 3,
    }


def _question_features_are_per_example(vl, batch):
    full = vl(batch).features["language_features"]
    for i in range(full.shape[0]):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        assert torch.allclose(full[i], vl(one).features["language_features"][0], atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [
        causalvl.RUBiConfig(hidden_sizes=(8,), num_answers=3),
        causalvl.CFVQAConfig(hidden_sizes=(8,), num_answers=3),
        causalvl.GGEConfig(hidden_sizes=(8,), num_answers=3),
    ],
)
def test_sequence_first_features_are_not_mixed_across_examples(config):
    torch.manual_seed(0)
    vl = causalvl.intervene(SeqFirstNet(), config, adapter=_seq_adapter("gru"))
    _question_features_are_per_example(vl, _seq_batch(4, 4))  # length == batch


def test_sequence_first_layout_is_found_from_shapes_or_refused_when_ambiguous():
    torch.manual_seed(0)
    cfg = causalvl.RUBiConfig(hidden_sizes=(8,), num_answers=3)
    vl = causalvl.intervene(SeqFirstNet(flagged=False), cfg, adapter=_seq_adapter("enc"))
    with pytest.raises(InputError, match="feature_layouts"):
        vl(_seq_batch(4, 4))
    _question_features_are_per_example(vl, _seq_batch(3, 5))  # found: dim 1 is the batch
    _question_features_are_per_example(vl, _seq_batch(4, 4))  # then reused when ambiguous
    declared = _seq_adapter("enc", feature_layouts={"language_features": "sequence_first"})
    vl = causalvl.intervene(SeqFirstNet(flagged=False), cfg, adapter=declared)
    _question_features_are_per_example(vl, _seq_batch(4, 4))


# -- backdoor targets inside gradient-checkpointed layers ----------------------------------
def _checkpointed_vilt(reentrant):
    from conftest import make_vilt

    torch.manual_seed(0)
    model = make_vilt()
    kwargs = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # the newer name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def _backdoor(target):
    d = causalvl.ConfounderDictionary(
        torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    )
    return causalvl.BackdoorConfig(
        target=target, dictionary=d, feature_dim=32, merge="residual", project=True
    )


@pytest.mark.parametrize("reentrant", [True, False])
def test_backdoor_inside_a_checkpointed_layer_is_refused(reentrant):
    from conftest import inputs_for

    inner = "vilt.encoder.layer.0.output.dense"
    with pytest.raises(causalvl.ConfigError, match="gradient checkpointing"):
        causalvl.intervene(_checkpointed_vilt(reentrant).train(), _backdoor(inner))
    vl = causalvl.intervene(_checkpointed_vilt(reentrant).eval(), _backdoor(inner))
    batch = {**inputs_for("vilt", 2), "labels": torch.tensor([0, 1])}
    vl(batch)  # evaluation recomputes nothing: fine
    vl.train()
    with pytest.raises(causalvl.ConfigError, match=r"runs inside 'vilt\.encoder\.layer\.0'"):
        vl(batch)
    # the checkpointed layer itself, or a module outside it, trains
    for target in ("vilt.encoder.layer.0", "vilt.pooler"):
        vl = causalvl.intervene(_checkpointed_vilt(reentrant).train(), _backdoor(target))
        vl.objective(vl(batch), batch).loss.backward()
        grads = [p.grad for p in vl.intervention_parameters()]
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layout_comes_from_its_layers(batch_first):
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.img = torch.nn.Linear(4, 8)
            self.emb = torch.nn.Embedding(10, 8)
            layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
            self.enc = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, image, tokens):
            x = self.emb(tokens)
            x = self.enc(x if batch_first else x.transpose(0, 1))
            pooled = x.mean(1) if batch_first else x.mean(0)
            return self.head(self.img(image) * pooled)

    torch.manual_seed(0)
    vl = causalvl.intervene(
        Net().eval(),
        causalvl.RUBiConfig(hidden_sizes=(8,), num_answers=3),
        adapter=_seq_adapter("enc"),
    ).eval()
    _question_features_are_per_example(vl, _seq_batch(4, 4))
