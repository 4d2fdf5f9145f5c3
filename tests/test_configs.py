"""Configs are immutable once validated, fitted state lives in the implementation, one
``init_seed`` seeds parameter init, and renamed fields keep their old spelling for a release."""

from __future__ import annotations

import torch

import causalvl
from causalvl.interventions.ensembles import set_bias_prior


def _tiny_vqa(seed=0, num_answers=4):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return causalvl.TinyVQA(vocab_size=20, num_answers=num_answers, image_size=8, hidden=16)


def test_set_bias_prior_leaves_the_callers_config_alone():
    cfg = causalvl.LMHConfig()
    first = causalvl.intervene(_tiny_vqa(), cfg)
    set_bias_prior(first, torch.full((3, 4), 0.25))
    assert cfg.num_question_types is None
    second = causalvl.intervene(_tiny_vqa(), cfg)
    set_bias_prior(second, torch.full((5, 4), 0.25))  # a different, valid table
    assert second.interventions["0_lmh"].prior.shape == (5, 4)
    assert first.interventions["0_lmh"].prior.shape == (3, 4)
