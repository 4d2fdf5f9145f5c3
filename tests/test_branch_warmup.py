"""CF-VQA and RUBi branch warm-up: the question branch trains alone first."""

from __future__ import annotations

import pytest
import torch

import causalvl
from causalvl.errors import ConfigError, InterventionStateError

BATCH = {
    "pixel_values": torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
    "input_ids": torch.randint(1, 20, (4, 5), generator=torch.Generator().manual_seed(1)),
    "labels": torch.tensor([0, 1, 2, 3]),
}

CONFIGS = [
    causalvl.RUBiConfig(hidden_sizes=(16,), branch_warmup_epochs=2),
    causalvl.CFVQAConfig(hidden_sizes=(16,), branch_warmup_epochs=2),
    causalvl.CFVQAConfig(graph="simple", fusion="sum", hidden_sizes=(16,), branch_warmup_epochs=2),
]


def _grads(vl, epoch):
    vl.train()
    vl.zero_grad(set_to_none=True)
    vl.set_epoch(epoch, 10)
    out = vl(**BATCH)
    parts = vl.objective(out, BATCH)
    parts.loss.backward()
    base = sum(float(p.grad.abs().sum()) for p in vl.base_model.parameters() if p.grad is not None)
    branch = sum(
        float(p.grad.abs().sum()) for p in vl.interventions.parameters() if p.grad is not None
    )
    return set(parts.parts), base, branch


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.type}-{getattr(c, 'graph', '')}")
def test_branch_trains_alone_during_warmup(config):
    torch.manual_seed(0)
    vl = causalvl.intervene(
        causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16), config
    )
    parts, base, branch = _grads(vl, 1)
    assert parts <= {"question_ce", "vision_ce"}
    assert base == 0.0 and branch > 0.0
    parts, base, branch = _grads(vl, 2)
    assert "question_ce" in parts and len(parts) > 1
    assert base > 0.0 and branch > 0.0


def test_warmup_needs_the_epoch_and_a_valid_count():
    vl = causalvl.intervene(
        causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16), CONFIGS[0]
    ).train()
    with pytest.raises(InterventionStateError, match="set_epoch"):
        vl.objective(vl(**BATCH), BATCH)
    with pytest.raises(ConfigError, match="branch_warmup_epochs"):
        causalvl.RUBiConfig(branch_warmup_epochs=-1)
    # evaluation never warms up
    vl.eval()
    assert vl(**BATCH).logits.shape == (4, 4)
