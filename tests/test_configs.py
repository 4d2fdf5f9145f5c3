"""Configs are immutable once validated, fitted state lives in the implementation, one
``init_seed`` seeds parameter init, and renamed fields keep their old spelling for a release."""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import pytest
import torch

import causalvl
from causalvl.config import InterventionConfig
from causalvl.errors import ConfigError
from causalvl.interventions.ensembles import set_bias_prior


def _tiny_vqa(seed=0, num_answers=4):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return causalvl.models.TinyVQA(
            vocab_size=20, num_answers=num_answers, image_size=8, hidden=16
        )


def test_set_bias_prior_leaves_the_callers_config_alone():
    cfg = causalvl.LMHConfig()
    first = causalvl.intervene(_tiny_vqa(), cfg)
    set_bias_prior(first, torch.full((3, 4), 0.25))
    assert cfg.num_question_types is None
    second = causalvl.intervene(_tiny_vqa(), cfg)
    set_bias_prior(second, torch.full((5, 4), 0.25))  # a different, valid table
    assert second.interventions["0_lmh"].prior.shape == (5, 4)
    assert first.interventions["0_lmh"].prior.shape == (3, 4)
    # the wrapper reports what each intervention runs with, not the caller's object
    assert [c.num_question_types for c in (*first.configs, *second.configs)] == [3, 5]
    assert cfg.num_question_types is None


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
        causalvl.CFVQAConfig(hidden_sizes=(4, 4)),
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


# -- fitted state lives in the implementation --------------------------------------------
def test_save_writes_the_fitted_prior_shape_and_load_restores_it(tmp_path):
    cfg = causalvl.LMHConfig()
    vl = causalvl.intervene(_tiny_vqa(), cfg)
    prior = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    set_bias_prior(vl, prior)
    impl = vl.interventions["0_lmh"]
    assert impl.config.num_question_types == 3 and cfg.num_question_types is None
    vl.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "intervention_config.json").read_text())["interventions"][0]
    assert saved["num_question_types"] == 3 and saved["prior"] is None
    restored = causalvl.load(tmp_path, _tiny_vqa())
    assert torch.equal(restored.interventions["0_lmh"].prior, prior)
    assert bool(restored.interventions["0_lmh"].prior_is_set)


def test_a_dictionary_lives_in_buffers_not_in_the_saved_config(tmp_path):
    d = causalvl.ConfounderDictionary.from_tensors(torch.randn(3, 16), names=["a", "b", "c"])
    cfg = causalvl.BackdoorConfig(target="vision_features", dictionary=d)
    vl = causalvl.intervene(_tiny_vqa(), cfg)
    impl = vl.interventions["0_backdoor"]
    assert cfg.dictionary is d  # the caller's config is left as given
    assert impl.config.dictionary is None and impl.config.prototype_names == ("a", "b", "c")
    vl.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "intervention_config.json").read_text())["interventions"][0]
    assert "dictionary" not in saved and saved["prototype_names"] == ["a", "b", "c"]
    restored = causalvl.load(tmp_path, _tiny_vqa()).interventions["0_backdoor"]
    assert torch.equal(restored.dictionary.prototypes, d.prototypes)
    assert list(restored.dictionary.names) == ["a", "b", "c"]


def test_set_dictionary_on_a_built_wrapper_records_the_names_in_its_own_config():
    cfg = causalvl.BackdoorConfig(num_prototypes=2, feature_dim=16)
    vl = causalvl.intervene(_tiny_vqa(), cfg)
    impl = vl.interventions["0_backdoor"]
    impl.set_dictionary(causalvl.ConfounderDictionary(torch.randn(2, 16), names=["x", "y"]))
    assert impl.config.prototype_names == ("x", "y") and cfg.prototype_names == ()


def test_catt_keeps_its_dictionary_in_the_memory_parameter():
    from test_catt import _bert, _bert_adapter

    d = causalvl.ConfounderDictionary.from_tensors(torch.randn(6, 8))
    cfg = causalvl.CATTConfig(dictionary=d)
    impl = causalvl.intervene(_bert(), cfg, adapter=_bert_adapter()).interventions["0_catt"]
    assert impl.config.dictionary is None and impl.config.dictionary_size == 6
    assert cfg.dictionary is d
    assert torch.equal(impl.memory.detach(), d.prototypes)


# -- init_seed -----------------------------------------------------------------------------
SEEDED = {
    "cfvqa": lambda seed: causalvl.CFVQAConfig(hidden_sizes=(8,), init_seed=seed),
    "rubi": lambda seed: causalvl.RUBiConfig(hidden_sizes=(8,), init_seed=seed),
    "backdoor": lambda seed: causalvl.BackdoorConfig(
        num_prototypes=3, feature_dim=16, merge="concat_project", init_seed=seed
    ),
    "lmh": lambda seed: causalvl.LMHConfig(init_seed=seed),
    "gge": lambda seed: causalvl.GGEConfig(hidden_sizes=(8,), init_seed=seed),
}


def _intervention_weights(vl):
    return {k: v.clone() for k, v in vl.interventions.state_dict().items()}


@pytest.mark.parametrize("kind", sorted(SEEDED))
def test_init_seed_fixes_the_initial_weights_whatever_the_global_rng(kind):
    net = _tiny_vqa()
    torch.manual_seed(123)
    a = _intervention_weights(causalvl.intervene(net, SEEDED[kind](7)))
    torch.manual_seed(456)
    state = torch.random.get_rng_state()
    b = _intervention_weights(causalvl.intervene(net, SEEDED[kind](7)))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    c = _intervention_weights(causalvl.intervene(net, SEEDED[kind](8)))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("kind", ["cfvqa", "rubi", "backdoor"])
def test_init_seed_draws_what_a_seeded_global_rng_drew(kind):
    """``init_seed=s`` gives the weights that seeding the global RNG with ``s`` around
    ``intervene`` gave, so results produced that way keep their numbers."""
    net = _tiny_vqa()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        old = _intervention_weights(causalvl.intervene(net, SEEDED[kind](None)))
    new = _intervention_weights(causalvl.intervene(net, SEEDED[kind](5)))
    assert all(torch.equal(old[k], new[k]) for k in old)


def test_without_init_seed_parameters_come_from_the_global_rng():
    net = _tiny_vqa()
    torch.manual_seed(1)
    a = _intervention_weights(causalvl.intervene(net, SEEDED["rubi"](None)))
    b = _intervention_weights(causalvl.intervene(net, SEEDED["rubi"](None)))
    torch.manual_seed(1)
    c = _intervention_weights(causalvl.intervene(net, SEEDED["rubi"](None)))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_init_seed_is_checked(bad):
    with pytest.raises(ConfigError, match="init_seed"):
        causalvl.RUBiConfig(init_seed=bad)
    with pytest.raises(ConfigError, match="init_seed"):
        causalvl.LMHConfig(init_seed=bad)


def test_ensembles_keep_their_seeded_default():
    assert causalvl.LMHConfig().init_seed == 0 and causalvl.GGEConfig().init_seed == 0
    assert causalvl.CATTConfig().init_seed == 0 and causalvl.RUBiConfig().init_seed is None


# -- renamed fields --------------------------------------------------------------------------
RENAMED = [
    (causalvl.GGEConfig, "hidden", "hidden_sizes", (8,)),
    (causalvl.GGEConfig, "question_feature_dim", "feature_dim", 16),
    (causalvl.RUBiConfig, "hidden", "hidden_sizes", (8,)),
    (causalvl.RUBiConfig, "question_feature_dim", "feature_dim", 16),
    (causalvl.CFVQAConfig, "hidden", "hidden_sizes", (8,)),
    (causalvl.LMHConfig, "hidden_dim", "feature_dim", 16),
    (causalvl.BiasProductConfig, "hidden_dim", "feature_dim", 16),
]


@pytest.mark.parametrize(("cls", "old", "new", "value"), RENAMED)
def test_old_field_names_still_work_with_a_future_warning(cls, old, new, value):
    with pytest.warns(FutureWarning, match=f"{old} is renamed to {new}"):
        cfg = cls(**{old: value})
    assert getattr(cfg, new) == value and cfg == cls(**{new: value})
    assert old not in cfg.to_dict() and cfg.to_dict()[new] == _listed(value)
    data = {**cls().to_dict(), old: _listed(value)}
    del data[new]
    with pytest.warns(FutureWarning, match=f"{old} is renamed to {new}"):
        assert cls.from_dict(data) == cfg
    with pytest.warns(FutureWarning, match=f"{old} is renamed to {new}"):
        assert InterventionConfig.from_dict(data) == cfg
    with pytest.warns(FutureWarning, match=f"{old} is renamed to {new}"):
        assert cls().replace(**{old: value}) == cfg
    with pytest.warns(FutureWarning, match=f"read cfg.{new}|Read cfg.{new}"):
        assert getattr(cfg, old) == value
    with pytest.raises(ConfigError, match=f"both {old!r}"):
        cls(**{old: value, new: value})


def _listed(value):
    return list(value) if isinstance(value, tuple) else value


def test_a_folder_saved_with_the_old_names_still_loads(tmp_path):
    vl = causalvl.intervene(_tiny_vqa(), causalvl.RUBiConfig(hidden_sizes=(8,), init_seed=0))
    vl.save_pretrained(tmp_path)
    path = tmp_path / "intervention_config.json"
    meta = json.loads(path.read_text())
    entry = meta["interventions"][0]
    entry["hidden"] = entry.pop("hidden_sizes")
    entry["question_feature_dim"] = entry.pop("feature_dim")
    del entry["init_seed"]  # written before init_seed existed
    path.write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = causalvl.load(tmp_path, _tiny_vqa())
    renamed = sorted(str(w.message).split(" is renamed")[0] for w in caught)
    assert renamed == ["RUBiConfig.hidden", "RUBiConfig.question_feature_dim"]
    assert all(issubclass(w.category, FutureWarning) for w in caught)
    assert restored.interventions["0_rubi"].config.hidden_sizes == (8,)
    before, after = _intervention_weights(vl), _intervention_weights(restored)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_positional_subclass_with_required_fields_still_works():
    import dataclasses

    @dataclasses.dataclass
    class _Positional(InterventionConfig):
        scale: float

    cfg = _Positional(2.0, init_seed=1)
    assert (cfg.scale, cfg.init_seed) == (2.0, 1)
    with pytest.raises(ConfigError, match="frozen"):
        cfg.scale = 3.0


def test_a_gge_without_question_branch_saves_and_loads(tmp_path):
    """bias='distribution' builds no question branch: its default hidden_sizes are not sizes of
    any saved tensor, and load must not refuse them as a corrupted file."""
    from causalvl.errors import CheckpointError

    vl = causalvl.intervene(_tiny_vqa(), causalvl.GGEConfig(bias="distribution"))
    vl.set_bias_prior(torch.full((3, 4), 0.25))
    vl.save_pretrained(tmp_path)
    back = causalvl.load(tmp_path, _tiny_vqa())
    assert back.configs[0].hidden_sizes == (1024, 1024)
    assert torch.equal(back.interventions["0_gge"].prior, vl.interventions["0_gge"].prior)
    # with a question branch the widths are checked against the saved tensors as before
    path = tmp_path / "intervention_config.json"
    meta = json.loads(path.read_text())
    meta["interventions"][0]["bias"] = "both"
    meta["interventions"][0]["hidden_sizes"] = [10**6]
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="refusing to allocate"):
        causalvl.load(tmp_path, _tiny_vqa())
