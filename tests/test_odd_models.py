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
