"""Generative-family adapters: image-token layout and counterfactual decoding inputs."""

from __future__ import annotations

import pytest
import torch

from causalvl.adapters import get_adapter
from causalvl.adapters.generative import GenerativeAdapter, LlavaAdapter, generative_families
from causalvl.decoding.scores import noise_schedule
from causalvl.decoding.tiny import IMAGE_TOKEN, TINY_FAMILIES, tiny_generative_model
from causalvl.errors import ConfigError, InputError, UnsupportedModelError

_MODELS: dict[str, tuple] = {}


def tiny(family: str, batch_size: int = 2):
    if (family, batch_size) not in _MODELS:
        _MODELS[(family, batch_size)] = tiny_generative_model(family, batch_size=batch_size)
    return _MODELS[(family, batch_size)]


def test_registered_generative_families() -> None:
    assert generative_families() == [
        "idefics3",
        "llava",
        "paligemma",
        "qwen2_5_vl",
        "qwen2_vl",
        "smolvlm",
    ]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_adapter_knows_the_layout_and_roles(family: str) -> None:
    model, inputs = tiny(family)
    adapter = get_adapter(model)
    assert isinstance(adapter, GenerativeAdapter)
    assert adapter.image_token_id == IMAGE_TOKEN
    assert int(adapter.image_token_mask(inputs["input_ids"]).sum()) == 2 * 4
    for role in ("vision_features", "language_features", "fused"):
        adapter.resolve(role)  # every role maps to a real module
    pos = adapter.text_insert_position(inputs["input_ids"])
    ids = inputs["input_ids"][0]
    assert ids[pos[0] - 1] != IMAGE_TOKEN or family not in ("paligemma",)
    assert bool((ids[pos[0] :] != IMAGE_TOKEN).all())  # text after the image block


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_noise_and_blank_keep_the_layout(family: str) -> None:
    model, inputs = tiny(family)
    adapter = get_adapter(model)
    snapshot = {k: v.clone() for k, v in inputs.items()}
    g = torch.Generator().manual_seed(0)
    noisy = adapter.decoding_counterfactual(inputs, "noise", noise_step=500, generator=g)
    blank = adapter.decoding_counterfactual(inputs, "blank")
    for k, v in inputs.items():
        assert torch.equal(v, snapshot[k])  # inputs untouched
        assert noisy[k].shape == v.shape and blank[k].shape == v.shape
        if k != "pixel_values":
            assert torch.equal(noisy[k], v) and torch.equal(blank[k], v)
        assert noisy[k].data_ptr() != v.data_ptr()  # never shares storage
    eps = torch.randn(inputs["pixel_values"].shape, generator=torch.Generator().manual_seed(0))
    a, b = noise_schedule()
    torch.testing.assert_close(
        noisy["pixel_values"], a[500] * inputs["pixel_values"] + b[500] * eps
    )
    assert float(blank["pixel_values"].abs().max()) <= 1e-6
    with torch.no_grad():
        assert model(**blank).logits.shape[1] == inputs["input_ids"].shape[1]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_no_image_drops_image_tokens_and_pixels(family: str) -> None:
    model, inputs = tiny(family)
    adapter = get_adapter(model)
    cf = adapter.decoding_counterfactual(inputs, "no_image")
    assert not any(k in cf for k in adapter.pixel_keys)
    assert not bool((cf["input_ids"] == IMAGE_TOKEN).any())
    assert not bool(adapter.image_block_mask(cf["input_ids"]).any())  # Qwen markers too
    dropped = 6 if family.startswith("qwen") else 4
    assert cf["input_ids"].shape[1] == inputs["input_ids"].shape[1] - dropped
    for k in adapter.per_token_keys:
        if k in inputs:
            assert cf[k].shape == cf["input_ids"].shape
    text = inputs["input_ids"][~adapter.image_block_mask(inputs["input_ids"])].reshape(2, -1)
    assert torch.equal(cf["input_ids"], text)
    with torch.no_grad():
        model(**cf)


def test_no_image_left_pads_rows_that_lose_different_counts() -> None:
    model, inputs = tiny("llava")
    adapter = get_adapter(model)
    ids = inputs["input_ids"].clone()
    ids[1, 4] = 77  # row 1 keeps one more text token (3 image tokens only)
    cf = adapter.decoding_counterfactual({**inputs, "input_ids": ids}, "no_image")
    assert cf["input_ids"].shape[1] == ids.shape[1] - 3
    assert cf["attention_mask"][0].tolist()[0] == 0 and cf["attention_mask"][1].sum() == 8
    assert cf["input_ids"][0, 0] == adapter.pad_token_id


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_instruction_inserts_the_disturbance_after_the_image(family: str) -> None:
    model, inputs = tiny(family)
    adapter = get_adapter(model)
    cf = adapter.decoding_counterfactual(inputs, "instruction", disturbance_ids=[7, 8, 9])
    ids, new = inputs["input_ids"], cf["input_ids"]
    assert new.shape[1] == ids.shape[1] + 3
    pos = int(adapter.text_insert_position(ids)[0])
    assert new[0, pos : pos + 3].tolist() == [7, 8, 9]
    assert torch.equal(new[:, :pos], ids[:, :pos]) and torch.equal(new[:, pos + 3 :], ids[:, pos:])
    if "token_type_ids" in cf:
        assert cf["token_type_ids"][0, pos : pos + 3].tolist() == [0, 0, 0]
    if "mm_token_type_ids" in cf:
        assert torch.equal(cf["mm_token_type_ids"], (new == IMAGE_TOKEN).long())
    assert torch.equal(cf["pixel_values"], inputs["pixel_values"])
    if family == "paligemma":  # after the image tokens and the BOS that follows them
        assert new[0, pos - 1] == 1 and new[0, pos - 2] == IMAGE_TOKEN
    with pytest.raises(ConfigError, match="disturbance"):
        adapter.decoding_counterfactual(inputs, "instruction")


def test_counterfactual_errors() -> None:
    model, inputs = tiny("llava")
    adapter = get_adapter(model)
    with pytest.raises(ConfigError, match="blur"):
        adapter.decoding_counterfactual(inputs, "blur")
    with pytest.raises(InputError, match="pixel"):
        adapter.decoding_counterfactual({"input_ids": inputs["input_ids"]}, "noise")
    text_only = {"input_ids": torch.tensor([[1, 5, 6]])}
    with pytest.raises(InputError, match="no image token"):
        adapter.decoding_counterfactual(text_only, "instruction", disturbance_ids=[3])

    class NeedsImage(LlavaAdapter):
        allows_no_image = False

    with pytest.raises(UnsupportedModelError, match="cannot run without an image"):
        NeedsImage().bind(model).decoding_counterfactual(inputs, "no_image")


def test_isolated_state_swaps_and_restores() -> None:
    model, _ = tiny("qwen2_vl")
    adapter = get_adapter(model)
    model.model.rope_deltas = torch.tensor([[5]])
    store: dict = {}
    with adapter.isolated_state(store):
        model.model.rope_deltas = torch.tensor([[-2]])
    assert int(model.model.rope_deltas) == 5 and int(store["model.rope_deltas"]) == -2
    with adapter.isolated_state(store):
        assert int(model.model.rope_deltas) == -2
        model.model.rope_deltas = torch.tensor([[-3]])
    assert int(model.model.rope_deltas) == 5 and int(store["model.rope_deltas"]) == -3
    model.model.rope_deltas = None
