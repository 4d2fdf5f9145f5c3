"""The intervention protocol: the hook context of one call, the declared methods the wrapper
calls, the former ``install(hooks, state_box)`` signature, the prior capability, the string
registries and the direction of imports."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from conftest import make_visual_bert
from torch import nn

import causalvl
from causalvl import BackdoorConfig, ConfounderDictionary, HookContext, Intervention, implements
from causalvl.config import (
    BUILTIN_INTERVENTION_CONFIGS,
    InterventionConfig,
    intervention_config_class,
    intervention_types,
)
from causalvl.errors import ConfigError, InterventionStateError
from causalvl.interventions.base import BUILTIN_IMPLEMENTATIONS, implementation_for


def _net() -> nn.Module:
    torch.manual_seed(0)
    return causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)


def _batch(n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(n, 3, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, (n, 5), generator=g),
    }


# -- a recording intervention: what its hooks see in each pass ---------------------------
@dataclass(kw_only=True)
class _RecordConfig(InterventionConfig):
    type = "test_protocol_record"
    counterfactual: bool = True


@implements(_RecordConfig)
class _Record(Intervention):
    def __init__(self, config, model, adapter):
        super().__init__(config, model, adapter)
        self._model = model
        self.calls = 0

    def install(self, hooks, context: HookContext) -> None:
        self.calls += 1
        store = context.storage(self)
        assert store == {}, "storage must start empty for every call"
        store["call"] = self.calls
        store["passes"] = []

        def hook(mod, args, kwargs, out):
            store["passes"].append(
                (context.pass_name, context.is_factual, context.inputs["pixel_values"].sum())
            )

        hooks.add_forward_hook(self._model.vision_encoder, hook)

    def combine(self, state) -> None:
        if self.config.counterfactual:
            state.counterfactual_logits = state.counterfactual("vision", "zeros")
        store = state.context.storage(self)
        assert store["call"] == self.calls  # what this call's hooks stored, never an older call's
        state.effects["passes"] = torch.tensor([float(p[1]) for p in store["passes"]])
        state.effects["pixel_sums"] = torch.stack([p[2] for p in store["passes"]])


def test_hook_context_marks_the_counterfactual_pass_and_is_fresh_per_call():
    vl = causalvl.intervene(_net(), _RecordConfig())
    batch = _batch()
    for _ in range(2):  # the second call starts with empty storage (asserted in install)
        out = vl(**batch)
        assert out.effects["passes"].tolist() == [1.0, 0.0]  # factual, then counterfactual
        sums = out.effects["pixel_sums"]
        assert float(sums[0]) == pytest.approx(float(batch["pixel_values"].sum()))
        assert float(sums[1]) == 0.0  # the counterfactual pass saw its own (zeroed) inputs


def test_hook_context_pass_marker_is_restored_after_an_error():
    ctx = HookContext(inputs={"a": 1})
    with pytest.raises(RuntimeError), ctx.counterfactual_pass({"a": 0}, name="cf"):
        assert (ctx.inputs, ctx.is_factual, ctx.pass_name) == ({"a": 0}, False, "cf")
        raise RuntimeError("boom")
    assert (ctx.inputs, ctx.is_factual, ctx.pass_name) == ({"a": 1}, True, "factual")
    assert ctx.factual_inputs == {"a": 1}


def _backdoor_vl():
    g = torch.Generator().manual_seed(0)
    prior = torch.rand(4, generator=g) + 0.1
    d = ConfounderDictionary.from_tensors(torch.randn(4, 16, generator=g), prior / prior.sum())
    return causalvl.intervene(_net(), BackdoorConfig(dictionary=d))


def _holds_call_state(module: nn.Module) -> list[str]:
    """Attributes of ``module`` that keep something of a forward call (a dict of tensors or
    inputs) after the call has ended."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_modules")
        and isinstance(value, dict)
        and name not in ("_parameters", "_buffers", "_non_persistent_buffers_set")
        and any(isinstance(v, (torch.Tensor, tuple, dict)) for v in value.values())
        and not name.startswith("_forward")
        and not name.startswith("_backward")
        and not name.startswith("_state_dict")
        and not name.startswith("_load_state_dict")
    ]


def test_an_error_mid_forward_leaves_no_stale_state_on_the_intervention():
    vl = _backdoor_vl()
    impl = vl.interventions["0_backdoor"]
    batch = _batch()
    expected = vl(**batch).features["backdoor_expectation"]

    def fail(mod, args, out):
        raise RuntimeError("the model failed after the edit")

    handle = vl.base_model.classifier.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="failed after the edit"):
            vl(**batch)
    finally:
        handle.remove()
    assert _holds_call_state(impl) == []
    assert getattr(impl, "_box", None) is None
    other = _batch(seed=1)
    out = vl(**other)  # a fresh call: its own expectation, not the failed call's
    assert not torch.equal(out.features["backdoor_expectation"], expected)
    torch.testing.assert_close(vl(**batch).features["backdoor_expectation"], expected)


# -- the former install(hooks, state_box) signature ----------------------------------------
@dataclass(kw_only=True)
class _LegacyConfig(InterventionConfig):
    type = "test_protocol_legacy"


@implements(_LegacyConfig)
class _Legacy(Intervention):
    def __init__(self, config, model, adapter):
        super().__init__(config, model, adapter)
        self._model = model

    def install(self, hooks, state_box):
        state_box["seen"] = []

        def hook(mod, args, kwargs, out):
            state_box["seen"].append(float(state_box["inputs"]["pixel_values"].sum()))
            return out * 2

        hooks.add_forward_hook(self._model.classifier, hook)

    def combine(self, state):
        state.counterfactual_logits = state.counterfactual("vision", "zeros")


def test_legacy_install_signature_still_works_with_a_future_warning():
    net = _net()
    with pytest.warns(FutureWarning, match=r"install\(hooks, state_box\).*HookContext"):
        vl = causalvl.intervene(net, _LegacyConfig())
    batch = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = vl(**batch)
    torch.testing.assert_close(out.logits, net(**batch) * 2)
    box = HookContext(inputs=batch).legacy_box()
    assert box["inputs"] is batch and list(box) == ["inputs"]
    with pytest.raises(InterventionStateError, match="cannot be replaced"):
        box["inputs"] = {}
    assert box.inputs is batch and box.is_factual and box.storage("x") == {}


@dataclass(kw_only=True)
class _LegacyBoxConfig(InterventionConfig):
    type = "test_protocol_legacy_box"


@implements(_LegacyBoxConfig)
class _LegacyBox(_Legacy):
    """The former protocol with the dict under another name: it receives the context."""

    def install(self, hooks, box):
        box["seen"] = []

        def hook(mod, args, kwargs, out):
            box["seen"].append(float(box["inputs"]["pixel_values"].sum()))
            return out * 2

        hooks.add_forward_hook(self._model.classifier, hook)


def test_a_legacy_install_with_another_parameter_name_works_with_a_warning():
    net = _net()
    vl = causalvl.intervene(net, _LegacyBoxConfig())
    batch = _batch()
    with pytest.warns(FutureWarning, match="former state_box dict"):
        out = vl(**batch)
    torch.testing.assert_close(out.logits, net(**batch) * 2)
    ctx = HookContext(inputs=batch)
    with pytest.warns(FutureWarning):
        ctx["mine"] = 1
        assert ctx.get("mine") == 1 and "inputs" in ctx and ctx.pop("mine") == 1


class _LegacyBackdoor(causalvl.interventions.backdoor.BackdoorAdjustment):
    """An old-style subclass of a built-in intervention that calls super().install."""

    def install(self, hooks, state_box):
        super().install(hooks, state_box)


def test_an_old_style_subclass_of_a_builtin_still_works():
    vl = _backdoor_vl()
    expected = vl(**_batch()).logits
    impl = vl.interventions["0_backdoor"]
    impl.__class__ = _LegacyBackdoor  # as if the wrapper had been built from the subclass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(vl(**_batch()).logits, expected)
    assert "backdoor_expectation" in vl(**_batch()).features


# -- declared methods the wrapper calls --------------------------------------------------
@dataclass(kw_only=True)
class _StagedConfig(InterventionConfig):
    type = "test_protocol_staged"


@implements(_StagedConfig)
class _Staged(Intervention):
    epochs: list[tuple[int, int]]

    def __init__(self, config, model, adapter):
        super().__init__(config, model, adapter)
        self.epochs = []

    def stages(self):
        return (("first",), ("second",))

    def set_epoch(self, epoch, num_epochs):
        self.epochs.append((epoch, num_epochs))


def test_stages_and_set_epoch_are_protocol_methods():
    vl = causalvl.intervene(_net(), [causalvl.IdentityConfig(), _StagedConfig()])
    assert vl.stages() == (("first",), ("second",))
    vl.set_epoch(2, 5)
    assert vl.interventions["1_test_protocol_staged"].epochs == [(2, 5)]
    plain = causalvl.intervene(_net(), causalvl.IdentityConfig())
    assert plain.stages() == ((),)
    impl = plain.interventions["0_identity"]
    assert impl.uses_prior is False and impl.takes_over_generation is False
    assert impl.logits_processors(plain.base_model, plain.adapter, {}) == []
    with pytest.raises(InterventionStateError, match="does not take over generation"):
        impl.generate(plain.base_model, plain.adapter)
    with pytest.raises(InterventionStateError, match="uses no answer prior"):
        impl.set_prior(torch.ones(1, 4))


def test_the_prior_capability_replaces_type_checks():
    prior = torch.full((2, 4), 0.25)
    cases = [
        (causalvl.LMHConfig(), True),
        (causalvl.ReweightConfig(), True),
        (causalvl.GGEConfig(bias="distribution", hidden_sizes=(8,)), True),
        (causalvl.GGEConfig(bias="question", hidden_sizes=(8,)), False),
        (causalvl.IdentityConfig(), False),
    ]
    for cfg, needs in cases:
        vl = causalvl.intervene(_net(), cfg)
        assert vl.needs_prior is needs, cfg.type
        if needs:
            vl.set_bias_prior(prior)
            (impl,) = vl.interventions.values()
            assert bool(impl.prior_is_set) and torch.equal(impl.prior, prior)
        else:
            with pytest.raises(ConfigError, match="no intervention that uses"):
                vl.set_bias_prior(prior)
    from causalvl.interventions.ensembles import set_bias_prior

    vl = causalvl.intervene(_net(), causalvl.LMHConfig())
    set_bias_prior(vl.interventions["0_lmh"], prior)  # one intervention still works
    assert bool(vl.interventions["0_lmh"].prior_is_set)
    with pytest.raises(ConfigError, match="expects a wrapped model"):
        set_bias_prior(object(), prior)


def test_implements_refuses_what_is_not_a_config_or_an_intervention():
    with pytest.raises(ConfigError, match="InterventionConfig subclass"):
        implements(dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not an Intervention subclass"):
        implements(_StagedConfig)(dict)  # type: ignore[arg-type]


@dataclass(kw_only=True)
class _OrphanConfig(InterventionConfig):
    type = "test_protocol_orphan"


def test_a_config_without_implementation_names_the_decorator():
    with pytest.raises(ConfigError, match=r"@causalvl.implements\(ConfigClass\)"):
        implementation_for(_OrphanConfig())


# -- the CF-VQA config's new name -----------------------------------------------------------
def test_counterfactual_config_is_a_deprecated_alias_of_cfvqa_config():
    with pytest.warns(FutureWarning, match="CFVQAConfig"):
        old = causalvl.CounterfactualConfig(hidden_sizes=(8,))
    assert isinstance(old, causalvl.CFVQAConfig) and old.type == "cfvqa"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = InterventionConfig.from_dict(old.to_dict())
        assert type(back) is causalvl.CFVQAConfig and back == causalvl.CFVQAConfig(
            hidden_sizes=(8,)
        )


# -- registries: tables of "module:Class" strings ------------------------------------------
def test_the_string_tables_resolve_to_the_registered_classes():
    assert set(BUILTIN_IMPLEMENTATIONS) == set(BUILTIN_INTERVENTION_CONFIGS)
    assert set(BUILTIN_INTERVENTION_CONFIGS) <= set(intervention_types())
    for key, target in BUILTIN_INTERVENTION_CONFIGS.items():
        cls = intervention_config_class(key)
        assert f"{cls.__module__}:{cls.__qualname__}" == target and cls.type == key
        # every built-in config lives in a torch-free config module, apart from its implementation
        assert cls.__module__.endswith(".config"), cls.__module__
        module, _, name = BUILTIN_IMPLEMENTATIONS[key].partition(":")
        assert module != cls.__module__ and module.endswith(".intervention"), module
        impl = getattr(importlib.import_module(module), name)
        assert issubclass(cls, impl.config_class)
        config = InterventionConfig.from_dict({"type": key, **_MINIMAL.get(key, {})})
        assert implementation_for(config) is impl
    with pytest.raises(ConfigError, match="unknown intervention type 'nope'.*'cfvqa'"):
        intervention_config_class("nope")
    with pytest.raises(ConfigError, match="unknown intervention type"):
        InterventionConfig.from_dict({"type": ["not", "a", "key"]})


_MINIMAL = {
    "group_dro": {"num_groups": 2},
    "backdoor": {"num_prototypes": 3, "feature_dim": 4},
}


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_reading_every_builtin_config_imports_no_transformers():
    dicts = {k: {"type": k, **_MINIMAL.get(k, {})} for k in BUILTIN_INTERVENTION_CONFIGS}
    code = f"""
import json, sys
from causalvl.config import InterventionConfig
for d in json.loads({json.dumps(json.dumps(dicts))}).values():
    cfg = InterventionConfig.from_dict(d)
    assert cfg.type == d["type"], (cfg, d)
heavy = sorted(m for m in sys.modules if m == "transformers" or m.startswith(("transformers.",
               "causalvl.wrapper", "causalvl.training", "causalvl.diagnostics")))
print(json.dumps(heavy))
"""
    assert json.loads(_run(code)) == []


def _model_for(key: str) -> tuple[nn.Module, dict[str, Any]]:
    """A small model the built-in type ``key`` applies to, and the ``intervene`` keywords."""
    if key == "catt":
        return make_visual_bert(), {}
    if key == "counterfactual_decoding":
        from causalvl.decoding.tiny import tiny_generative_model

        return tiny_generative_model("llava")[0], {}
    return _net(), {}


def test_reading_every_builtin_config_imports_no_torch():
    dicts = {k: {"type": k, **_MINIMAL.get(k, {})} for k in BUILTIN_INTERVENTION_CONFIGS}
    code = f"""
import json, sys
from causalvl.config import InterventionConfig
configs = [InterventionConfig.from_dict(d) for d in json.loads({json.dumps(json.dumps(dicts))}).values()]
assert [c.type for c in configs] == {json.dumps(list(dicts))}, configs
heavy = sorted(m for m in ("torch", "numpy", "transformers") if m in sys.modules)
assert not heavy, heavy
from causalvl.interventions.base import implementation_for  # now torch may load
print(json.dumps({{c.type: [c.to_dict(), implementation_for(c).__name__] for c in configs}}))
"""
    found = json.loads(_run(code))
    assert {k: name for k, (_, name) in found.items()} == {
        k: target.partition(":")[2] for k, target in BUILTIN_IMPLEMENTATIONS.items()
    }
    # the configs read without torch build working wrappers (here, where torch is loaded)
    for key, (data, _) in found.items():
        config = InterventionConfig.from_dict(data)
        assert config == InterventionConfig.from_dict(dicts[key])
        model, kwargs = _model_for(key)
        vl = causalvl.intervene(model, config, **kwargs)
        assert type(next(iter(vl.interventions.values()))).__name__ == found[key][1]


def test_config_constants_agree_with_the_torch_modules_they_repeat():
    from causalvl.adapters.generative import DEFAULT_DISTURBANCE
    from causalvl.adapters.transforms import COUNTERFACTUAL_MODES, NOISE_STEPS, get_transform
    from causalvl.decoding import config as decoding_config
    from causalvl.interventions.prior_subtraction import config as ps_config

    deterministic = tuple(
        mode
        for (removed, mode), name in COUNTERFACTUAL_MODES.items()
        if removed == "vision" and not get_transform(name).needs_generator
    )
    assert deterministic == ps_config._DETERMINISTIC_MODES
    assert decoding_config.NOISE_STEPS == NOISE_STEPS
    assert decoding_config.DEFAULT_DISTURBANCE == DEFAULT_DISTURBANCE


def test_imports_point_one_way():
    code = """
import json, sys
import causalvl.config
after_config = sorted(m for m in sys.modules if m.startswith("causalvl.interventions"))
import causalvl.interventions
after_pkg = sorted(m for m in sys.modules if m.startswith("causalvl.decoding"))
import causalvl.interventions.confounders
after_confounders = sorted(m for m in sys.modules if m.startswith("causalvl.wrapper"))
print(json.dumps([after_config, after_pkg, after_confounders]))
"""
    assert json.loads(_run(code)) == [[], [], []]


def test_collect_still_accepts_a_wrapped_model():
    vl = causalvl.intervene(_net(), causalvl.IdentityConfig())
    batches = [{**_batch(4), "labels": torch.tensor([0, 1, 0, 1])}]
    from_wrapped = ConfounderDictionary.collect(vl, batches, "vision_features", progress=False)
    from_base = ConfounderDictionary.collect(
        vl.base_model, batches, "vision_features", progress=False
    )
    assert torch.equal(from_wrapped.features, from_base.features)


@pytest.mark.parametrize(
    "intervention",
    [
        {"type": "reweight"},  # needs the prior: it used to be left without one
        {
            "type": "gge",
            "bias": "question",
            "hidden_sizes": [8],
        },  # needs none: it used to be refused
    ],
)
def test_train_command_gives_the_prior_to_whoever_needs_it(tmp_path, intervention):
    from causalvl.runs import train_from_config

    cfg = tmp_path / "run.json"
    cfg.write_text(
        json.dumps(
            {
                "name": intervention["type"],
                "data": {"type": "PriorShiftVQA", "settings": {"num_examples": 60}},
                "model": {"type": "TinyVQA", "hidden": 16},
                "interventions": [intervention],
                "trainer": {"epochs": 1},
            }
        )
    )
    from safetensors.torch import load_file

    run = train_from_config(cfg, out=tmp_path / "out", progress=False)
    weights = load_file(str(run.output_dir / "interventions" / "intervention_weights.safetensors"))
    needs = intervention["type"] == "reweight"
    assert bool(weights[f"0_{intervention['type']}.prior_is_set"]) is needs


# -- generation ----------------------------------------------------------------------------
class _Generating(nn.Module):
    """A model with a generate method that reports what it was given."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x)

    def generate(self, **kwargs):
        return {"generated_by": "base", "logits_processor": kwargs.get("logits_processor")}


def _generic():
    return causalvl.GenericAdapter(vision_keys=["x"], language_keys=[])


@dataclass(kw_only=True)
class _ProcessorConfig(InterventionConfig):
    type = "test_protocol_processor"


@implements(_ProcessorConfig)
class _Processor(Intervention):
    def logits_processors(self, base_model, adapter, inputs):
        return ["mine"]


@dataclass(kw_only=True)
class _OldGenerateConfig(InterventionConfig):
    type = "test_protocol_old_generate"


@implements(_OldGenerateConfig)
class _OldGenerate(Intervention):
    def generate(self, base_model, adapter, *args, **kwargs):  # no takes_over_generation
        return {"generated_by": "intervention"}


def test_generate_adds_declared_logits_processors():
    vl = causalvl.intervene(_Generating(), _ProcessorConfig(), adapter=_generic())
    out = vl.generate(x=torch.ones(1, 4), logits_processor=["user"])
    assert out == {"generated_by": "base", "logits_processor": ["user", "mine"]}
    with vl.disable_interventions():
        assert vl.generate(x=torch.ones(1, 4))["logits_processor"] is None


def test_an_undeclared_generate_override_still_takes_over_with_a_warning():
    with pytest.warns(FutureWarning, match="takes_over_generation = True"):
        vl = causalvl.intervene(_Generating(), _OldGenerateConfig(), adapter=_generic())
    assert vl.generate(x=torch.ones(1, 4)) == {"generated_by": "intervention"}


def test_the_wrapper_calls_declared_methods_only():
    """model.py reaches interventions through the declared protocol, never by probing them."""
    import inspect
    import re

    import causalvl.wrapper

    source = inspect.getsource(causalvl.wrapper.IntervenedModel)
    probes = re.findall(r"(?:getattr|hasattr)\((?:impl|intervention|m)\b[^)]*\)", source)
    assert probes == []


def test_train_command_reads_an_old_field_name_with_a_warning(tmp_path):
    from causalvl.runs import train_from_config

    cfg = tmp_path / "run.json"
    run_config = {
        "name": "gge-old-keys",
        "data": {"type": "PriorShiftVQA", "settings": {"num_examples": 60}},
        "model": {"type": "TinyVQA", "hidden": 16},
        "interventions": [{"type": "gge", "bias": "question", "hidden": [8]}],
        "trainer": {"epochs": 1},
    }
    cfg.write_text(json.dumps(run_config))
    with pytest.warns(FutureWarning, match="hidden_sizes"):
        run = train_from_config(cfg, out=tmp_path / "out", progress=False)
    saved = json.loads((run.output_dir / "interventions" / "intervention_config.json").read_text())
    assert "hidden_sizes" in json.dumps(saved) and '"hidden"' not in json.dumps(saved)
    run_config["interventions"] = [{"type": "gge", "bias": "question", "hiden_sizes": [8]}]
    cfg.write_text(json.dumps(run_config))
    with pytest.raises(ConfigError, match="did you mean 'hidden_sizes'"):
        train_from_config(cfg, out=tmp_path / "out2", progress=False)


_FORMER_PATHS = {
    "causalvl.interventions.counterfactual": (
        "AnswerBranch",
        "CFVQAConfig",
        "Counterfactual",
        "CounterfactualConfig",
        "PriorSubtraction",
        "PriorSubtractionConfig",
        "build_branch",
    ),
    "causalvl.interventions.ensembles": (
        "BiasProductConfig",
        "GGEConfig",
        "GreedyGradientEnsemble",
        "LMHConfig",
        "LearnedMixin",
        "bias_product_loss",
        "gge_decompose_loss",
        "gge_pseudo_label",
        "gge_schedule_weight",
        "greedy_gradient_loss",
        "greedy_gradient_softmax_ce_loss",
        "lmh_bce_loss",
        "lmh_softmax_loss",
        "prior_log_probs",
        "question_type_prior",
        "set_bias_prior",
    ),
    "causalvl.interventions.reweight": ("Reweight", "ReweightConfig", "reweight_loss"),
    "causalvl.interventions.group_dro": (
        "GroupDRO",
        "GroupDROConfig",
        "group_dro_update",
        "group_mean_losses",
        "per_example_loss",
    ),
    "causalvl.interventions.backdoor": (
        "BackdoorAdjustment",
        "BackdoorConfig",
        "NWGMAttention",
        "VCRCNNHead",
        "vc_rcnn_loss",
    ),
    "causalvl.interventions.catt": (
        "CATTConfig",
        "CausalAttention",
        "CrossSampleAttention",
        "cross_sample_attention",
        "find_attention_blocks",
    ),
    "causalvl.interventions.rubi": ("RUBi", "RUBiConfig"),
}


@pytest.mark.parametrize("path", sorted(_FORMER_PATHS))
def test_former_module_paths_still_export_their_names(path):
    import importlib

    module = importlib.import_module(path)
    for name in _FORMER_PATHS[path]:
        assert getattr(module, name) is not None, f"{path}.{name}"
        assert name in module.__all__, f"{path}.__all__ lacks {name}"
