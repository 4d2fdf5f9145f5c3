"""Contrastive decoding on tiny random-init generative VLMs (every supported family)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from transformers import LogitsProcessor

import causalvl
from causalvl.adapters import get_adapter
from causalvl.decoding.processor import CounterfactualLogitsProcessor
from causalvl.decoding.scores import vcd_scores
from causalvl.decoding.tiny import TINY_FAMILIES, tiny_generative_model
from causalvl.errors import ConfigError, UnsupportedModelError

NEW = 8


_CACHE: dict[tuple[str, int], tuple[Any, dict[str, torch.Tensor]]] = {}


def tiny(family: str, batch_size: int = 1) -> tuple[Any, dict[str, torch.Tensor]]:
    key = (family, batch_size)
    if key not in _CACHE:
        _CACHE[key] = tiny_generative_model(family, seed=0, batch_size=batch_size)
    return _CACHE[key]


class ForceTokens(LogitsProcessor):
    """Records the scores it gets and forces the given continuation."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens  # (B, steps)
        self.seen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = len(self.seen)
        self.seen.append(scores.clone())
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, self.tokens[:, step : step + 1], 0.0)


def full_sequence_inputs(
    cf: Mapping[str, Any], generated: torch.Tensor, family: str
) -> dict[str, Any]:
    """The counterfactual prompt followed by ``generated`` tokens, for one uncached forward."""
    out = dict(cf)
    n = generated.shape[1]
    out["input_ids"] = torch.cat([cf["input_ids"], generated], 1)
    ones = torch.ones(generated.shape, dtype=torch.long)
    if "attention_mask" in cf:
        out["attention_mask"] = torch.cat([cf["attention_mask"], ones], 1)
    if "mm_token_type_ids" in cf:
        out["mm_token_type_ids"] = torch.cat([cf["mm_token_type_ids"], 0 * ones], 1)
    if "token_type_ids" in cf:  # PaliGemma: generated tokens are suffix (type 1)
        out["token_type_ids"] = torch.cat([cf["token_type_ids"], ones[:, :n]], 1)
    return out


# -- equivalence with plain generate --------------------------------------------------------
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_alpha_zero_equals_plain_generate(family: str) -> None:
    model, inputs = tiny(family)
    plain = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    for strategy in ("processor", "batched"):
        cfg = causalvl.CounterfactualDecodingConfig(alpha=0.0, beta=0.0, strategy=strategy)
        vl = causalvl.intervene(model, cfg)
        out = vl.generate(**inputs, max_new_tokens=NEW, do_sample=False)
        assert torch.equal(out, plain), (family, strategy)
    proc = CounterfactualLogitsProcessor.from_inputs(model, inputs, alpha=0.0, beta=0.0)
    out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False, logits_processor=[proc])
    assert torch.equal(out, plain)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_contrast_changes_decoding_somewhere(family: str) -> None:
    """With alpha = 1 the scores differ from the factual ones at some step (a live contrast)."""
    model, inputs = tiny(family)
    vl = causalvl.intervene(model, causalvl.CounterfactualDecodingConfig(alpha=1.0, beta=0.1))
    out = vl.generate(**inputs, max_new_tokens=NEW, do_sample=False, return_dict_in_generate=True)
    assert out.strategy == "batched"
    assert len(out.scores) == NEW
    changed = [
        not torch.equal(torch.isfinite(s), torch.ones_like(s, dtype=torch.bool))
        or not torch.allclose(s, f)
        for s, f in zip(out.scores, out.factual_logits)
    ]
    assert any(changed)


# -- the formula at every step, on independently captured logits ----------------------------
@pytest.mark.parametrize("space", ["logits", "log_softmax"])
@pytest.mark.parametrize(
    "family,mode",
    [
        ("llava", "noise"),
        ("qwen2_vl", "no_image"),
        ("idefics3", "blank"),
        ("paligemma", "instruction"),
    ],
)
def test_every_step_follows_the_formula(family: str, mode: str, space: str) -> None:
    model, inputs = tiny(family)
    captured: list[torch.Tensor] = []
    handle = model.lm_head.register_forward_hook(
        lambda mod, args, out: captured.append(out[:, -1].detach().float().clone())
    )
    try:
        proc = CounterfactualLogitsProcessor.from_inputs(
            model,
            inputs,
            counterfactual=mode,
            alpha=1.0,
            beta=0.1,
            space=space,
            disturbance_ids=[7, 8, 9],
        )
        gen = model.generate(
            **inputs,
            max_new_tokens=NEW,
            do_sample=False,
            logits_processor=[proc],
            return_dict_in_generate=True,
            output_scores=True,
        )
    finally:
        handle.remove()
    assert len(captured) == 2 * NEW  # factual and counterfactual forward alternate
    factual, counterfactual = captured[0::2], captured[1::2]
    masked_somewhere = False
    for step, scores in enumerate(gen.scores):
        expected = vcd_scores(factual[step], counterfactual[step], 1.0, 0.1, space)
        assert torch.equal(torch.isinf(scores), torch.isinf(expected))
        keep = torch.isfinite(expected)
        torch.testing.assert_close(scores[keep], expected[keep], atol=1e-5, rtol=0)
        masked_somewhere |= bool((~keep).any())
    assert masked_somewhere


# -- branch isolation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family,mode",
    [
        ("llava", "noise"),
        ("qwen2_vl", "no_image"),
        ("qwen2_5_vl", "instruction"),
        ("paligemma", "blank"),
        ("smolvlm", "noise"),
    ],
)
def test_factual_branch_untouched_and_counterfactual_sees_its_input(family: str, mode: str) -> None:
    model, inputs = tiny(family)
    adapter = get_adapter(model)
    cf_inputs = adapter.decoding_counterfactual(
        inputs, mode, generator=torch.Generator().manual_seed(0), disturbance_ids=[7, 8, 9]
    )
    proc = CounterfactualLogitsProcessor(model, cf_inputs, alpha=1.0, beta=0.1, record=True)
    # generated image / marker tokens would not match the image features in an uncached pass
    no_image_tokens = {"suppress_tokens": [252, 253, 254, 255]}
    seq = model.generate(
        **inputs, max_new_tokens=NEW, do_sample=False, logits_processor=[proc], **no_image_tokens
    )
    generated = seq[:, inputs["input_ids"].shape[1] :]
    assert len(proc.history) == NEW
    assert proc.branch is not None and proc.branch.steps == NEW

    # the same tokens forced without any counterfactual branch: identical factual scores
    force = ForceTokens(generated)
    again = model.generate(
        **inputs, max_new_tokens=NEW, do_sample=False, logits_processor=[force], **no_image_tokens
    )
    assert torch.equal(again, seq)
    for step in range(NEW):
        assert torch.equal(force.seen[step], proc.history[step].factual), step

    # the counterfactual branch differs from the factual one at every step (also >= 2) and
    # equals an uncached forward on the counterfactual prompt + the tokens so far
    for step in range(NEW):
        rec = proc.history[step]
        assert not torch.allclose(rec.counterfactual, rec.factual, atol=1e-3), step
        full = full_sequence_inputs(cf_inputs, generated[:, :step], family)
        with torch.no_grad():
            ref = model(**full).logits[:, -1].float()
        torch.testing.assert_close(rec.counterfactual, ref, atol=1e-4, rtol=1e-4)


def test_branch_keeps_its_own_cache_and_rope_state() -> None:
    model, inputs = tiny("qwen2_vl")
    vl = causalvl.intervene(
        model,
        causalvl.CounterfactualDecodingConfig(counterfactual="no_image", strategy="processor"),
    )
    before = model.model.rope_deltas
    out = vl.generate(**inputs, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    assert out.strategy == "processor"
    # the factual generate left its own rope_deltas (image prompt), not the text-only branch's
    plain_deltas = model.model.rope_deltas
    model.generate(**inputs, max_new_tokens=1, do_sample=False)
    assert torch.equal(plain_deltas, model.model.rope_deltas)
    del before


def test_processor_resets_for_a_new_generate_call() -> None:
    model, inputs = tiny("llava")
    proc = CounterfactualLogitsProcessor.from_inputs(model, inputs, record=True)
    a = model.generate(**inputs, max_new_tokens=4, do_sample=False, logits_processor=[proc])
    b = model.generate(**inputs, max_new_tokens=4, do_sample=False, logits_processor=[proc])
    assert torch.equal(a, b) and len(proc.history) == 4


# -- strategies, batching, sampling ---------------------------------------------------------------
@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_batched_and_processor_strategies_agree(family: str) -> None:
    model, inputs = tiny(family, batch_size=2)
    outs = {}
    for strategy in ("batched", "processor"):
        cfg = causalvl.CounterfactualDecodingConfig(alpha=1.0, beta=0.1, strategy=strategy)
        vl = causalvl.intervene(model, cfg)
        outs[strategy] = vl.generate(
            **inputs, max_new_tokens=NEW, do_sample=False, return_dict_in_generate=True
        )
    assert outs["batched"].sequences.shape == (2, inputs["input_ids"].shape[1] + NEW)
    assert torch.equal(outs["batched"].sequences, outs["processor"].sequences)
    for a, b in zip(outs["batched"].scores, outs["processor"].scores):
        assert torch.equal(torch.isinf(a), torch.isinf(b))
        torch.testing.assert_close(a[a.isfinite()], b[b.isfinite()], atol=1e-4, rtol=1e-4)


def test_batched_strategy_rejects_length_changing_counterfactuals() -> None:
    model, inputs = tiny("llava")
    cfg = causalvl.CounterfactualDecodingConfig(counterfactual="no_image", strategy="batched")
    with pytest.raises(ConfigError, match="strategy='batched'"):
        causalvl.intervene(model, cfg).generate(**inputs, max_new_tokens=2)


@pytest.mark.parametrize("strategy", ["batched", "processor"])
def test_greedy_and_seeded_sampling_are_deterministic(strategy: str) -> None:
    model, inputs = tiny("llava")

    def run(seed: int, **kw: Any) -> torch.Tensor:
        cfg = causalvl.CounterfactualDecodingConfig(seed=seed, strategy=strategy)
        return causalvl.intervene(model, cfg).generate(**inputs, max_new_tokens=12, **kw)

    assert torch.equal(run(0, do_sample=False), run(0, do_sample=False))
    s0 = run(0, do_sample=True, top_k=0)
    assert torch.equal(s0, run(0, do_sample=True, top_k=0))
    assert any(not torch.equal(s0, run(seed, do_sample=True, top_k=0)) for seed in (1, 2, 3))
    # warpers act after the contrast: top-k = 1 sampling is contrastive greedy decoding
    assert torch.equal(run(0, do_sample=True, top_k=1), run(0, do_sample=False))


def test_sampling_leaves_global_rng_alone() -> None:
    model, inputs = tiny("llava")
    state = torch.get_rng_state()
    cfg = causalvl.CounterfactualDecodingConfig(seed=3)
    causalvl.intervene(model, cfg).generate(**inputs, max_new_tokens=4, do_sample=True)
    assert torch.equal(state, torch.get_rng_state())


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_family_error_names_supported_ones() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=32))
    inputs = {"input_ids": torch.tensor([[1, 2, 3]])}
    with pytest.raises(UnsupportedModelError, match="llava.*paligemma.*qwen2_vl"):
        CounterfactualLogitsProcessor.from_inputs(gpt, inputs)
    with pytest.raises(UnsupportedModelError, match="llava"):
        causalvl.intervene(gpt, causalvl.CounterfactualDecodingConfig())
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    with pytest.raises(UnsupportedModelError, match="generative families: idefics3, llava"):
        causalvl.intervene(net, causalvl.CounterfactualDecodingConfig())


def test_instruction_needs_disturbance_ids_or_tokenizer() -> None:
    model, inputs = tiny("llava")
    cfg = causalvl.CounterfactualDecodingConfig(counterfactual="instruction")
    vl = causalvl.intervene(model, cfg)
    with pytest.raises(ConfigError, match="tokenizer"):
        vl.generate(**inputs, max_new_tokens=2)

    class Tok:
        def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
            assert not add_special_tokens
            return {"input_ids": [10 + len(w) for w in text.split()]}

    out = vl.generate(**inputs, max_new_tokens=3, tokenizer=Tok(), return_dict_in_generate=True)
    assert (
        out.strategy == "processor" and out.sequences.shape[1] == inputs["input_ids"].shape[1] + 3
    )


def test_beams_are_rejected() -> None:
    model, inputs = tiny("llava")
    vl = causalvl.intervene(model, causalvl.CounterfactualDecodingConfig())
    with pytest.raises(ConfigError, match="num_beams"):
        vl.generate(**inputs, max_new_tokens=2, num_beams=2)


def test_wrapped_forward_save_load_and_disable() -> None:
    import tempfile

    model, inputs = tiny("qwen2_vl")
    cfg = causalvl.CounterfactualDecodingConfig(counterfactual="blank", seed=4)
    vl = causalvl.intervene(model, cfg)
    with torch.no_grad():
        assert torch.equal(vl(**inputs).logits, model(**inputs).logits)
    with tempfile.TemporaryDirectory() as d:
        vl.save_pretrained(d)
        again = causalvl.load(d, model)
    assert again.configs == [cfg]
    assert torch.equal(
        again.generate(**inputs, max_new_tokens=4), vl.generate(**inputs, max_new_tokens=4)
    )
    plain = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    with vl.disable_interventions():
        assert torch.equal(vl.generate(**inputs, max_new_tokens=4, do_sample=False), plain)


def test_branch_on_left_padded_rows_matches_uncached_forward() -> None:
    """A no-image branch whose rows lost different numbers of tokens is left-padded; its
    cached decoding equals an uncached forward with mask-derived positions."""
    from causalvl.decoding.branch import DecodingBranch

    model, inputs = tiny("llava", batch_size=2)
    adapter = get_adapter(model)
    ids = inputs["input_ids"].clone()
    ids[1, 4] = 77  # row 1 keeps one more text token
    cf = adapter.decoding_counterfactual({**inputs, "input_ids": ids}, "no_image")
    assert cf["attention_mask"][0, 0] == 0  # row 0 is padded
    branch = DecodingBranch(model, cf, adapter)
    logits = [branch.prefill()]
    tokens = torch.tensor([[11, 12, 13], [21, 22, 23]])
    for j in range(tokens.shape[1]):
        logits.append(branch.advance(tokens[:, j]))
    for step, got in enumerate(logits):
        full = full_sequence_inputs(cf, tokens[:, :step], "llava")
        mask = full["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        with torch.no_grad():
            ref = model(**full, position_ids=positions).logits[:, -1].float()
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_a_subclass_override_of_decoding_counterfactual_is_used() -> None:
    model, inputs = tiny("llava")
    calls: list[str] = []

    class Recording(type(get_adapter(model))):  # type: ignore[misc]
        def decoding_counterfactual(self, inputs, mode, **options):
            calls.append(mode)
            return super().decoding_counterfactual(inputs, mode, **options)

    cfg = causalvl.CounterfactualDecodingConfig(counterfactual="blank", seed=1)
    vl = causalvl.intervene(model, cfg, adapter=Recording())
    plain = causalvl.intervene(model, cfg)
    seq = vl.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert calls and set(calls) == {"blank"}
    # the override changes nothing else: the same tokens as with the family's own adapter
    assert torch.equal(seq, plain.generate(**inputs, max_new_tokens=3, do_sample=False))
