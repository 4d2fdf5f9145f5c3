"""The registry of named input transforms: behaviour, capability flags, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import HF_FAMILIES, inputs_for

import causalvl
from causalvl.adapters import GenericAdapter, ModelAdapter, get_adapter
from causalvl.adapters.transforms import (
    CONTEXT_MODES,
    COUNTERFACTUAL_MODES,
    DECODING_MODES,
    apply_transform,
    get_transform,
    transform_names,
)
from causalvl.decoding.tiny import TINY_FAMILIES, tiny_generative_model
from causalvl.errors import ConfigError, InputError, InterventionStateError
from causalvl.models import TinyVQA

#: name -> (removes, needs_generator, uses_fitted_state, needs_fitted_state, keeps_shapes,
#: generative, discriminative)
FLAGS = {
    "vision_zeros": ("vision", False, False, False, True, True, True),
    "vision_mean": ("vision", False, True, False, True, True, True),
    "vision_fitted_mean": ("vision", False, True, True, True, True, True),
    "vision_noise_image": ("vision", True, False, False, True, True, True),
    "vision_shuffle": ("vision", True, False, False, True, True, True),
    "vision_attention_mask": ("vision", False, False, False, True, True, True),
    "language_pad": ("language", False, False, False, True, True, True),
    "language_attention_mask": ("language", False, False, False, True, True, True),
    "language_shuffle": ("language", True, False, False, True, True, True),
    "diffusion_noise": ("vision", True, False, False, True, True, False),
    "blank_image": ("vision", False, False, False, True, True, False),
    "drop_image_tokens": ("vision", False, False, False, False, True, False),
    "instruction_disturbance": ("language", False, False, False, False, True, False),
    "context_swap": ("context", True, False, False, True, True, True),
    "context_zeros": ("context", False, False, False, True, True, True),
}


def _snapshot(inputs):
    return {k: v.clone() for k, v in inputs.items()}


def _unchanged(inputs, snapshot):
    return set(inputs) == set(snapshot) and all(torch.equal(inputs[k], snapshot[k]) for k in inputs)


def test_every_transform_is_registered_with_its_flags():
    assert transform_names() == sorted(FLAGS)
    for name, flags in FLAGS.items():
        t = get_transform(name)
        got = (
            t.removes,
            t.needs_generator,
            t.uses_fitted_state,
            t.needs_fitted_state,
            t.keeps_shapes,
            t.generative,
            t.discriminative,
        )
        assert got == flags, name
    legacy = {*COUNTERFACTUAL_MODES.values(), *DECODING_MODES.values(), *CONTEXT_MODES.values()}
    assert legacy <= set(FLAGS)
    # the decoding "noise" is diffusion on the pixels, never the noise image of prior subtraction
    assert DECODING_MODES["noise"] != COUNTERFACTUAL_MODES[("vision", "noise")]


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'vision_shuffle'"):
        get_transform("vision_shufle")
    vl = causalvl.intervene(TinyVQA(num_answers=3, vocab_size=10), causalvl.IdentityConfig())
    with pytest.raises(ConfigError, match="Did you mean 'diffusion_noise'"):
        vl.adapter.supports("difusion_noise")
    with pytest.raises(ConfigError, match="Known transforms"):
        vl.adapter.transform("blur", {})
    with pytest.raises(ConfigError, match="no option"):
        vl.adapter.transform("vision_zeros", {}, noise_step=3)


@pytest.mark.parametrize("family", sorted(HF_FAMILIES))
def test_supported_transforms_keep_shapes_and_never_mutate(hf_models, family):
    adapter = get_adapter(hf_models[family])
    adapter.fit_vision_mean([inputs_for(family, batch=2, seed=3)])
    inputs = inputs_for(family, batch=4)
    snapshot = _snapshot(inputs)
    supported = adapter.supported_transforms()
    assert {"vision_zeros", "vision_shuffle", "language_pad"} <= set(supported)
    assert "diffusion_noise" not in supported  # discriminative family
    for name in supported:
        t = get_transform(name)
        if t.removes == "context":
            continue
        out = adapter.transform(name, inputs, generator=torch.Generator().manual_seed(0))
        assert _unchanged(inputs, snapshot), name
        assert out is not inputs
        if t.keeps_shapes:
            for k, v in inputs.items():
                assert out[k].shape == v.shape and out[k].dtype == v.dtype, (name, k)
        part = adapter.vision_keys if t.removes == "vision" else adapter.language_keys
        added = set(out) - set(inputs)  # e.g. an attention mask the inputs did not have
        assert added <= set(part), name
        assert added or any(not torch.equal(out[k], inputs[k]) for k in part if k in inputs), name
        for k in set(inputs) - set(part):  # only the removed part changes
            assert torch.equal(out[k], inputs[k]), (name, k)
        if t.needs_generator:
            again = adapter.transform(name, inputs, generator=torch.Generator().manual_seed(0))
            assert all(torch.equal(again[k], out[k]) for k in out), name
    for name in set(transform_names()) - set(supported):
        with pytest.raises((ConfigError, InterventionStateError)):
            adapter.transform(name, inputs)


def test_capabilities_replace_method_comparison(hf_models):
    vilt = get_adapter(hf_models["vilt"])
    clip = get_adapter(hf_models["clip"])
    assert vilt.supports("vision_attention_mask") and not clip.supports("vision_attention_mask")
    assert clip.supports("language_attention_mask")
    with pytest.raises(ConfigError, match="no vision mask"):
        clip.transform("vision_attention_mask", inputs_for("clip"))
    with pytest.raises(ConfigError, match="only on generative"):
        clip.transform("diffusion_noise", inputs_for("clip"))

    class OwnMask(GenericAdapter):  # a subclass written before the spec, with its own hook
        def _mask_vision(self, inputs, keys):
            inputs["image"] = torch.full_like(inputs["image"], -1.0)
            return inputs

    own = OwnMask(vision_keys=["image"], language_keys=["text"])
    assert own.supports("vision_attention_mask")
    out = own.counterfactual_inputs(
        {"image": torch.ones(2, 3), "text": torch.ones(2, 3)}, remove="vision", mode="mask"
    )
    assert torch.equal(out["image"], torch.full((2, 3), -1.0))


def test_vilt_mask_keeps_one_patch(hf_models):
    adapter = get_adapter(hf_models["vilt"])
    out = adapter.transform("vision_attention_mask", inputs_for("vilt"))
    patch = hf_models["vilt"].config.patch_size
    assert int(out["pixel_mask"].sum()) == 3 * patch * patch  # one valid patch per example
    assert not bool(out["pixel_values"].any())


def test_fitted_mean_needs_a_fitted_state_and_uses_it():
    vl = causalvl.intervene(TinyVQA(num_answers=3, vocab_size=10), causalvl.IdentityConfig())
    inputs = {
        "pixel_values": torch.randn(3, 1, 8, 8),
        "input_ids": torch.randint(1, 10, (3, 5)),
    }
    assert not vl.adapter.supports("vision_fitted_mean")
    with pytest.raises(InterventionStateError, match="fit_vision_mean"):
        vl.adapter.transform("vision_fitted_mean", inputs)
    batch_mean = vl.adapter.transform("vision_mean", inputs)["pixel_values"]
    assert torch.allclose(
        batch_mean, inputs["pixel_values"].mean(0, keepdim=True).expand(3, -1, -1, -1)
    )
    mean = vl.adapter.fit_vision_mean([{"pixel_values": torch.full((2, 1, 8, 8), 0.5)}])
    assert vl.adapter.supports("vision_fitted_mean")
    out = vl.adapter.transform("vision_fitted_mean", inputs)
    assert torch.equal(out["pixel_values"], mean["pixel_values"].expand(3, -1, -1, -1))
    assert torch.equal(
        vl.adapter.transform("vision_mean", inputs)["pixel_values"], out["pixel_values"]
    )


def test_fitted_mean_is_saved_and_restored(tmp_path):
    net = TinyVQA(num_answers=3, vocab_size=10)
    vl = causalvl.intervene(net, causalvl.PriorSubtractionConfig(mode="mean"))
    vl.adapter.fit_vision_mean([{"pixel_values": torch.rand(4, 1, 8, 8)}])
    inputs = {"pixel_values": torch.randn(2, 1, 8, 8), "input_ids": torch.randint(1, 10, (2, 5))}
    before = vl.adapter.transform("vision_fitted_mean", inputs)
    vl.save_pretrained(tmp_path)
    loaded = causalvl.load(tmp_path, TinyVQA(num_answers=3, vocab_size=10))
    assert isinstance(loaded.adapter.vision_mean["pixel_values"], torch.Tensor)
    assert torch.equal(
        loaded.adapter.vision_mean["pixel_values"], vl.adapter.vision_mean["pixel_values"]
    )
    after = loaded.adapter.transform("vision_fitted_mean", inputs)
    assert torch.equal(after["pixel_values"], before["pixel_values"])


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generative_transforms(family):
    model, inputs = tiny_generative_model(family, batch_size=2)
    adapter = get_adapter(model)
    snapshot = _snapshot(inputs)
    for name in ("diffusion_noise", "blank_image", "drop_image_tokens", "instruction_disturbance"):
        assert adapter.supports(name), (family, name)
    noisy = adapter.transform("diffusion_noise", inputs, generator=torch.Generator().manual_seed(1))
    assert noisy["pixel_values"].shape == inputs["pixel_values"].shape
    assert not torch.equal(noisy["pixel_values"], inputs["pixel_values"])
    dropped = adapter.transform("drop_image_tokens", inputs)
    assert "pixel_values" not in dropped
    assert dropped["input_ids"].shape[1] < inputs["input_ids"].shape[1]
    longer = adapter.transform("instruction_disturbance", inputs, disturbance_ids=[5, 6])
    assert longer["input_ids"].shape[1] == inputs["input_ids"].shape[1] + 2
    for out in (noisy, dropped, longer):  # fresh tensors, no storage shared with the inputs
        for k, v in out.items():
            if k in inputs:
                assert v.data_ptr() != inputs[k].data_ptr(), k
    assert _unchanged(inputs, snapshot)
    assert not adapter.supports("vision_attention_mask")  # no vision mask key
    # the decoding entry point gives the same tensors as the transform
    same = adapter.decoding_counterfactual(
        inputs, "noise", generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(same["pixel_values"], noisy["pixel_values"])
    with pytest.raises(ConfigError, match="no option"):
        adapter.transform("blank_image", inputs, noise_step=10)


def test_context_transforms_need_no_adapter():
    target, context = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    batch = {
        "pixel_values": torch.cat([target, context], -1),
        "region_pixels": torch.stack([target, context], 1),
    }
    snapshot = _snapshot(batch)
    swapped = apply_transform(
        "context_swap", None, batch, generator=torch.Generator().manual_seed(0)
    )
    zeros = apply_transform("context_zeros", None, batch)
    assert _unchanged(batch, snapshot)
    assert torch.equal(swapped["region_pixels"][:, 0], target)
    assert torch.equal(swapped["pixel_values"][..., 4:], swapped["region_pixels"][:, 1])
    assert not bool(zeros["pixel_values"][..., 4:].any())
    with pytest.raises(InputError, match="region_pixels"):
        apply_transform("context_zeros", None, {"pixel_values": batch["pixel_values"]})
    assert get_transform("context_swap").supported(None)
    assert not get_transform("vision_zeros").supported(None)


def test_a_spec_can_refuse_a_transform():
    class NoShuffle(ModelAdapter):
        vision_keys = ("image",)
        language_keys = ("text",)

    NoShuffle.spec = NoShuffle.spec.replace(unsupported_transforms=frozenset({"vision_shuffle"}))
    adapter = NoShuffle()
    assert not adapter.supports("vision_shuffle") and adapter.supports("vision_zeros")
    with pytest.raises(ConfigError, match="does not support 'vision_shuffle'"):
        adapter.transform("vision_shuffle", {"image": torch.ones(2, 3), "text": torch.ones(2, 3)})
