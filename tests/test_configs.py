"""Configs are immutable once validated, fitted state lives in the implementation, one
``init_seed`` seeds parameter init, and renamed fields keep their old spelling for a release."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

import causalvl
from causalvl.config import InterventionConfig
from causalvl.errors import ConfigError
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


# -- immutability ------------------------------------------------------------------------
def test_a_validated_config_is_frozen():
    cfg = causalvl.GGEConfig(hidden_sizes=[8])
    with pytest.raises(ConfigError, match=r"frozen; use cfg.replace\(variant=...\)"):
        cfg.variant = "together"
    with pytest.raises(ConfigError, match="frozen"):
        del cfg.variant
    assert cfg.variant == "iterative"
    changed = cfg.replace(variant="together")
    assert (changed.variant, cfg.variant) == ("together", "iterative")
    with pytest.raises(ConfigError, match="variant"):
        cfg.replace(variant="sometimes")


def test_validation_normalises_once_and_replace_keeps_it():
    cfg = causalvl.CATTConfig(layers=[-2, -1])
    assert cfg.layers == (-2, -1) and cfg.dictionary_size == 500
    assert cfg.replace(share_weights=True).layers == (-2, -1)
    d = causalvl.DiagnosticsConfig(metrics="bias")
    assert d.metrics == ("bias",)


def test_configs_hash_and_compare_by_value():
    a = causalvl.LMHConfig(prior=[[0.5, 0.5]])
    b = causalvl.LMHConfig(prior=((0.5, 0.5),))
    assert a == b and hash(a) == hash(b)
    assert len({a, b, causalvl.LMHConfig()}) == 2
    assert a != causalvl.BiasProductConfig(prior=[[0.5, 0.5]])
    assert hash(causalvl.TrainConfig()) == hash(causalvl.TrainConfig())


def test_frozen_configs_copy_and_pickle():
    cfg = causalvl.RUBiConfig(hidden_sizes=(4,))
    for clone in (copy.copy(cfg), copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert clone == cfg
        with pytest.raises(ConfigError, match="frozen"):
            clone.num_answers = 3


@pytest.mark.parametrize(
    "cfg",
    [
        causalvl.IdentityConfig(),
        causalvl.LMHConfig(prior=[[0.2, 0.8]], init_seed=3),
        causalvl.BiasProductConfig(),
        causalvl.GGEConfig(hidden_sizes=(16,), init_seed=None),
        causalvl.RUBiConfig(hidden_sizes=(), feature_dim=8),
        causalvl.CounterfactualConfig(hidden_sizes=(4, 4)),
        causalvl.PriorSubtractionConfig(),
        causalvl.ReweightConfig(),
        causalvl.GroupDROConfig(num_groups=2),
        causalvl.CATTConfig(layers=(-1,)),
        causalvl.BackdoorConfig(num_prototypes=3, feature_dim=8, init_seed=2),
    ],
    ids=lambda c: type(c).__name__,
)
def test_every_intervention_config_round_trips(cfg):
    data = json.loads(json.dumps(cfg.to_dict()))
    back = InterventionConfig.from_dict(data)
    assert back == cfg and hash(back) == hash(cfg)
