"""The wrapper: identity equality, hook hygiene, counterfactual inputs, save/load, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from conftest import HF_FAMILIES, inputs_for
from torch import nn

import causalvl
from causalvl.adapters.base import LANGUAGE_MODES, VISION_MODES
from causalvl.config import InterventionConfig
from causalvl.hooks import count_hooks
from causalvl.interventions.base import Intervention, implements


def _equal_run(model, vl, inputs, train: bool) -> None:
    model.train(train)
    vl.train(train)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        bare = vl.adapter.logits(model(**inputs), inputs)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        wrapped = vl(**inputs).logits
    assert torch.equal(bare, wrapped)


@pytest.mark.parametrize("train", [False, True])
def test_identity_equals_bare_model_for_every_family(hf_models, hf_family, train):
    model = hf_models[hf_family]
    inputs = inputs_for(hf_family)
    vl = causalvl.intervene(model, causalvl.IdentityConfig(capture_roles=("vision_features",)))
    _equal_run(model, vl, inputs, train)
    assert count_hooks(model) == 0
    assert vl.unwrap() is model


def test_identity_equals_bare_tinyvqa_and_generic_module():
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    batch = {"pixel_values": torch.rand(3, 3, 8, 8), "input_ids": torch.randint(1, 20, (3, 5))}
    vl = causalvl.intervene(net, causalvl.IdentityConfig(capture_roles=("fused",)))
    assert torch.equal(vl(**batch).logits, net(**batch))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.img = nn.Linear(6, 8)
            self.txt = nn.Embedding(10, 8)
            self.drop = nn.Dropout(0.5)
            self.head = nn.Linear(8, 3)

        def forward(self, image, tokens):
            return {"scores": self.head(self.drop(self.img(image) * self.txt(tokens).mean(1)))}

    custom = Custom()
    adapter = causalvl.GenericAdapter(
        vision_keys=["image"],
        language_keys=["tokens"],
        logits=lambda out: out["scores"],
        roles={"vision_features": "img", "language_features": "txt"},
    )
    vl = causalvl.intervene(
        custom,
        causalvl.IdentityConfig(capture_roles=("vision_features", "language_features")),
        adapter=adapter,
    )
    inputs = {"image": torch.randn(4, 6), "tokens": torch.randint(0, 10, (4, 3))}
    for train in (False, True):
        _equal_run(custom, vl, inputs, train)
    out = vl(**inputs)
    assert out.features["vision_features"].shape == (4, 8)
    assert out.features["language_features"].shape == (4, 8)  # (B, L, D) pooled over L
    assert count_hooks(custom) == 0


def test_plain_callable_is_wrapped_and_unwrapped():
    def fn(x, q):
        return x * 2 + q

    adapter = causalvl.GenericAdapter(vision_keys=["x"], language_keys=["q"])
    vl = causalvl.intervene(fn, causalvl.IdentityConfig(), adapter=adapter)
    x, q = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(vl(x=x, q=q).logits, fn(x, q))
    assert vl.unwrap() is fn
    with pytest.raises(causalvl.ConfigError, match="explicit adapter"):
        causalvl.intervene(fn, causalvl.IdentityConfig())


class _Boom(nn.Module):
    def forward(self, *args, **kwargs):
        raise RuntimeError("boom")


def test_no_hooks_remain_after_a_forward_that_raised(hf_models):
    model = hf_models["vilt"]
    own = model.vilt.pooler.register_forward_hook(lambda *a: None)  # a hook causalvl must not touch
    vl = causalvl.intervene(
        model,
        causalvl.IdentityConfig(capture_roles=("vision_features", "language_features", "fused")),
    )
    original = model.classifier
    model.classifier = _Boom()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            vl(**inputs_for("vilt"))
    finally:
        model.classifier = original
    assert count_hooks(model) == 1 and len(model.vilt.pooler._forward_hooks) == 1
    own.remove()
    assert count_hooks(model) == 0


def test_nothing_is_set_on_the_users_model(hf_models):
    model = hf_models["clip"]
    before = set(vars(model)) | {n for n, _ in model.named_modules()}
    vl = causalvl.intervene(model, causalvl.IdentityConfig(capture_roles=("vision_features",)))
    vl(**inputs_for("clip"))
    after = set(vars(model)) | {n for n, _ in model.named_modules()}
    assert before == after


def test_disable_interventions_and_double_wrap():
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    vl = causalvl.intervene(net, _ScaleConfig(scale=3.0))
    batch = {"pixel_values": torch.rand(2, 3, 8, 8), "input_ids": torch.randint(1, 20, (2, 5))}
    scaled = vl(**batch).logits
    assert torch.allclose(scaled, 3.0 * net(**batch))
    with vl.disable_interventions():
        assert torch.equal(vl(**batch).logits, net(**batch))
    assert torch.allclose(vl(**batch).logits, scaled)
    with pytest.raises(causalvl.AlreadyIntervenedError, match="unwrap"):
        causalvl.intervene(vl, causalvl.IdentityConfig())


def test_output_is_frozen_with_the_same_fields_every_call():
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    vl = causalvl.intervene(net, causalvl.IdentityConfig())
    batch = {"pixel_values": torch.rand(2, 3, 8, 8), "input_ids": torch.randint(1, 20, (2, 5))}
    out = vl(**batch)
    names = [f.name for f in dataclasses.fields(out)]
    assert names == [
        "logits",
        "factual_logits",
        "counterfactual_logits",
        "effects",
        "branch_logits",
        "features",
        "raw_output",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.logits = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        out.effects["te"] = out.logits  # type: ignore[index]
    with vl.disable_interventions():
        assert [f.name for f in dataclasses.fields(vl(**batch))] == names


# -- counterfactual inputs --------------------------------------------------------------------


def _modes(adapter, remove):
    modes = VISION_MODES if remove == "vision" else LANGUAGE_MODES
    out = []
    for mode in modes:
        if mode == "mask" and remove == "vision" and adapter.vision_mask_key is None:
            continue
        if (
            mode == "mask"
            and remove == "language"
            and "attention_mask" not in adapter.language_keys
        ):
            continue
        out.append(mode)
    return out


@pytest.mark.parametrize("remove", ["vision", "language"])
def test_counterfactual_inputs_change_only_the_removed_part(hf_models, hf_family, remove):
    model = hf_models[hf_family]
    vl = causalvl.intervene(model, causalvl.IdentityConfig())
    adapter = vl.adapter
    inputs = inputs_for(hf_family, batch=4)
    snapshot = {k: v.clone() for k, v in inputs.items()}
    removed_keys = set(adapter.vision_keys if remove == "vision" else adapter.language_keys)
    for mode in _modes(adapter, remove):
        gen = torch.Generator().manual_seed(0)
        cf = adapter.counterfactual_inputs(inputs, remove=remove, mode=mode, generator=gen)
        assert set(cf) >= set(inputs)
        changed = set(cf) - set(inputs)  # keys the counterfactual adds (e.g. a mask)
        for key, value in inputs.items():
            assert cf[key].shape == value.shape and cf[key].dtype == value.dtype, (mode, key)
            if not torch.equal(cf[key], value):
                changed.add(key)
        assert changed, f"{hf_family} {remove} {mode}: nothing changed"
        assert changed <= removed_keys, (
            f"{hf_family} {remove} {mode}: changed {changed - removed_keys}"
        )
        for key, value in snapshot.items():  # the caller's inputs are untouched
            assert torch.equal(inputs[key], value)
        vl(**cf)  # the counterfactual inputs run through the model


def test_shuffle_is_a_derangement_and_noise_is_seeded():
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    adapter = causalvl.intervene(net, causalvl.IdentityConfig()).adapter
    pix = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 8, 8).contiguous()
    inputs = {"pixel_values": pix, "input_ids": torch.randint(1, 20, (5, 4))}
    cf = adapter.counterfactual_inputs(
        inputs, mode="shuffle", generator=torch.Generator().manual_seed(3)
    )
    firsts = cf["pixel_values"][:, 0, 0, 0]
    assert sorted(firsts.tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert (firsts != torch.arange(5.0)).all()
    a = adapter.counterfactual_inputs(
        inputs, mode="noise", generator=torch.Generator().manual_seed(1)
    )
    b = adapter.counterfactual_inputs(
        inputs, mode="noise", generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    adapter.fit_vision_mean([inputs])
    mean = adapter.counterfactual_inputs(inputs, mode="mean")["pixel_values"]
    assert torch.allclose(mean, torch.full_like(pix, 2.0))
    with pytest.raises(causalvl.ConfigError, match="no vision mask"):
        adapter.counterfactual_inputs(inputs, mode="mask")
    with pytest.raises(causalvl.ConfigError, match="choose one of"):
        adapter.counterfactual_inputs(inputs, mode="blur")


# -- an intervention with parameters (also shows the extension points) -------------------------


@dataclass(kw_only=True)
class _ScaleConfig(InterventionConfig):
    type = "test_scale"
    scale: float = 1.0

    def validate(self) -> None:
        self._check_positive("scale")


@implements(_ScaleConfig)
class _Scale(Intervention):
    def __init__(self, config, model, adapter):
        super().__init__(config, model, adapter)
        self.scale = nn.Parameter(torch.tensor(float(config.scale)))
        self.register_buffer("offset", torch.zeros(4))

    def combine(self, state):
        state.logits = state.logits * self.scale + self.offset[: state.logits.shape[-1]]


def test_to_dtype_moves_intervention_parameters():
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    vl = causalvl.intervene(net, _ScaleConfig(scale=2.0))
    vl.to(torch.float64)
    assert vl.interventions["0_test_scale"].scale.dtype == torch.float64
    assert vl.interventions["0_test_scale"].offset.dtype == torch.float64
    batch = {
        "pixel_values": torch.rand(2, 3, 8, 8, dtype=torch.float64),
        "input_ids": torch.randint(1, 20, (2, 5)),
    }
    assert vl(**batch).logits.dtype == torch.float64
    vl.to(torch.float32)
    assert vl.interventions["0_test_scale"].scale.dtype == torch.float32
    vl.to("cpu")
    assert vl.interventions["0_test_scale"].scale.device.type == "cpu"


# -- save / load ------------------------------------------------------------------------------


def test_save_load_restores_weights_and_config(tmp_path):
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    vl = causalvl.intervene(
        net, [_ScaleConfig(scale=2.5), causalvl.IdentityConfig(capture_roles=("fused",))]
    )
    with torch.no_grad():
        vl.interventions["0_test_scale"].offset.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    vl.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "intervention_config.json",
        "intervention_weights.safetensors",
    ]
    meta = json.loads((tmp_path / "intervention_config.json").read_text())
    assert meta["interventions"][0] == {
        "type": "test_scale",
        "causalvl_version": causalvl.__version__,
        "init_seed": None,
        "scale": 2.5,
    }
    restored = causalvl.load(tmp_path, net)
    assert restored.configs == vl.configs
    for (k1, v1), (k2, v2) in zip(
        vl.interventions.state_dict().items(), restored.interventions.state_dict().items()
    ):
        assert k1 == k2 and torch.equal(v1, v2)
    batch = {"pixel_values": torch.rand(2, 3, 8, 8), "input_ids": torch.randint(1, 20, (2, 5))}
    assert torch.equal(vl(**batch).logits, restored(**batch).logits)


def test_load_rejects_corrupted_and_mismatched_files(tmp_path):
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    vl = causalvl.intervene(net, _ScaleConfig(scale=2.0))
    vl.save_pretrained(tmp_path / "ok")
    with pytest.raises(causalvl.CheckpointError, match="missing"):
        causalvl.load(tmp_path / "nothing", net)
    # corrupted weights
    bad = tmp_path / "bad"
    vl.save_pretrained(bad)
    (bad / "intervention_weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(causalvl.CheckpointError, match="corrupted"):
        causalvl.load(bad, net)
    # corrupted config
    badcfg = tmp_path / "badcfg"
    vl.save_pretrained(badcfg)
    (badcfg / "intervention_config.json").write_text("{not json")
    with pytest.raises(causalvl.CheckpointError, match="corrupted"):
        causalvl.load(badcfg, net)
    # mismatched: weights of another intervention list
    other = tmp_path / "other"
    causalvl.intervene(net, causalvl.IdentityConfig()).save_pretrained(other)
    (other / "intervention_config.json").write_text(
        (tmp_path / "ok" / "intervention_config.json").read_text()
    )
    with pytest.raises(causalvl.CheckpointError, match="does not match"):
        causalvl.load(other, net)


def test_from_pretrained_offline_then_intervene(tmp_path, hf_models):
    from transformers import ViltForQuestionAnswering

    hf_models["vilt"].save_pretrained(tmp_path / "vilt")
    model = ViltForQuestionAnswering.from_pretrained(
        tmp_path / "vilt", local_files_only=True
    ).eval()
    vl = causalvl.intervene(model, causalvl.IdentityConfig())
    inputs = inputs_for("vilt")
    assert not vl.training  # the wrapper starts in the base model's mode
    with torch.random.fork_rng():  # ViLT draws a random patch order in every forward
        torch.manual_seed(0)
        wrapped = vl(**inputs).logits
        torch.manual_seed(0)
        bare = hf_models["vilt"].eval()(**inputs).logits
    assert torch.equal(wrapped, bare)


# -- configs ----------------------------------------------------------------------------------


def test_config_validation_and_json_round_trip(tmp_path):
    with pytest.raises(causalvl.ConfigError, match=r"_ScaleConfig.scale = -1.0 is invalid"):
        _ScaleConfig(scale=-1.0)
    cfg = _ScaleConfig(scale=0.5)
    assert InterventionConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert InterventionConfig.from_json(tmp_path / "c.json") == cfg
    with pytest.warns(UserWarning, match="unknown keys"):
        assert _ScaleConfig.from_dict({"scale": 0.5, "future_option": 1}) == cfg
    with pytest.raises(causalvl.ConfigError, match="unknown intervention type"):
        InterventionConfig.from_dict({"type": "nope"})
    with pytest.raises(causalvl.ConfigError, match="capture_roles"):
        causalvl.IdentityConfig(capture_roles="fused")
    with pytest.raises(causalvl.ConfigError, match="at least one"):
        causalvl.intervene(causalvl.models.TinyVQA(vocab_size=5, num_answers=2), [])


# -- bad input --------------------------------------------------------------------------------


def test_unknown_model_type_names_known_families_and_generic_adapter():
    with pytest.raises(causalvl.UnsupportedModelError) as err:
        causalvl.intervene(nn.Linear(2, 2), causalvl.IdentityConfig())
    msg = str(err.value)
    for fam in ("clip", "siglip", "vilt", "lxmert", "visual_bert"):
        assert fam in msg
    assert "GenericAdapter(vision_keys" in msg


def test_role_that_matches_nothing_lists_close_names(hf_models):
    with pytest.raises(causalvl.NoMatchingModuleError) as err:
        causalvl.intervene(
            hf_models["vilt"], causalvl.IdentityConfig(capture_roles=("vilt.poolr",))
        )
    assert "vilt.pooler" in str(err.value) and "Known roles" in str(err.value)
    targets = {t.role: t.path for t in causalvl.inspect_targets(hf_models["lxmert"])}
    assert targets == {
        "fused": "lxmert.pooler",
        "language_features": "lxmert.embeddings",
        "vision_features": "lxmert.encoder.visn_fc",
        # one language and one relation layer in the tiny model: a single match each
        "attention_layers": "lxmert.encoder.layer.0.attention",
        "vision_attention_layers": "lxmert.encoder.r_layers.0.attention",
    }
    # a role naming several blocks lists its pattern and how many blocks it names
    rows = {t.role: t for t in causalvl.inspect_targets(hf_models["visual_bert"])}
    assert rows["attention_layers"].path == r"visual_bert\.encoder\.layer\.\d+\.attention"
    assert rows["attention_layers"].module_type == "2 x VisualBertAttention"
    assert rows["attention_layers"].error is None


def test_bad_inputs_get_clear_errors(hf_models):
    vl = causalvl.intervene(hf_models["vilt"], causalvl.IdentityConfig())
    inputs = inputs_for("vilt")
    with pytest.raises(causalvl.InputError, match=r"missing \['pixel_values'\]"):
        vl(**{k: v for k, v in inputs.items() if k != "pixel_values"})
    with pytest.raises(causalvl.InputError, match="must be integers"):
        vl(**{**inputs, "input_ids": inputs["input_ids"].float()})
    with pytest.raises(causalvl.InputError, match="must be a floating tensor"):
        vl(**{**inputs, "pixel_values": inputs["pixel_values"].long()})
    with pytest.raises(causalvl.InputError, match="empty batch"):
        vl(**{k: v[:0] for k, v in inputs.items()})
    with pytest.raises(causalvl.InputError, match="no inputs"):
        vl()
    with pytest.raises(causalvl.InputError, match="keyword arguments"):
        vl(inputs["input_ids"])
    # metadata keys in a batch are ignored, a single mapping works
    assert vl(
        {**inputs, "labels": torch.zeros(3, dtype=torch.long), "group": torch.zeros(3)}
    ).logits.shape == (3, 5)


def test_objective_task_loss_forms():
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
    vl = causalvl.intervene(net, causalvl.IdentityConfig())
    batch = {
        "pixel_values": torch.rand(3, 3, 8, 8),
        "input_ids": torch.randint(1, 20, (3, 5)),
        "labels": torch.tensor([0, 3, 1]),
    }
    out = vl(**batch)
    obj = vl.objective(out, batch)
    assert torch.allclose(obj.loss, torch.nn.functional.cross_entropy(out.logits, batch["labels"]))
    soft = torch.rand(3, 4)
    obj = vl.objective(out, {**batch, "labels": soft})
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, soft) * 4
    assert torch.allclose(obj.loss, expected) and set(obj.parts) == {"task"}
    with pytest.raises(causalvl.InputError, match="shape"):
        vl.objective(out, {**batch, "labels": torch.tensor([0, 1])})


def test_import_is_fast_and_lazy():
    code = "import time,sys;t=time.perf_counter();import causalvl;print(time.perf_counter()-t);print(sorted(m for m in ('dowhy','matplotlib','pandas','transformers') if m in sys.modules))"
    best = float("inf")
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split("\n")
        best = min(best, float(out[0]))
        assert out[1] == "[]"
    assert best < 1.5


def test_hf_family_registry_is_complete():
    assert set(HF_FAMILIES) - {"vilt_retrieval"} <= set(causalvl.adapters.known_families())
