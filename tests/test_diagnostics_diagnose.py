"""diagnose(): reliance separation on constructed models, wrapped models, data forms, modes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import causalvl
from causalvl import GenericAdapter
from causalvl.diagnostics import Diagnostics, DiagnosticsConfig, diagnose
from causalvl.diagnostics.reliance import context_boxes, replace_context
from causalvl.errors import ConfigError, InputError

A = 4  # answers


class BlindModel(nn.Module):
    """Answers from the first token only: ignores the image completely."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, image, tokens):
        return self.scale * nn.functional.one_hot(tokens[:, 0] % A, A).float()


class LookingModel(nn.Module):
    """Answers from the image only: the image is a one-hot code of the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.dropout = nn.Dropout(0.5)

    def forward(self, image, tokens):
        return self.scale * image + 0.0 * tokens[:, :1].float()


ADAPTER = dict(vision_keys=["image"], language_keys=["tokens"])


def make_batch(n: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % A
    prior_answer = torch.zeros(n, dtype=torch.long)  # the text always suggests answer 0
    return {
        "image": nn.functional.one_hot(labels, A).float(),
        "tokens": torch.stack([prior_answer, torch.randint(0, 9, (n,), generator=g)], 1),
        "labels": labels,
        "group": labels,
        "bias_aligned": labels == 0,
        "question_type": torch.zeros(n, dtype=torch.long),
    }


class ListDataset(Dataset):
    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["labels"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.batch.items()}

    group_names = ["answer=0", "answer=1", "answer=2", "answer=3"]


def stack(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def run(model, data, **kw) -> Diagnostics:
    return diagnose(model, data, adapter=GenericAdapter(**ADAPTER), progress=False, **kw)


def test_reliance_separates_blind_from_looking_model():
    batch = make_batch()
    blind = run(BlindModel(), batch, name="ood")["ood"]
    look = run(LookingModel(), batch, name="ood")["ood"]
    # the blind model: same answer without the image, no change when the image is swapped
    assert blind.language_prior.prior_agreement == 1.0
    assert blind.language_prior.mean_kl == pytest.approx(0.0, abs=1e-9)
    assert blind.language_prior.image_swap_flip_rate == 0.0
    assert blind.accuracy == 0.25 and blind.bias.accuracy_conflicting == 0.0
    assert blind.bias.accuracy_aligned == 1.0 and blind.bias.gap == 1.0
    # the looking model: image removed -> uniform logits -> argmax 0, right only for label 0
    assert look.language_prior.prior_agreement == 0.25
    assert look.language_prior.mean_kl > 1.0
    assert look.language_prior.image_swap_flip_rate > 0.5
    assert look.accuracy == 1.0 and look.bias.gap == 0.0
    # groups of 8 are below the default minimum group size (20): no worst group, listed
    assert look.groups.worst_group_accuracy is None and look.groups.min_group_size == 20
    assert [g.n for g in look.groups.small_groups] == [8, 8, 8, 8]
    look = run(LookingModel(), batch, name="ood", min_group_size=8)["ood"]
    blind = run(BlindModel(), batch, name="ood", min_group_size=8)["ood"]
    assert look.groups.worst_group_accuracy == 1.0
    assert blind.groups.worst_group_accuracy == 0.0
    assert blind.language_prior.null_accuracy == 0.25


def test_dataset_dataloader_and_mapping_agree_and_names():
    batch = make_batch(24)
    ds = ListDataset(batch)
    d1 = run(LookingModel(), ds, batch_size=5, name="test_id")
    loader = DataLoader(ds, batch_size=7, collate_fn=stack)
    d2 = run(LookingModel(), {"id": loader, "ood": ds})
    assert d1["test_id"].distribution == "id"
    assert d2["id"].distribution == "id" and d2["ood"].distribution == "ood"
    assert d1["test_id"].accuracy == d2["id"].accuracy == d2["ood"].accuracy == 1.0
    assert d1["test_id"].n == 24
    assert [g.name for g in d1["test_id"].groups.per_group] == ListDataset.group_names
    d3 = run(LookingModel(), batch, name="mine", distribution="ood")
    assert d3["mine"].distribution == "ood"
    assert run(LookingModel(), batch)["test"].distribution == "unspecified"


def test_train_eval_modes_restored_and_no_grad():
    model = LookingModel()
    model.train()
    model.dropout.eval()  # a mixed state must come back exactly
    seen = {}

    def hook(mod, args, out):
        seen["training"] = mod.training
        seen["grad"] = torch.is_grad_enabled()

    h = model.register_forward_hook(hook)
    try:
        run(model, make_batch(8))
    finally:
        h.remove()
    assert seen == {"training": False, "grad": False}
    assert model.training is True and model.dropout.training is False


def test_wrapped_model_matches_bare_model():
    batch = make_batch(16)
    base = LookingModel()
    vl = causalvl.intervene(base, causalvl.IdentityConfig(), adapter=GenericAdapter(**ADAPTER))
    d_wrapped = diagnose(vl, batch, progress=False)
    d_bare = run(base, batch)
    assert d_wrapped["test"].accuracy == d_bare["test"].accuracy
    assert d_wrapped["test"].language_prior == d_bare["test"].language_prior
    assert d_wrapped["test"].effects is None  # the identity intervention has no effects


def test_effects_summarised_from_intervention_outputs():
    class WithEffects(nn.Module):
        def forward(self, image, tokens):
            from causalvl.outputs import InterventionOutput

            logits = 5 * image
            return InterventionOutput(
                logits=logits,
                factual_logits=logits,
                effects={"te": logits, "nde": torch.ones_like(logits), "tie": logits - 1},
            )

    d = run(WithEffects(), make_batch(8), metrics=("effects",))["test"]
    te = d.effects.effects["te"]
    assert te.mean_abs == pytest.approx(5 / A)  # one entry of 5 per row of A
    assert te.mean_predicted == 5.0
    assert d.effects.effects["tie"].mean_predicted == 4.0
    assert d.effects.effects["nde"].mean_abs == 1.0
    assert d.groups is None and d.language_prior is None  # only what was asked


def test_tiny_vqa_family_adapter_and_defaults():
    from causalvl.models import TinyVQA

    torch.manual_seed(0)
    batch = {
        "pixel_values": torch.rand(12, 3, 8, 8),
        "input_ids": torch.randint(1, 20, (12, 5)),
        "labels": torch.randint(0, 4, (12,)),
    }
    d = diagnose(TinyVQA(vocab_size=20, num_answers=4), batch, progress=False, ece_bins=5)
    sp = d["test"]
    assert sp.calibration.n_bins == 5 and sp.groups is None and sp.bias is None
    assert sp.language_prior is not None
    assert d.config["ece_bins"] == 5


def test_seeded_and_repeatable():
    batch = make_batch(32)
    a = run(LookingModel(), batch, seed=3, null_vision_mode="noise")
    b = run(LookingModel(), batch, seed=3, null_vision_mode="noise")
    assert a == b


class RegionModel(nn.Module):
    """Classifies from the composite's right half (the context) when ``use_context``."""

    def __init__(self, use_context: bool) -> None:
        super().__init__()
        self.use_context = use_context
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, pixel_values):
        half = pixel_values.shape[-1] // 2
        region = pixel_values[..., half:] if self.use_context else pixel_values[..., :half]
        return self.w * region.mean(dim=(1, 2))  # (B, half) -> one logit per column


def context_batch(n: int = 8) -> dict:
    s = 4
    labels = torch.arange(n) % s
    target = torch.zeros(n, 1, s, s)
    context = torch.zeros(n, 1, s, s)
    target[torch.arange(n), 0, :, labels] = 1.0
    context[torch.arange(n), 0, :, labels] = 1.0  # context agrees with the target in this data
    composite = torch.cat([target, context], dim=-1)
    boxes = torch.tensor([[0.0, 0.0, s, s], [s, 0.0, 2 * s, s]]).expand(n, 2, 4)
    return {
        "pixel_values": composite,
        "region_pixels": torch.stack([target, context], 1),
        "boxes": boxes,
        "labels": labels,
    }


def test_context_reliance_separates_models_and_replace_context():
    batch = context_batch()
    adapter = GenericAdapter(vision_keys=["pixel_values"], language_keys=[])
    ctx = diagnose(RegionModel(True), batch, adapter=adapter, progress=False)["test"].context
    tgt = diagnose(RegionModel(False), batch, adapter=adapter, progress=False)["test"].context
    assert ctx.flip_rate > 0.5 and ctx.accuracy_change < 0
    assert tgt.flip_rate == 0.0 and tgt.accuracy_change == 0.0
    assert tgt.accuracy_factual == tgt.accuracy_replaced == 1.0
    # replace_context edits only the context region, in both places, and copies
    g = torch.Generator().manual_seed(0)
    edited = replace_context(batch, mode="swap", generator=g)
    assert torch.equal(edited["pixel_values"][..., :4], batch["pixel_values"][..., :4])
    assert torch.equal(edited["pixel_values"][..., 4:], edited["region_pixels"][:, 1])
    assert not torch.equal(edited["region_pixels"][:, 1], batch["region_pixels"][:, 1])
    zeros = replace_context(batch, mode="zeros")
    assert zeros["pixel_values"][..., 4:].abs().sum() == 0
    assert batch["pixel_values"][..., 4:].abs().sum() > 0  # the input is untouched
    # without boxes the context is found by exact match
    no_boxes = {k: v for k, v in batch.items() if k != "boxes"}
    assert torch.equal(context_boxes(no_boxes), context_boxes(batch))


def test_causal_metric_through_diagnose():
    batch = make_batch(40)
    d = run(BlindModel(), batch, metrics=("causal",), causal_num_simulations=10)["test"]
    e = d.effect_estimate
    # the blind model is right exactly when the example is bias-aligned
    assert e.value == pytest.approx(1.0, abs=1e-6)
    assert e.treatment == "bias_aligned" and len(e.refutations) == 3


def test_causal_probe_warning_points_at_the_caller_of_diagnose():
    batch = make_batch(8)
    del batch["bias_aligned"]  # the causal probe skips with a warning from finish()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(BlindModel(), batch, metrics=("causal",))
    (skipped,) = [w for w in caught if "causal effect skipped" in str(w.message)]
    # run() in this file calls diagnose()
    assert skipped.filename == __file__


def test_bad_options_and_data_raise_helpful_errors():
    with pytest.raises(ConfigError, match="unknown options"):
        run(LookingModel(), make_batch(4), bins=3)
    with pytest.raises(ConfigError, match="metrics"):
        DiagnosticsConfig(metrics=("accuracy", "pope"))
    with pytest.raises(ConfigError, match="ece_bins"):
        DiagnosticsConfig(ece_bins=0)
    batch = make_batch(4)
    del batch["labels"]
    with pytest.raises(InputError, match="labels"):
        run(LookingModel(), batch)
    with pytest.raises(InputError, match="compositional_scores"):

        class Similarity(nn.Module):
            def forward(self, image, tokens):
                return image[:2] @ image.T  # (n_images, n_texts)

        run(Similarity(), make_batch(4))
    with pytest.raises(ConfigError, match="distribution"):
        run(LookingModel(), make_batch(4), distribution="shifted")
    with pytest.raises(causalvl.UnsupportedModelError, match="adapter="):
        diagnose(LookingModel(), make_batch(4), progress=False)


def test_missing_vision_warns_and_skips_prior():
    adapter = GenericAdapter(
        vision_keys=["pixels"], language_keys=["tokens"], required_keys=["tokens"]
    )
    batch = make_batch(8)
    batch["pixels"] = batch.pop("image")

    class TextOnly(nn.Module):
        def forward(self, tokens, pixels=None):
            return nn.functional.one_hot(tokens[:, 0] % A, A).float()

    batch.pop("pixels")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = diagnose(TextOnly(), batch, adapter=adapter, progress=False)
    assert d["test"].language_prior is None
    assert any("language-prior reliance skipped" in str(w.message) for w in caught)


def test_real_datasets_with_a_counterfactual_wrapper():
    from causalvl.datasets._common import collate
    from causalvl.datasets.context_shift import ContextShift
    from causalvl.datasets.prior_shift import PriorShiftVQA
    from causalvl.models import TinyRegionClassifier, TinyVQA

    torch.manual_seed(0)
    ood = PriorShiftVQA(split="test", num_examples=48)
    idd = PriorShiftVQA(split="test_id", num_examples=48, tokenizer=ood.tokenizer)
    net = TinyVQA(vocab_size=len(ood.tokenizer), num_answers=ood.num_answers, hidden=16)
    cfg = causalvl.CFVQAConfig(num_answers=ood.num_answers, hidden_sizes=(16,))
    vl = causalvl.intervene(net, cfg)
    d = diagnose(vl, {"test_id": idd, "test": ood}, distribution={"test": "ood"}, progress=False)
    assert d["test_id"].distribution == "id" and d["test"].distribution == "ood"
    assert set(d["test"].effects.effects) >= {"te", "nde", "tie"}
    assert d["test"].groups.per_group[0].name in ood.group_names
    assert d["test"].bias.n_aligned + d["test"].bias.n_conflicting == 48
    ctx = ContextShift(split="test", num_examples=24)
    region_net = TinyRegionClassifier(num_classes=ctx.num_classes, hidden=8, width=8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights: the untrained model reads the context a little
        for p in region_net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    c = diagnose(region_net, ctx, progress=False, batch_size=12)["test"].context
    assert c.flip_rate > 0.1
    # the same swaps by hand: the seeded generator (seed 0) draws one derangement per batch
    g = torch.Generator().manual_seed(0)
    flips, right = [], []
    with torch.no_grad():
        for start in (0, 12):
            batch = collate([ctx[i] for i in range(start, start + 12)])
            edited = replace_context(batch, mode="swap", generator=g)
            before = region_net(batch["region_pixels"]).argmax(-1)
            after = region_net(edited["region_pixels"]).argmax(-1)
            flips.append(before != after)
            right.append(after == batch["labels"])
    assert c.n == 24 and c.flip_rate == pytest.approx(torch.cat(flips).double().mean().item())
    assert c.accuracy_replaced == pytest.approx(torch.cat(right).double().mean().item())
