"""The frozen family specs, the lazy family table, and the import direction of the adapters."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HF_FAMILIES, inputs_for

import causalvl
from causalvl.adapters import AdapterSpec, ModelAdapter, get_adapter, register_adapter
from causalvl.adapters.registry import (
    _REGISTRY,
    ADAPTER_TABLE,
    adapter_class,
    generative_families,
    known_families,
)
from causalvl.adapters.spec import FAMILY_SPECS, MIRRORED_FIELDS
from causalvl.decoding.tiny import TINY_FAMILIES, tiny_generative_model
from causalvl.errors import ConfigError, UnsupportedModelError

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        check=True,
    )
    return out.stdout.strip()


def test_every_built_in_family_has_a_spec_the_class_reads():
    for key in known_families():
        cls = adapter_class(key)
        spec = cls.spec
        assert isinstance(spec, AdapterSpec), key
        assert spec is FAMILY_SPECS[spec.family], key
        for name in MIRRORED_FIELDS:  # the class attributes mirror the spec
            value = getattr(spec, name)
            assert getattr(cls, name) == (dict(value) if hasattr(value, "keys") else value), (
                key,
                name,
            )
    assert set(FAMILY_SPECS) == {adapter_class(k).spec.family for k in known_families()}
    assert generative_families() == sorted(
        k for k in known_families() if adapter_class(k).spec.generative
    )


def test_specs_are_frozen():
    spec = FAMILY_SPECS["vilt"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.vision_keys = ("x",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.roles["fused"] = "elsewhere"  # type: ignore[index]
    changed = spec.replace(vision_mask_key=None)
    assert changed.vision_mask_key is None and spec.vision_mask_key == "pixel_mask"


@pytest.mark.parametrize("family", sorted(HF_FAMILIES))
def test_spec_keys_and_roles_match_the_tiny_models(hf_models, family):
    model = hf_models[family]
    adapter = get_adapter(model)
    spec = adapter.spec
    inputs = inputs_for(family, batch=2)
    declared = set(spec.vision_keys) | set(spec.language_keys) | set(spec.extra_keys)
    assert set(inputs) <= declared, (family, set(inputs) - declared)
    params = set(inspect.signature(model.forward).parameters)
    assert set(spec.required_keys) <= params and declared <= params
    names = [n for n, _ in model.named_modules()]
    for role, path in spec.roles.items():
        if role.endswith("_layers"):  # a regex over several blocks (CATT)
            assert any(re.fullmatch(path, n) for n in names), (family, role)
        else:
            assert adapter.resolve(role)[0] == path, (family, role)
    with torch.no_grad():
        output = model(**inputs)
    logits = adapter.logits(output, inputs)
    if spec.kind == "contrastive":
        assert logits.shape == (2, 2)
    else:
        assert logits.dim() == 2 and logits.shape[0] == 2
    if spec.logits_field is not None:
        assert logits is getattr(output, spec.logits_field)
    if spec.vision_mask_key is not None:
        assert spec.vision_mask_key in spec.vision_keys and spec.vision_mask_key in inputs


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generative_specs_match_the_tiny_models(family):
    model, inputs = tiny_generative_model(family, batch_size=1)
    adapter = get_adapter(model)
    spec = adapter.spec
    assert spec.generative and adapter.generative
    declared = set(spec.vision_keys) | set(spec.language_keys)
    assert set(inputs) <= declared, (family, set(inputs) - declared)
    assert set(spec.pixel_keys) <= set(spec.vision_keys)
    assert set(spec.per_token_keys) <= set(spec.language_keys)
    for role in spec.roles:
        adapter.resolve(role)
    for attr in spec.marker_attrs:
        assert isinstance(getattr(model.config, attr), int)


def test_a_subclass_written_with_class_attributes_gets_its_spec():
    class Mine(adapter_class("clip")):
        roles = {"vision_features": "visual_projection"}
        allows_no_image = False

    assert Mine.spec.roles == {"vision_features": "visual_projection"}
    assert Mine.spec.logits_field == "logits_per_image"  # inherited from the CLIP spec
    assert Mine.spec.kind == "contrastive"

    class Plain(ModelAdapter):
        vision_keys = ("image",)
        language_keys = ("text",)
        vision_mask_key = "image_mask"

    assert Plain.spec.vision_keys == ("image",) and Plain.spec.vision_mask_key == "image_mask"
    generic = causalvl.GenericAdapter(vision_keys=["a"], language_keys=["b"], kind="contrastive")
    assert generic.spec.vision_keys == ("a",) and generic.spec.kind == "contrastive"


def test_register_adapter_still_works_and_wins_over_the_table():
    from causalvl.models import TinyVQA

    class RegisteredNet(torch.nn.Module):
        def forward(self, image):
            return image

    @register_adapter("RegisteredNet", "TinyVQA")
    class NetAdapter(ModelAdapter):
        family = "registered_net"
        vision_keys = ("image",)

    try:
        assert type(get_adapter(RegisteredNet())) is NetAdapter
        assert type(get_adapter(TinyVQA(num_answers=3, vocab_size=10))) is NetAdapter
        assert "registered_net" not in known_families()  # keys, not family names, are listed
    finally:
        _REGISTRY.pop("RegisteredNet", None)
        _REGISTRY.pop("TinyVQA", None)
    assert type(get_adapter(TinyVQA(num_answers=3, vocab_size=10))).__name__ == "TinyVQAAdapter"
    with pytest.raises(UnsupportedModelError, match="known families"):
        get_adapter(RegisteredNet(), "no_such_family")


def test_the_table_lists_every_reference_model_by_class_name():
    from causalvl import models

    for name in ("TinyVQA", "TinyContrastive", "TinyRegionClassifier", "FrozenFeatureVQA"):
        assert ADAPTER_TABLE[name].startswith("causalvl.models:")
        assert adapter_class(name) is getattr(models, name + "Adapter")


def test_nothing_registers_on_import_and_base_never_imports_the_families():
    out = _python(
        "import sys, torch, causalvl.models\n"
        "from causalvl.adapters.registry import _REGISTRY\n"
        "from causalvl.adapters import get_adapter\n"
        "a = get_adapter(causalvl.models.TinyVQA(num_answers=3, vocab_size=10))\n"
        "print(len(_REGISTRY), 'causalvl.adapters.families' in sys.modules,"
        " 'causalvl.adapters.generative' in sys.modules, type(a).__name__)"
    )
    assert out == "0 False False TinyVQAAdapter"


@pytest.mark.parametrize(
    "module",
    [
        "causalvl.adapters.families",
        "causalvl.adapters.generative",
        "causalvl.adapters.state",
        "causalvl.adapters.transforms",
        "causalvl.adapters.spec",
        "causalvl.adapters.registry",
    ],
)
def test_adapter_modules_import_on_their_own(module):
    assert _python(f"import {module}; print('ok')") == "ok"


def test_adapter_modules_import_one_way():
    """Inside the adapters package, families / generative / state import base; base, spec,
    registry and transforms never import them. (tests/test_layering.py checks the layers
    between packages.)"""
    import ast

    folder = ROOT / "causalvl" / "adapters"
    lower = {
        "base": {"transforms", "registry", "spec"},
        "spec": set(),
        "registry": set(),
        "transforms": set(),
    }
    for name, allowed in lower.items():
        tree = ast.parse((folder / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported = {node.module} if node.module else {a.name for a in node.names}
                assert imported <= allowed, (name, imported)


def test_a_class_cannot_set_spec_and_a_disagreeing_attribute():
    with pytest.raises(ConfigError, match="sets both spec and vision_keys"):

        class Both(ModelAdapter):
            spec = FAMILY_SPECS["clip"]
            vision_keys = ("image",)

    class Agreeing(ModelAdapter):  # the same value twice is fine
        spec = FAMILY_SPECS["clip"]
        vision_keys = ("pixel_values",)

    assert Agreeing.vision_keys == ("pixel_values",)


def test_attributes_set_on_an_instance_describe_the_bound_adapter():
    class Net(torch.nn.Module):
        def forward(self, image, text):
            return image.sum(-1, keepdim=True) + text.sum(-1, keepdim=True)

    class OwnInit(ModelAdapter):
        def __init__(self):
            super().__init__()
            self.vision_keys = ("image",)
            self.language_keys = ("text",)

    vl = causalvl.intervene(Net(), causalvl.IdentityConfig(), adapter=OwnInit())
    assert vl.adapter.spec.vision_keys == ("image",)
    out = vl.adapter.counterfactual_inputs(
        {"image": torch.ones(2, 3), "text": torch.ones(2, 3)}, remove="vision"
    )
    assert not bool(out["image"].any()) and bool(out["text"].all())


def test_setting_a_mirrored_attribute_on_a_bound_adapter_updates_its_spec():
    class Net(torch.nn.Module):
        def forward(self, image, text):
            return image.sum(-1, keepdim=True) + text.sum(-1, keepdim=True)

    adapter = causalvl.GenericAdapter(vision_keys=["image"], language_keys=["text"])
    bound = adapter.bind(Net())
    inputs = {"image": torch.ones(2, 3), "text": torch.ones(2, 3)}
    bound.vision_keys = ("text",)  # now "text" is what removing vision blanks
    assert bound.spec.vision_keys == bound.vision_keys == ("text",)
    out = bound.counterfactual_inputs(inputs, remove="vision")
    assert bool(out["image"].all()) and not bool(out["text"].any())
    bound.language_keys = ()
    assert bound.spec.language_keys == ()
    assert adapter.spec.vision_keys == ("image",)  # the user's adapter is not touched
    assert type(bound).spec.vision_keys == ()  # nor the class's spec
    bound.roles = {"fused": "net"}
    assert dict(bound.spec.roles) == {"fused": "net"}


def test_adapter_specs_hash_and_compare_by_value():
    clip = FAMILY_SPECS["clip"]
    same = dataclasses.replace(clip)
    assert same == clip and hash(same) == hash(clip)
    assert len({clip, same, FAMILY_SPECS["siglip"]}) == 2
    assert {spec: name for name, spec in FAMILY_SPECS.items()}[FAMILY_SPECS["vilt"]] == "vilt"


def test_removal_modes_come_from_the_transform_table():
    from causalvl.adapters.base import LANGUAGE_MODES, VISION_MODES
    from causalvl.adapters.transforms import COUNTERFACTUAL_MODES

    assert VISION_MODES == ("zeros", "mean", "shuffle", "noise", "mask")
    assert LANGUAGE_MODES == ("zeros", "mask", "shuffle")
    assert set(COUNTERFACTUAL_MODES) == {("vision", m) for m in VISION_MODES} | {
        ("language", m) for m in LANGUAGE_MODES
    }
