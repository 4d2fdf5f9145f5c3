"""The contrast formula, the noise schedule and the decoding config."""

from __future__ import annotations

import math

import pytest
import torch

import causalvl
from causalvl.decoding.scores import (
    diffusion_noise,
    noise_schedule,
    plausibility_mask,
    vcd_scores,
)
from causalvl.errors import ConfigError, InputError


def _logits(seed: int, rows: int = 3, vocab: int = 12) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("space", ["logits", "log_softmax"])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.1), (0.5, 0.5), (2.0, 0.0)])
def test_vcd_scores_matches_formula(space: str, alpha: float, beta: float) -> None:
    fact, l_cf = _logits(0), _logits(1)
    s = vcd_scores(fact, l_cf, alpha, beta, space)
    a, b = (fact, l_cf) if space == "logits" else (fact.log_softmax(-1), l_cf.log_softmax(-1))
    p = fact.softmax(-1)
    keep = p >= beta * p.max(-1, keepdim=True).values
    expected = torch.where(keep, (1 + alpha) * a - alpha * b, torch.tensor(float("-inf")))
    assert torch.equal(torch.isinf(s), ~keep)
    torch.testing.assert_close(s[keep], expected[keep], atol=1e-5, rtol=0)


def test_spaces_differ_by_row_constant_and_share_argmax() -> None:
    fact, l_cf = _logits(2), _logits(3)
    raw = vcd_scores(fact, l_cf, 1.0, 0.1, "logits")
    logp = vcd_scores(fact, l_cf, 1.0, 0.1, "log_softmax")
    keep = torch.isfinite(raw)
    assert torch.equal(keep, torch.isfinite(logp))
    diff = torch.where(keep, raw - logp, torch.nan)
    for row in diff:
        vals = row[~row.isnan()]
        assert float(vals.max() - vals.min()) < 1e-4
    assert torch.equal(raw.argmax(-1), logp.argmax(-1))


def test_alpha_zero_beta_zero_is_identity_and_mask_is_on_factual_only() -> None:
    fact, l_cf = _logits(4), _logits(5)
    assert torch.equal(vcd_scores(fact, l_cf, 0.0, 0.0), fact)
    # the mask ignores the counterfactual logits entirely
    m1 = torch.isfinite(vcd_scores(fact, l_cf, 1.0, 0.3))
    m2 = torch.isfinite(vcd_scores(fact, -10 * l_cf, 1.0, 0.3))
    assert torch.equal(m1, m2)
    assert torch.equal(m1, plausibility_mask(fact, 0.3))
    # log(beta) + max form
    assert torch.equal(m1, fact >= math.log(0.3) + fact.max(-1, keepdim=True).values)


def test_vcd_scores_errors() -> None:
    fact = _logits(0)
    with pytest.raises(InputError, match="differ in shape"):
        vcd_scores(fact, fact[:, :5], 1.0, 0.1)
    with pytest.raises(ConfigError, match="alpha"):
        vcd_scores(fact, fact, -1.0, 0.1)
    with pytest.raises(ConfigError, match="beta"):
        vcd_scores(fact, fact, 1.0, 1.5)
    with pytest.raises(ConfigError, match="space"):
        vcd_scores(fact, fact, 1.0, 0.1, "probs")  # type: ignore[arg-type]


def test_noise_schedule_values() -> None:
    a, b = noise_schedule()
    assert a.shape == (1000,)
    for t, sa, sb in [(0, 1.0, 0.0047), (500, 0.8630, 0.5052), (999, 0.2850, 0.9585)]:
        assert abs(float(a[t]) - sa) < 1e-4
        assert abs(float(b[t]) - sb) < 1e-4
    torch.testing.assert_close(a**2 + b**2, torch.ones(1000))


def test_diffusion_noise_is_seeded_and_follows_schedule() -> None:
    v = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    n1 = diffusion_noise(v, 500, torch.Generator().manual_seed(7))
    n2 = diffusion_noise(v, 500, torch.Generator().manual_seed(7))
    n3 = diffusion_noise(v, 500, torch.Generator().manual_seed(8))
    assert torch.equal(n1, n2) and not torch.equal(n1, n3)
    eps = torch.randn(v.shape, generator=torch.Generator().manual_seed(7))
    a, b = noise_schedule()
    torch.testing.assert_close(n1, a[500] * v + b[500] * eps)
    with pytest.raises(ConfigError, match="noise step"):
        diffusion_noise(v, 1000)
    with pytest.raises(InputError, match="floating"):
        diffusion_noise(torch.ones(2, dtype=torch.long), 10)


def test_config_validation_and_round_trip() -> None:
    cfg = causalvl.CounterfactualDecodingConfig(
        alpha=0.5, beta=0.2, counterfactual="instruction", disturbance_ids=[5, 6]
    )
    assert cfg.disturbance_ids == (5, 6)
    again = causalvl.InterventionConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict()["type"] == "counterfactual_decoding"
    for bad in (
        {"alpha": -1.0},
        {"beta": 2.0},
        {"noise_step": 1000},
        {"noise_step": 1.5},
        {"counterfactual": "blur"},
        {"space": "probs"},
        {"strategy": "fast"},
        {"disturbance_ids": []},
        {"disturbance_ids": "abc"},
        {"seed": -1},
    ):
        with pytest.raises(ConfigError):
            causalvl.CounterfactualDecodingConfig(**bad)


def test_tokens_removed_before_the_contrast_stay_removed() -> None:
    fact, l_cf = _logits(6), _logits(7)
    fact[:, :4] = float("-inf")
    l_cf[:, :4] = float("-inf")  # e.g. the same processor applied to both branches
    for beta in (0.0, 0.1):
        s = vcd_scores(fact, l_cf, 1.0, beta)
        assert not bool(s.isnan().any())
        assert bool(torch.isneginf(s[:, :4]).all())


# ---------------------------------------------------------------------------------------
# PAI's parameterisation (CFG.py::CFGLogits): gamma * ls - (gamma - 1) * lu, unmasked at 1
# ---------------------------------------------------------------------------------------
def test_alpha_zero_beta_zero_is_the_unmasked_log_softmax() -> None:
    fact, l_cf = _logits(20), _logits(21)
    s = vcd_scores(fact, l_cf, 0.0, 0.0, "log_softmax")
    assert torch.equal(s, fact.log_softmax(-1))
    # with beta > 0 the same alpha masks: not PAI's gamma = 1 output
    assert torch.isinf(vcd_scores(fact, l_cf, 0.0, 0.1, "log_softmax")).any()


def test_pai_scores_by_hand() -> None:
    from causalvl.decoding.scores import pai_scores

    fact = torch.tensor([[2.0, 1.0, -3.0]])
    lu = torch.tensor([[2.0, 0.0, 0.0]])
    ls, lus = fact.log_softmax(-1), lu.log_softmax(-1)
    # gamma = 1: PAI returns ls with no mask, even with beta = 0.1 (token 2 has p < 0.1 max p)
    assert torch.equal(pai_scores(fact, lu, gamma=1.0, beta=0.1), ls)
    # gamma = 1.1: 1.1 ls - 0.1 lu on the plausible tokens, -inf on token 2
    s = pai_scores(fact, lu, gamma=1.1)
    expected = 1.1 * ls - 0.1 * lus
    torch.testing.assert_close(s[0, :2], expected[0, :2])
    assert s[0, 2].item() == float("-inf")
    assert torch.equal(s, causalvl.decoding.vcd_scores(fact, lu, 0.1, 0.1, "log_softmax"))
    # a token removed by an earlier processor stays removed at gamma = 1
    removed = fact.clone()
    removed[0, 1] = float("-inf")
    assert pai_scores(removed, lu, gamma=1.0)[0, 1].item() == float("-inf")
    for bad in (0.9, -1.0, True, "1.1"):
        with pytest.raises(ConfigError, match="gamma"):
            pai_scores(fact, lu, gamma=bad)  # type: ignore[arg-type]
