"""Config options that only a user sets: each one, set to a non-default value, has the effect
its documentation promises (and would fail here if it were silently ignored)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import causalvl
from causalvl import GenericAdapter
from causalvl.interventions.ensembles import (
    lmh_bce_loss,
    lmh_softmax_loss,
    prior_log_probs,
    set_bias_prior,
)

A = 5  # answers of the tiny VQA model
T = 3  # question types


def _tiny_vqa(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return causalvl.models.TinyVQA(vocab_size=20, num_answers=A, image_size=8, hidden=16)


def _vqa_batch(batch: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(batch, 3, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, (batch, 5), generator=g),
        "question_type": torch.arange(batch) % T,
        "labels": torch.randint(0, A, (batch,), generator=g),
    }


# ---------------------------------------------------------------------------------------
# LMHConfig / BiasProductConfig
# ---------------------------------------------------------------------------------------


def _lmh(cfg, prior: torch.Tensor):
    vl = causalvl.intervene(_tiny_vqa(), cfg)
    set_bias_prior(vl, prior)
    batch = _vqa_batch()
    out = vl(batch)
    return vl, batch, out


BCE_PRIOR = torch.tensor(
    [[0.6, 0.2, 0.1, 0.05, 0.05], [0.1, 0.7, 0.1, 0.05, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2]]
)


@pytest.mark.parametrize("config_cls", [causalvl.LMHConfig, causalvl.BiasProductConfig])
def test_smoothing_init_sets_the_learned_smoothing_used_in_the_loss(config_cls):
    vl, batch, out = _lmh(config_cls(smoothing_init=1.5), BCE_PRIOR)
    impl = vl.interventions[next(iter(vl.interventions.keys()))]
    assert impl.smoothing.item() == pytest.approx(1.5)
    gate = out.features["lmh_gate"] if config_cls is causalvl.LMHConfig else 1.0
    bias = BCE_PRIOR[batch["question_type"]]
    expected, _ = lmh_bce_loss(
        out.factual_logits, batch["labels"], bias, gate, smoothing=torch.sigmoid(torch.tensor(1.5))
    )
    parts = vl.objective(out, batch).parts
    torch.testing.assert_close(parts["lmh_nll"], expected)
    # the default (-1) gives another loss, so the value really was used
    vl_d, _, out_d = _lmh(config_cls(), BCE_PRIOR)
    assert not torch.allclose(vl_d.objective(out_d, batch).parts["lmh_nll"], parts["lmh_nll"])


def test_constant_smoothing_is_added_to_both_bias_entries():
    cfg = causalvl.BiasProductConfig(learned_smoothing=False, constant_smoothing=0.3)
    vl, batch, out = _lmh(cfg, BCE_PRIOR)
    impl = vl.interventions["0_bias_product"]
    assert impl.smoothing is None and impl.smoothing_value() == pytest.approx(0.3)
    bias = BCE_PRIOR[batch["question_type"]]
    nll = vl.objective(out, batch).parts["lmh_nll"]
    expected, _ = lmh_bce_loss(out.factual_logits, batch["labels"], bias, 1.0, smoothing=0.3)
    torch.testing.assert_close(nll, expected)
    unsmoothed, _ = lmh_bce_loss(out.factual_logits, batch["labels"], bias, 1.0, smoothing=0.0)
    assert not torch.allclose(nll, unsmoothed)
    # with learned smoothing the constant adds to sigma(s), and s still learns
    vl2, _, out2 = _lmh(causalvl.LMHConfig(constant_smoothing=0.3), BCE_PRIOR)
    impl2 = vl2.interventions["0_lmh"]
    value = impl2.smoothing_value()
    assert value.item() == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item() + 0.3)
    vl2.objective(out2, batch).loss.backward()
    assert impl2.smoothing.grad is not None and impl2.smoothing.grad.abs().item() > 0


def test_prior_floor_clamps_the_softmax_prior():
    prior = torch.tensor(
        [[0.8, 0.2, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.9, 0.1]]
    )
    floor = 0.05
    cfg = causalvl.BiasProductConfig(form="softmax", support="all", prior_floor=floor)
    vl, batch, out = _lmh(cfg, prior)
    bias = prior[batch["question_type"]]
    log_b = prior_log_probs(bias, floor)
    assert torch.allclose(log_b.exp().min(), torch.tensor(floor))
    expected, _ = lmh_softmax_loss(out.factual_logits, batch["labels"], log_b, 1.0, None)
    nll = vl.objective(out, batch).parts["lmh_nll"]
    torch.testing.assert_close(nll, expected)
    default, _ = lmh_softmax_loss(
        out.factual_logits, batch["labels"], prior_log_probs(bias, 1e-4), 1.0, None
    )
    assert not torch.allclose(nll, default)


# ---------------------------------------------------------------------------------------
# dataset constructions: test_fraction, context_noise_std, favoured_fraction
# ---------------------------------------------------------------------------------------

PER_CLASS = 10


@pytest.fixture(scope="module")
def src():
    """An image source with exactly PER_CLASS images per class (4 classes)."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(4 * PER_CLASS, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(4 * PER_CLASS) % 4
    return causalvl.datasets.ArraySource(images, labels, ["a", "b", "c", "d"])


def _used_per_class(ds, src, column: int | None = None) -> list[int]:
    """How many distinct source images of each class a dataset uses."""
    idx = ds.tensors()["image_index"] if hasattr(ds, "tensors") else None
    if idx is None:
        idx = torch.stack([ds[i]["image_index"] for i in range(len(ds))])
    idx = idx.reshape(len(ds), -1)
    idx = idx[:, column] if column is not None else idx.reshape(-1)
    labels = np.asarray(src.labels)[idx.unique().numpy()]
    return [int((labels == c).sum()) for c in range(src.num_classes)]


def _build(kind: str, src, split: str, test_fraction: float | None):
    from causalvl.datasets import ComparativePairs, CompositionalPairs, ContextShift, PriorShiftVQA

    kw: dict = {"seed": 1, "image_size": 8}
    if test_fraction is not None:
        kw["test_fraction"] = test_fraction
    if kind == "prior_shift":
        return PriorShiftVQA(src, split, train_images_per_class=None, num_examples=400, **kw)
    if kind == "context_shift":
        return ContextShift(src, split, train_images_per_class=None, num_examples=400, **kw)
    if kind == "compositional":
        return CompositionalPairs(src, split, num_groups=200, **kw)
    return ComparativePairs(src, split, num_examples=400, **kw)


@pytest.mark.parametrize("kind", ["prior_shift", "context_shift", "compositional", "comparative"])
def test_test_fraction_sets_the_held_out_share_of_each_class(kind, src):
    # held out: round(test_fraction * 10) images per class; training: the rest
    for fraction, held in [(0.3, 3), (None, 5)]:
        test = _build(kind, src, "test", fraction)
        train = _build(kind, src, "train", fraction)
        assert _used_per_class(test, src) == [held] * 4, (kind, fraction)
        assert _used_per_class(train, src) == [PER_CLASS - held] * 4, (kind, fraction)


def test_test_fraction_is_validated():
    with pytest.raises(causalvl.ConfigError, match="test_fraction"):
        causalvl.datasets.PriorShiftConfig(test_fraction=1.0)


def test_context_noise_std_noises_only_the_context_region(src):
    from causalvl.datasets import ContextShift

    kw = dict(num_examples=40, image_size=8, noise_std=0.0, frame=False, seed=2)
    clean = ContextShift(src, "train", context_noise_std=0.0, **kw).tensors()["region_pixels"]
    noisy = ContextShift(src, "train", context_noise_std=0.3, **kw).tensors()["region_pixels"]
    # the target tile (region 0) is untouched, the context tile (region 1) gets noise
    assert torch.equal(clean[:, 0], noisy[:, 0])
    diff = noisy[:, 1] - clean[:, 1]
    assert 0.15 < diff.std().item() < 0.35  # ~0.3 before clipping to [0, 1]


def test_favoured_fraction_sets_how_many_answers_each_prior_favours():
    from causalvl.datasets import PriorShiftVQA

    src10 = causalvl.datasets.digits()
    kw = dict(num_examples=60, question_types=("what_class", "is_this"))
    default = PriorShiftVQA(src10, "train", **kw)
    wide = PriorShiftVQA(src10, "train", favoured_fraction=0.4, **kw)
    # what_class has K = 10 answers: m = round(f * K); yes/no (K = 2) stays at K // 2 = 1
    assert [len(a) for a in default.favoured_answers("train")] == [2, 1]
    assert [len(a) for a in wide.favoured_answers("train")] == [4, 1]
    assert [len(a) for a in wide.favoured_answers("test")] == [4, 1]
    # the configured prior puts s / m + (1 - s) / K on each favoured answer
    p = wide.configured_prior("train")[0]
    fav = [wide.answer_to_id[a] for a in wide.favoured_answers("train")[0]]
    s = wide.config.prior_strength
    assert torch.allclose(p[fav], torch.full((4,), s / 4 + (1 - s) / 10, dtype=p.dtype))


# ---------------------------------------------------------------------------------------
# CFVQAConfig, PriorSubtractionConfig
# ---------------------------------------------------------------------------------------


def test_vision_feature_dim_sets_the_vision_branch_width():
    right = causalvl.CFVQAConfig(hidden_sizes=(8,), vision_feature_dim=16)
    vl = causalvl.intervene(_tiny_vqa(), right)
    batch = _vqa_batch()
    vl(batch)  # the TinyVQA image feature is 16 wide
    first = next(
        m for m in vl.interventions["0_cfvqa"].vision.modules() if isinstance(m, nn.Linear)
    )
    assert first.in_features == 16
    # a wrong width is used as given (not re-inferred), so the forward pass says so
    wrong = causalvl.intervene(_tiny_vqa(), right.replace(vision_feature_dim=7))
    first = next(
        m for m in wrong.interventions["0_cfvqa"].vision.modules() if isinstance(m, nn.Linear)
    )
    assert first.in_features == 7
    with pytest.raises(causalvl.CausalVLError, match="width 16, the branch expects 7"):
        wrong(batch)


def test_vision_loss_weight_scales_the_vision_branch_loss():
    batch = _vqa_batch()
    parts = {}
    for w in (1.0, 0.25, 0.0):
        cfg = causalvl.CFVQAConfig(hidden_sizes=(8,), vision_loss_weight=w, init_seed=0)
        vl = causalvl.intervene(_tiny_vqa(), cfg)
        parts[w] = vl.objective(vl(batch), batch).parts
    assert parts[1.0]["vision_ce"] > 0
    torch.testing.assert_close(parts[0.25]["vision_ce"], 0.25 * parts[1.0]["vision_ce"])
    assert parts[0.0]["vision_ce"] == 0
    torch.testing.assert_close(parts[0.25]["question_ce"], parts[1.0]["question_ce"])


def test_cache_size_bounds_the_prior_cache_and_drops_the_least_recent():
    cfg = causalvl.PriorSubtractionConfig(cache=True, cache_size=2)
    vl = causalvl.intervene(_tiny_vqa(), cfg).eval()
    impl = vl.interventions["0_prior_subtraction"]
    questions = torch.arange(20).reshape(4, 5) % 19 + 1  # four distinct questions
    pixels = torch.rand(4, 3, 8, 8)
    # one batch with more distinct questions than the cache holds is still answered right
    out = vl(pixel_values=pixels, input_ids=questions)
    reference = causalvl.intervene(_tiny_vqa(), cfg.replace(cache=False)).eval()
    ref = reference(pixel_values=pixels, input_ids=questions)
    torch.testing.assert_close(out.logits, ref.logits)
    assert len(impl._cache) == 2 and impl.cache_misses == 4
    # least recently used goes first: questions 2 and 3 are kept, 0 was dropped
    impl.clear_cache()
    for i in (0, 1, 2):
        vl(pixel_values=pixels[i : i + 1], input_ids=questions[i : i + 1])
    assert impl.cache_misses == 3 and len(impl._cache) == 2
    vl(pixel_values=pixels[2:3], input_ids=questions[2:3])
    assert impl.cache_hits == 1
    vl(pixel_values=pixels[:1], input_ids=questions[:1])
    assert impl.cache_misses == 4  # question 0 had been dropped
    # with the default size nothing is dropped
    big = causalvl.intervene(_tiny_vqa(), cfg.replace(cache_size=4096)).eval()
    big(pixel_values=pixels, input_ids=questions)
    assert len(big.interventions["0_prior_subtraction"]._cache) == 4


# ---------------------------------------------------------------------------------------
# CounterfactualDecodingConfig
# ---------------------------------------------------------------------------------------


def test_disturbance_text_is_what_the_instruction_counterfactual_inserts():
    from causalvl.decoding.tiny import tiny_generative_model

    model, inputs = tiny_generative_model("llava", seed=0)
    seen: list[str] = []

    class Tok:
        def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
            seen.append(text)
            return {"input_ids": [10 + len(w) for w in text.split()]}

    text = "please describe something else entirely"
    cfg = causalvl.CounterfactualDecodingConfig(counterfactual="instruction", disturbance=text)
    vl = causalvl.intervene(model, cfg)
    impl = vl.interventions["0_counterfactual_decoding"]
    cf = impl.counterfactual_inputs(vl.adapter, vl.adapter.model_inputs(inputs), Tok())
    assert seen == [text]
    ids = [10 + len(w) for w in text.split()]
    expected = vl.adapter.decoding_counterfactual(
        vl.adapter.model_inputs(inputs),
        "instruction",
        generator=torch.Generator().manual_seed(0),
        disturbance_ids=ids,
    )
    assert torch.equal(cf["input_ids"], expected["input_ids"])
    default = causalvl.intervene(
        model, causalvl.CounterfactualDecodingConfig(counterfactual="instruction")
    ).interventions["0_counterfactual_decoding"]
    other = default.counterfactual_inputs(vl.adapter, vl.adapter.model_inputs(inputs), Tok())
    assert seen[-1] != text and not torch.equal(other["input_ids"], cf["input_ids"])


# ---------------------------------------------------------------------------------------
# CurriculumConfig
# ---------------------------------------------------------------------------------------


def test_image_negatives_appends_swapped_images_only_when_set():
    from causalvl.training.curriculum import CurriculumConfig, CurriculumContrastiveObjective
    from causalvl.training.hard_negatives import swap_image_halves

    seen: list[torch.Tensor] = []

    class Spy(causalvl.models.TinyContrastive):
        def forward(self, pixel_values, input_ids, attention_mask=None):
            seen.append(pixel_values)
            return super().forward(pixel_values, input_ids, attention_mask)

    g = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.rand(6, 3, 8, 16, generator=g),
        "input_ids": torch.randint(1, 16, (6, 5), generator=g),
        "negative_input_ids": torch.randint(1, 16, (6, 5), generator=g),
    }
    net = Spy(vocab_size=16, hidden=16, embed_dim=8)
    cfg = CurriculumConfig(schedule="constant", end=0.5)
    with_images = CurriculumContrastiveObjective(cfg)
    with_images(net, batch)
    assert seen[-1].shape[0] == 9 and with_images.last_num_hard == 3
    swapped = swap_image_halves(batch["pixel_values"])
    assert any(torch.equal(seen[-1][6], s) for s in swapped)
    without = CurriculumContrastiveObjective(cfg.replace(image_negatives=False))
    out = without(net, batch)
    assert seen[-1].shape[0] == 6 and without.last_num_hard == 3  # captions still appended
    assert torch.equal(seen[-1], batch["pixel_values"]) and torch.isfinite(out.loss)


# ---------------------------------------------------------------------------------------
# DiagnosticsConfig
# ---------------------------------------------------------------------------------------


class _Looking(nn.Module):
    """Answers from the image (a one-hot code of the answer), with a token term."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.calls = 0

    def forward(self, image, tokens):
        self.calls += 1
        return self.scale * image + 0.0 * tokens[:, :1].float()


def _diag_batch(n: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    return {
        "image": F.one_hot(labels, 4).float(),
        "tokens": torch.randint(0, 9, (n, 2), generator=g),
        "labels": labels,
        "group": labels % 2,
        "bias_aligned": labels == 0,
        "question_type": torch.zeros(n, dtype=torch.long),
        "position": (torch.arange(n) // 2) % 2,
    }


def _diagnose(model, batch, **kw):
    adapter = GenericAdapter(vision_keys=["image"], language_keys=["tokens"])
    return causalvl.diagnose(model, batch, adapter=adapter, progress=False, **kw)["test"]


def test_effect_bins_sets_the_histogram_size():
    from causalvl.outputs import InterventionOutput

    class WithEffects(nn.Module):
        def forward(self, image, tokens):
            logits = 5 * image + tokens[:, :1].float()
            return InterventionOutput(logits=logits, factual_logits=logits, effects={"te": logits})

    batch = _diag_batch()
    default = _diagnose(WithEffects(), batch, metrics=("effects",)).effects.effects["te"]
    seven = _diagnose(WithEffects(), batch, metrics=("effects",), effect_bins=7)
    te = seven.effects.effects["te"]
    assert len(default.hist_counts) == 20
    assert len(te.hist_counts) == 7 and len(te.hist_edges) == 8
    assert sum(te.hist_counts) == te.n == 24


def test_image_swap_false_skips_the_swapped_pass():
    batch = _diag_batch()
    on, off = _Looking(), _Looking()
    with_swap = _diagnose(on, batch, metrics=("language_prior",)).language_prior
    no_swap = _diagnose(off, batch, metrics=("language_prior",), image_swap=False).language_prior
    assert with_swap.image_swap_flip_rate > 0.5 and with_swap.n_swapped == 24
    assert no_swap.image_swap_flip_rate is None and no_swap.n_swapped == 0
    assert on.calls == 3 and off.calls == 2  # factual, image removed (, image swapped)
    assert no_swap.prior_agreement == with_swap.prior_agreement


def test_context_mode_zeros_blanks_the_context_region():
    s, n = 4, 8
    labels = torch.arange(n) % s
    target = torch.zeros(n, 1, s, s)
    target[torch.arange(n), 0, :, labels] = 1.0
    context = target.roll(1, 0)
    batch = {
        "pixel_values": torch.cat([target, context], dim=-1),
        "region_pixels": torch.stack([target, context], 1),
        "boxes": torch.tensor([[0.0, 0.0, s, s], [s, 0.0, 2 * s, s]]).expand(n, 2, 4),
        "labels": labels,
    }
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, pixel_values):
            seen.append(pixel_values)
            return self.w * pixel_values[..., s:].mean(dim=(1, 2))

    adapter = GenericAdapter(vision_keys=["pixel_values"], language_keys=[])
    kw = dict(adapter=adapter, progress=False, metrics=("context",))
    zeros = causalvl.diagnose(Spy(), batch, context_mode="zeros", **kw)["test"].context
    assert zeros.mode == "zeros"
    assert seen[-1][..., s:].abs().sum() == 0
    assert torch.equal(seen[-1][..., :s], batch["pixel_values"][..., :s])
    swap = causalvl.diagnose(Spy(), batch, **kw)["test"].context
    assert swap.mode == "swap" and seen[-1][..., s:].abs().sum() > 0
    assert zeros.accuracy_replaced != swap.accuracy_replaced or zeros.flip_rate != swap.flip_rate


def _capture_causal(monkeypatch) -> list[dict]:
    import causalvl.diagnostics.causal as causal_mod

    calls: list[dict] = []

    def fake(df, **kw):
        calls.append({"columns": list(df.columns), **kw})
        return None

    monkeypatch.setattr(causal_mod, "estimate_spurious_effect", fake)
    return calls


def test_causal_method_reaches_the_estimator(monkeypatch):
    calls = _capture_causal(monkeypatch)
    method = "backdoor.propensity_score_weighting"
    _diagnose(_Looking(), _diag_batch(), metrics=("causal",), causal_method=method)
    assert calls[-1]["method"] == method
    _diagnose(_Looking(), _diag_batch(), metrics=("causal",))
    assert calls[-1]["method"] == "backdoor.linear_regression"


def test_causal_common_causes_are_the_adjusted_batch_keys(monkeypatch):
    calls = _capture_causal(monkeypatch)
    batch = _diag_batch()
    _diagnose(_Looking(), batch, metrics=("causal",), causal_common_causes=("group",))
    assert calls[-1]["common_causes"] == ["group"]
    # any batch key, not only the ones diagnose reads for other metrics
    _diagnose(_Looking(), batch, metrics=("causal",), causal_common_causes=("position",))
    assert calls[-1]["common_causes"] == ["position"]
    assert "position" in calls[-1]["columns"]
    # the default (question_type) is constant in this batch, so it is skipped
    _diagnose(_Looking(), batch, metrics=("causal",))
    assert calls[-1]["common_causes"] == []
    # a missing key is skipped
    _diagnose(_Looking(), batch, metrics=("causal",), causal_common_causes=("nothing",))
    assert calls[-1]["common_causes"] == []


# ---------------------------------------------------------------------------------------
# TrainConfig
# ---------------------------------------------------------------------------------------


class _Blobs(Dataset):
    def __init__(self, n: int = 24, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.x = torch.randn(3, 8, generator=g)[self.labels] + torch.randn(n, 8, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        info = torch.utils.data.get_worker_info()
        return {
            "x": self.x[i],
            "labels": int(self.labels[i]),
            "worker": -1 if info is None else info.id,
        }


def _net(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def _ce(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["labels"])


def _predict(model, batch):
    return model(batch["x"])


def _fit(config, *, data=None, eval_data=None, objective=_ce, callbacks=(), predict=_predict):
    net = _net()
    trainer = causalvl.Trainer(
        net,
        data if data is not None else _Blobs(),
        eval_data=eval_data,
        config=config,
        objective=objective,
        callbacks=callbacks,
        predict=predict,
    )
    return net, trainer, trainer.fit()


BASE = causalvl.TrainConfig(epochs=1, batch_size=8, lr=0.05, device="cpu")


def test_eval_batch_size_sets_the_evaluation_batches():
    sizes: list[int] = []

    def predict(model, batch):
        sizes.append(int(batch["x"].shape[0]))
        return model(batch["x"])

    val = {"val": _Blobs(10, seed=1)}
    _fit(BASE.replace(eval_batch_size=4), eval_data=val, predict=predict)
    assert sizes[-3:] == [4, 4, 2]
    sizes.clear()
    _fit(BASE, eval_data=val, predict=predict)
    assert sizes[-2:] == [8, 2]  # default: batch_size


def test_betas_reach_the_optimizer_and_change_the_steps():
    net_a, tr_a, _ = _fit(BASE.replace(betas=(0.5, 0.9)))
    assert tr_a.optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    net_b, tr_b, _ = _fit(BASE)
    assert tr_b.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    # Adam's first step does not depend on the betas; the later ones (3 steps here) do
    assert not torch.allclose(net_a[0].weight, net_b[0].weight)


class _LrLog(causalvl.training.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_step_end(self, trainer, step, parts) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def test_warmup_fraction_sets_the_warmup_length():
    cfg = BASE.replace(epochs=4, batch_size=8, schedule="warmup_cosine")  # 3 x 4 = 12 steps
    log = _LrLog()
    _fit(cfg.replace(warmup_fraction=0.5), callbacks=[log])
    warm = [BASE.lr * (k + 1) / 6 for k in range(6)]  # round(0.5 * 12) = 6 warm-up steps
    assert log.lrs[:6] == pytest.approx(warm)
    assert log.lrs[6] == pytest.approx(BASE.lr) and log.lrs[-1] < BASE.lr
    default = _LrLog()
    _fit(cfg, callbacks=[default])  # round(0.05 * 12) = 1 warm-up step
    assert default.lrs[0] == pytest.approx(BASE.lr)
    # warmup_steps takes precedence
    steps = _LrLog()
    _fit(cfg.replace(warmup_fraction=0.5, warmup_steps=2), callbacks=[steps])
    assert steps.lrs[:2] == pytest.approx([BASE.lr / 2, BASE.lr])


def test_save_best_writes_or_omits_the_best_checkpoint(tmp_path):
    cfg = BASE.replace(epochs=2, select_metric="val/accuracy")
    val = {"val": _Blobs(9, seed=2)}
    _fit(cfg.replace(output_dir=str(tmp_path / "on")), eval_data=val)
    assert (tmp_path / "on" / "best").is_dir() and (tmp_path / "on" / "last").is_dir()
    _, trainer, result = _fit(
        cfg.replace(output_dir=str(tmp_path / "off"), save_best=False), eval_data=val
    )
    assert (tmp_path / "off" / "last").is_dir()
    assert not (tmp_path / "off" / "best").exists()
    assert result.best_epoch is not None  # the metric is still tracked, only not saved


def test_num_workers_loads_in_worker_processes():
    workers: list[int] = []

    def objective(model, batch):
        workers.extend(batch["worker"].tolist())
        return _ce(model, batch)

    _fit(BASE, objective=objective)
    assert set(workers) == {-1}
    workers.clear()
    _, trainer, _ = _fit(BASE.replace(num_workers=1), objective=objective)
    assert set(workers) == {0}
    assert trainer._eval_loader(_Blobs(4)).num_workers == 1


def test_drop_last_drops_the_incomplete_batch():
    data = _Blobs(20)  # batch_size 8: batches of 8, 8, 4
    sizes: list[int] = []

    def objective(model, batch):
        sizes.append(int(batch["x"].shape[0]))
        return _ce(model, batch)

    _, _, kept = _fit(BASE.replace(epochs=2), data=data, objective=objective)
    assert kept.global_step == 6 and sorted(sizes[:3]) == [4, 8, 8]
    sizes.clear()
    _, _, dropped = _fit(BASE.replace(epochs=2, drop_last=True), data=data, objective=objective)
    assert dropped.global_step == 4 and sizes == [8, 8, 8, 8]


@pytest.mark.parametrize("value, expected", [(None, True), (False, False), (True, True)])
def test_find_unused_parameters_is_passed_to_ddp(monkeypatch, value, expected):
    import torch.nn.parallel as parallel

    from causalvl.training.distributed import DistInfo

    seen: dict = {}

    class FakeDDP(nn.Module):
        def __init__(self, module, device_ids=None, find_unused_parameters=False) -> None:
            super().__init__()
            seen["find_unused_parameters"] = find_unused_parameters
            self.module = module

    monkeypatch.setattr(parallel, "DistributedDataParallel", FakeDDP)
    vl = causalvl.intervene(_tiny_vqa(), causalvl.IdentityConfig())
    trainer = causalvl.Trainer(
        vl, _Blobs(), config=BASE.replace(find_unused_parameters=value), objective=_ce
    )
    trainer.dist = DistInfo(world_size=2)
    assert isinstance(trainer._wrap_loss_module(), FakeDDP)
    assert seen["find_unused_parameters"] is expected
    # a plain module defaults to False
    plain = causalvl.Trainer(_net(), _Blobs(), config=BASE, objective=_ce)
    plain.dist = DistInfo(world_size=2)
    plain._wrap_loss_module()
    assert seen["find_unused_parameters"] is False
