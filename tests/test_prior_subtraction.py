"""Prior subtraction: the two forms, averaged random counterfactuals and masked scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import causalvl
from causalvl.errors import ConfigError


def _net():
    torch.manual_seed(0)
    return causalvl.models.TinyVQA(vocab_size=20, num_answers=5, image_size=8, hidden=16)


BATCH = {
    "pixel_values": torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
    "input_ids": torch.randint(1, 20, (6, 5), generator=torch.Generator().manual_seed(2)),
}


def test_subtract_form_removes_the_prior_weight():
    cfg = causalvl.PriorSubtractionConfig(alpha=1.0, form="subtract", space="log_softmax")
    vl = causalvl.intervene(_net(), cfg).eval()
    out = vl(**BATCH)
    f = F.log_softmax(out.factual_logits, -1)
    g = F.log_softmax(out.counterfactual_logits, -1)
    assert torch.allclose(out.logits, f - g, atol=1e-6)
    amplify = causalvl.intervene(_net(), cfg.replace(form="amplify")).eval()(**BATCH)
    assert torch.allclose(amplify.logits, 2 * f - g, atol=1e-6)


def test_random_counterfactuals_are_averaged_in_the_chosen_space():
    cfg = causalvl.PriorSubtractionConfig(
        alpha=1.0, form="subtract", space="log_softmax", mode="shuffle", num_samples=4
    )
    vl = causalvl.intervene(_net(), cfg).eval()
    # the same draws, by hand, from the wrapper's generator in the same state
    vl2 = causalvl.intervene(_net(), cfg.replace(num_samples=1)).eval()
    vl._generator.manual_seed(7)  # noqa: SLF001
    vl2._generator.manual_seed(7)  # noqa: SLF001
    out = vl(**BATCH)
    draws = []
    base = vl2.unwrap()
    for _ in range(4):
        cf = vl2.adapter.counterfactual_inputs(
            BATCH,
            remove="vision",
            mode="shuffle",
            generator=vl2._generator,  # noqa: SLF001
        )
        with torch.no_grad():
            draws.append(F.log_softmax(base(**cf), -1))
    want = F.log_softmax(out.factual_logits, -1) - torch.stack(draws).mean(0)
    assert torch.allclose(out.logits, want, atol=1e-5)
    # four draws differ from one: the average is not a single shuffle
    assert not torch.allclose(torch.stack(draws).mean(0), draws[0])


def test_num_samples_needs_a_random_mode():
    with pytest.raises(ConfigError, match="num_samples"):
        causalvl.PriorSubtractionConfig(mode="zeros", num_samples=3)


def test_masked_scores_stay_masked():
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, pixel_values, input_ids):
            out = self.net(pixel_values=pixel_values, input_ids=input_ids)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            return logits.masked_fill(torch.arange(5) >= 3, float("-inf"))

    adapter = causalvl.GenericAdapter(vision_keys=["pixel_values"], language_keys=["input_ids"])
    for form in ("amplify", "subtract"):
        cfg = causalvl.PriorSubtractionConfig(alpha=1.0, form=form)
        out = causalvl.intervene(Masked(), cfg, adapter=adapter).eval()(**BATCH)
        assert not torch.isnan(out.logits).any()
        assert torch.isneginf(out.logits[:, 3:]).all()
        assert torch.isfinite(out.logits[:, :3]).all()


def test_plausibility_keeps_only_answers_the_factual_model_finds_plausible():
    cfg = causalvl.PriorSubtractionConfig(
        alpha=1.0, form="subtract", space="log_softmax", plausibility=0.2
    )
    vl = causalvl.intervene(_net(), cfg).eval()
    out = vl(**BATCH)
    p = torch.softmax(out.factual_logits, -1)
    keep = p >= 0.2 * p.max(-1, keepdim=True).values
    low = torch.finfo(out.logits.dtype).min
    assert torch.equal(out.logits == low, ~keep)
    want = F.log_softmax(out.factual_logits, -1) - F.log_softmax(out.counterfactual_logits, -1)
    assert torch.allclose(out.logits[keep], want[keep], atol=1e-6)
    assert out.logits.argmax(-1).tolist() == want.masked_fill(~keep, -1e30).argmax(-1).tolist()
    with pytest.raises(ConfigError, match="plausibility"):
        causalvl.PriorSubtractionConfig(plausibility=1.0)
