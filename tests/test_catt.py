"""CATT (causal attention, front-door): the attention formula against hand-computed values,
the wrapped blocks' outputs against direct computation, identity-like sanity (shapes,
gradient flow, save / load round trip), LXMERT / VisualBERT / any BERT through GenericAdapter."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import inputs_for, make_lxmert, make_visual_bert
from torch import nn

import causalvl
from causalvl.hooks import count_hooks
from causalvl.interventions.catt import (
    CrossSampleAttention,
    cross_sample_attention,
    find_attention_blocks,
)

BERT_ROLE = {"attention_layers": r"encoder\.layer\.\d+\.attention"}


def _eye(n: int) -> nn.Linear:
    lin = nn.Linear(n, n)
    with torch.no_grad():
        nn.init.eye_(lin.weight)
        lin.bias.zero_()
    return lin


def _bert(layers=2, seed=0):
    from transformers import BertConfig, BertModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cfg = BertConfig(
            vocab_size=30,
            hidden_size=8,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=16,
            attn_implementation="eager",
        )
        return BertModel(cfg).eval()


def _bert_adapter():
    return causalvl.GenericAdapter(
        vision_keys=[],
        language_keys=["input_ids", "attention_mask"],
        required_keys=["input_ids"],
        logits=lambda o: o.pooler_output,
        roles=BERT_ROLE,
    )


def _bert_inputs(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 4:] = 0  # padding in the first example
    return {"input_ids": torch.randint(1, 30, (batch, 6), generator=g), "attention_mask": mask}


# ---------------------------------------------------------------------------------------
# the formula, by hand
# ---------------------------------------------------------------------------------------
def test_cross_sample_attention_one_head_by_hand():
    x = torch.tensor([[[1.0, 0.0]]])
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    eye = _eye(2)
    # scores = (1/sqrt 2, 0); probs = (e^a, 1) / (e^a + 1) with a = 1/sqrt 2
    a = math.exp(1 / math.sqrt(2))
    expected = torch.tensor([[[a / (a + 1), 1 / (a + 1)]]])
    out = cross_sample_attention(x, m, eye, eye, eye, num_heads=1)
    torch.testing.assert_close(out, expected)


def test_cross_sample_attention_two_heads_and_a_mask_by_hand():
    # H = 2, two heads of width 1: head h attends with scalar q_h, keys k_h of the 3 rows
    x = torch.tensor([[[2.0, -1.0]]])
    m = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]]])
    eye = _eye(2)
    # head 0: scores 2*(1, 0, 3) = (2, 0, 6); head 1: -1*(1, 2, 0) = (-1, -2, 0)
    s0 = torch.tensor([2.0, 0.0, 6.0]).softmax(0)
    s1 = torch.tensor([-1.0, -2.0, 0.0]).softmax(0)
    expected = torch.stack([(s0 * m[0, :, 0]).sum(), (s1 * m[0, :, 1]).sum()])
    out = cross_sample_attention(x, m, eye, eye, eye, num_heads=2)
    torch.testing.assert_close(out[0, 0], expected)
    # masking the third row (additive -inf-like and bool forms agree)
    t0 = torch.tensor([2.0, 0.0]).softmax(0)
    t1 = torch.tensor([-1.0, -2.0]).softmax(0)
    expected_masked = torch.stack([(t0 * m[0, :2, 0]).sum(), (t1 * m[0, :2, 1]).sum()])
    add = torch.tensor([0.0, 0.0, -1e9]).reshape(1, 1, 1, 3)
    keep = torch.tensor([True, True, False]).reshape(1, 1, 1, 3)
    for mask in (add, keep):
        out = cross_sample_attention(x, m, eye, eye, eye, num_heads=2, mask=mask)
        torch.testing.assert_close(out[0, 0], expected_masked)


def test_cs_block_is_layernorm_of_projected_context_plus_input():
    torch.manual_seed(0)
    block = CrossSampleAttention(4, 2).eval()
    x, m = torch.randn(2, 3, 4), torch.randn(5, 4)
    ctx = cross_sample_attention(x, m, block.query, block.key, block.value, 2)
    expected = nn.functional.layer_norm(block.dense(ctx) + x, (4,), eps=1e-12)
    torch.testing.assert_close(block(x, m), expected)


# ---------------------------------------------------------------------------------------
# wrapped models
# ---------------------------------------------------------------------------------------
def test_identity_fusion_leaves_the_model_unchanged_bitwise():
    bert = _bert()
    inputs = _bert_inputs()
    with torch.no_grad():
        base = bert(**inputs).pooler_output
        vl = causalvl.intervene(
            bert, causalvl.CATTConfig(dictionary_size=4), adapter=_bert_adapter()
        )
        vl.eval()
        out = vl(inputs)
    assert torch.equal(out.logits, base)
    cs = out.features["catt_cross_sample"]
    assert cs.shape == (3, 6, 8)
    assert count_hooks(bert) == 0  # hooks live for one forward only
    impl = vl.interventions["0_catt"]
    assert impl.block_paths == ["encoder.layer.1.attention"] and impl.memory.shape == (4, 8)
    # official init: rand / 100
    assert float(impl.memory.detach().min()) >= 0 and float(impl.memory.detach().max()) < 0.01


def _capture_blocks(model, paths):
    """Record (input hidden states, attention mask, in-sample output) of each block, in call
    order: hooks registered before the wrapper's run first, so they see the block's own
    output, before the wrapper replaces it."""
    seen = []
    handles = []
    for p in paths:
        mod = model.get_submodule(p)

        def hook(mod, args, kwargs, out, p=p):
            mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
            seen.append((p, args[0].detach(), mask, out[0].detach()))

        handles.append(mod.register_forward_hook(hook, with_kwargs=True))
    return seen, handles


def test_two_catt_layers_chain_the_cross_sample_stream():
    """Layer 0 attends to M unmasked; layer 1 attends to layer 0's CS stream with the
    sample's mask; each block's output is fuse([IS ; CS])."""
    bert = _bert()
    cfg = causalvl.CATTConfig(
        dictionary_size=5, layers=(0, 1), fusion_init="random", cs_init="random"
    )
    vl = causalvl.intervene(bert, cfg, adapter=_bert_adapter()).eval()
    impl = vl.interventions["0_catt"]
    paths = impl.block_paths
    assert paths == ["encoder.layer.0.attention", "encoder.layer.1.attention"]
    seen, handles = _capture_blocks(bert, paths)
    fused = []  # what the layer's feed-forward part receives: the block's final output
    for i in (0, 1):
        handles.append(
            bert.encoder.layer[i].intermediate.register_forward_pre_hook(
                lambda mod, args: fused.append(args[0].detach())
            )
        )
    with torch.no_grad():
        vl(_bert_inputs())
    for h in handles:
        h.remove()
    (_, x0, _, is0), (_, x1, mask1, is1) = seen
    with torch.no_grad():
        cs0 = impl.cs_blocks[0](x0, impl.memory, None)
        cs1 = impl.cs_blocks[1](x1, cs0, mask1)
        torch.testing.assert_close(fused[0], impl.fuse[0](torch.cat([is0, cs0], -1)))
        torch.testing.assert_close(fused[1], impl.fuse[1](torch.cat([is1, cs1], -1)))
        # the padding mask matters for the second layer's cross-sample attention
        assert mask1 is not None
        assert not torch.allclose(cs1[0], impl.cs_blocks[1](x1, cs0, None)[0])


def test_cs_blocks_start_as_copies_or_share_the_wrapped_weights():
    bert = _bert()
    block = bert.get_submodule("encoder.layer.1.attention")
    vl = causalvl.intervene(bert, causalvl.CATTConfig(dictionary_size=3), adapter=_bert_adapter())
    cs = vl.interventions["0_catt"].cs_blocks[0]
    assert torch.equal(cs.query.weight, block.self.query.weight)
    assert torch.equal(cs.LayerNorm.weight, block.output.LayerNorm.weight)
    assert cs.query.weight.data_ptr() != block.self.query.weight.data_ptr()  # a copy
    shared = causalvl.intervene(
        bert, causalvl.CATTConfig(dictionary_size=3, share_weights=True), adapter=_bert_adapter()
    ).eval()
    impl = shared.interventions["0_catt"]
    assert len(impl.cs_blocks) == 0
    names = sorted(n for n, _ in impl.named_parameters())
    assert names == ["fuse.0.bias", "fuse.0.weight", "memory"]
    # 'ft_same' computes the CS stream with the block's own projections
    seen, handles = _capture_blocks(bert, impl.block_paths)
    with torch.no_grad():
        out = shared(_bert_inputs())
    for h in handles:
        h.remove()
    x = seen[0][1]
    with torch.no_grad():
        ctx = cross_sample_attention(
            x, impl.memory, block.self.query, block.self.key, block.self.value, 2
        )
        expected = block.output(ctx, x)
    torch.testing.assert_close(out.features["catt_cross_sample"], expected)


def test_gradients_reach_dictionary_cs_blocks_fusion_and_model():
    bert = _bert()
    bert.train()
    cfg = causalvl.CATTConfig(dictionary_size=4, fusion_init="random")
    vl = causalvl.intervene(bert, cfg, adapter=_bert_adapter())
    vl(_bert_inputs()).logits.square().sum().backward()
    impl = vl.interventions["0_catt"]
    for name, p in impl.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert float(bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum()) > 0


def test_identity_fusion_still_learns_the_cross_sample_weight():
    """At [I | 0] only the fusion's CS half has a gradient (M's is exactly zero); one step
    later the dictionary learns too."""
    bert = _bert()
    vl = causalvl.intervene(bert, causalvl.CATTConfig(dictionary_size=4), adapter=_bert_adapter())
    impl = vl.interventions["0_catt"]
    opt = torch.optim.SGD(impl.parameters(), lr=0.1)
    inputs = _bert_inputs()
    vl(inputs).logits.square().sum().backward()
    assert float(impl.memory.grad.abs().sum()) == 0
    assert float(impl.fuse[0].weight.grad[:, 8:].abs().sum()) > 0
    opt.step()
    opt.zero_grad()
    vl(inputs).logits.square().sum().backward()
    assert float(impl.memory.grad.abs().sum()) > 0


def test_save_load_round_trip_is_bitwise(tmp_path):
    bert = _bert()
    cfg = causalvl.CATTConfig(dictionary_size=4, layers=(0, -1), fusion_init="random", init_seed=3)
    vl = causalvl.intervene(bert, cfg, adapter=_bert_adapter()).eval()
    with torch.no_grad():  # move the weights away from their init
        for p in vl.interventions.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    vl.save_pretrained(tmp_path)
    back = causalvl.load(tmp_path, bert, adapter=_bert_adapter()).eval()
    before, after = vl.interventions.state_dict(), back.interventions.state_dict()
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    inputs = _bert_inputs()
    with torch.no_grad():
        assert torch.equal(vl(inputs).logits, back(inputs).logits)
    assert back.interventions["0_catt"].config == vl.interventions["0_catt"].config


def test_dictionary_initialises_m_from_confounder_prototypes():
    bert = _bert()
    protos = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    d = causalvl.ConfounderDictionary(protos)
    vl = causalvl.intervene(bert, causalvl.CATTConfig(dictionary=d), adapter=_bert_adapter())
    impl = vl.interventions["0_catt"]
    assert torch.equal(impl.memory.detach(), protos) and impl.config.dictionary_size == 6
    with pytest.raises(causalvl.ConfigError, match="CATT's M"):
        impl.set_dictionary(causalvl.ConfounderDictionary(torch.randn(6, 5)))
    with pytest.raises(causalvl.ConfigError, match="dictionary_size"):
        causalvl.CATTConfig(dictionary=d, dictionary_size=5)
    assert "dictionary" not in causalvl.CATTConfig(dictionary=d).to_dict()


@pytest.mark.parametrize("role", ["attention_layers", "vision_attention_layers"])
def test_lxmert_language_and_relation_layers(role):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = make_lxmert().eval()
    inputs = inputs_for("lxmert")
    with torch.no_grad():
        base = net(**inputs).question_answering_score
        vl = causalvl.intervene(net, causalvl.CATTConfig(target=role, dictionary_size=7)).eval()
        out = vl(inputs)
    assert torch.equal(out.logits, base)  # identity fusion at init
    length = 5 if role == "vision_attention_layers" else inputs["input_ids"].shape[1]
    assert out.features["catt_cross_sample"].shape == (3, length, 32)
    vl2 = causalvl.intervene(net, causalvl.CATTConfig(target=role, fusion_init="random"))
    assert not torch.allclose(vl2.eval()(inputs).logits, base)


def test_visual_bert_and_stacked_streams():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = make_visual_bert().eval()
    inputs = inputs_for("visual_bert")
    cfg = causalvl.CATTConfig(layers=(0, 1), dictionary_size=3, fusion_init="random")
    vl = causalvl.intervene(net, cfg)
    out = vl(inputs)
    assert out.logits.shape == (3, 5)
    assert vl.interventions["0_catt"].block_paths == [
        "visual_bert.encoder.layer.0.attention",
        "visual_bert.encoder.layer.1.attention",
    ]
    out.logits.sum().backward()
    assert vl.interventions["0_catt"].memory.grad is not None


def test_find_attention_blocks_and_bad_targets():
    bert = _bert(layers=3)
    found = find_attention_blocks(bert, r"encoder\.layer\.\d+\.attention")
    assert [p for p, _ in found] == [f"encoder.layer.{i}.attention" for i in range(3)]
    adapter = _bert_adapter()
    with pytest.raises(causalvl.ConfigError, match="matched only 3"):
        causalvl.intervene(bert, causalvl.CATTConfig(layers=(5,)), adapter=adapter)
    with pytest.raises(causalvl.ConfigError, match="same block twice"):
        causalvl.intervene(bert, causalvl.CATTConfig(layers=(2, -1)), adapter=adapter)
    with pytest.raises(causalvl.NoMatchingModuleError, match="attention_layers"):
        causalvl.intervene(bert, causalvl.CATTConfig(target="decoder.*"), adapter=adapter)
    with pytest.raises(causalvl.UnsupportedModelError, match="BERT-style"):
        causalvl.intervene(bert, causalvl.CATTConfig(target="pooler"), adapter=adapter)
    net = causalvl.models.TinyVQA(vocab_size=10, num_answers=3)
    with pytest.raises(causalvl.NoMatchingModuleError, match="attention_layers"):
        causalvl.intervene(net, causalvl.CATTConfig())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"layers": ()}, "layers"),
        ({"layers": (0, 0)}, "layers"),
        ({"layers": "1"}, "layers"),
        ({"dictionary_size": 0}, "dictionary_size"),
        ({"fusion_init": "zeros"}, "fusion_init"),
        ({"cs_init": "kmeans"}, "cs_init"),
        ({"share_weights": True, "cs_init": "random"}, "cs_init"),
        ({"target": ""}, "target"),
        ({"dictionary": torch.zeros(3, 2)}, "ConfounderDictionary"),
    ],
)
def test_bad_config_values_name_the_field(kwargs, field):
    with pytest.raises(causalvl.ConfigError, match=field):
        causalvl.CATTConfig(**kwargs)


def test_config_round_trips_json_and_is_registered():
    cfg = causalvl.CATTConfig(layers=(-2, -1), dictionary_size=800, share_weights=True)
    back = causalvl.InterventionConfig.from_json(cfg.to_json())
    assert isinstance(back, causalvl.CATTConfig) and back == cfg


def test_wrapping_does_not_change_the_users_model():
    bert = _bert()
    before = copy.deepcopy(bert.state_dict())
    vl = causalvl.intervene(
        bert, causalvl.CATTConfig(fusion_init="random"), adapter=_bert_adapter()
    )
    vl(_bert_inputs())
    after = bert.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert count_hooks(bert) == 0


def test_building_catt_leaves_the_global_rng_alone():
    bert = _bert()
    state = torch.random.get_rng_state()
    for init in ("copy", "random"):
        causalvl.intervene(
            bert, causalvl.CATTConfig(cs_init=init, fusion_init="random"), adapter=_bert_adapter()
        )
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_call_that_fails_half_way_leaves_no_stream_for_the_next():
    """The cross-sample stream between blocks lives in the call's HookContext, not on the
    intervention: a call that raises after the first block leaves nothing behind."""
    bert = _bert()
    cfg = causalvl.CATTConfig(
        dictionary_size=5, layers=(0, 1), fusion_init="random", cs_init="random"
    )
    vl = causalvl.intervene(bert, cfg, adapter=_bert_adapter()).eval()
    impl = vl.interventions["0_catt"]
    with torch.no_grad():
        expected = vl(_bert_inputs()).features["catt_cross_sample"]

    def fail(mod, args, out):
        raise RuntimeError("the second layer failed")

    handle = bert.encoder.layer[1].intermediate.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="second layer failed"), torch.no_grad():
            vl(_bert_inputs(seed=1))
    finally:
        handle.remove()
    assert getattr(impl, "_box", None) is None
    assert count_hooks(bert) == 0
    with torch.no_grad():
        torch.testing.assert_close(vl(_bert_inputs()).features["catt_cross_sample"], expected)
