"""Bias constructions: prior shift, context shift, compositional groups, comparative pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from causalvl.datasets import (
    ArraySource,
    ComparativePairs,
    CompositionalPairs,
    ContextShift,
    PriorShiftVQA,
    collate,
    digits,
    perturb_caption,
)
from causalvl.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def src():
    return digits()


def _measured(ds: PriorShiftVQA) -> torch.Tensor:
    return ds.split_prior()


def _tv(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return 0.5 * (p - q).abs().sum(1)


# ---------------------------------------------------------------------------------------
# PriorShiftVQA
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.5, 0.8])
def test_prior_shift_distributions(src, strength):
    kw = dict(prior_strength=strength, seed=3, num_examples=1200)
    train = PriorShiftVQA(src, "train", **kw)
    test = PriorShiftVQA(src, "test", tokenizer=train.tokenizer, **kw)
    test_id = PriorShiftVQA(src, "test_id", tokenizer=train.tokenizer, **kw)
    balanced = PriorShiftVQA(src, "balanced", tokenizer=train.tokenizer, **kw)
    p_train, p_test = _measured(train), _measured(test)
    # out of distribution: every question type's answers move by the configured amount
    tv = _tv(p_train, p_test)
    assert torch.allclose(tv, torch.full_like(tv, strength), atol=0.03), tv
    # test_id keeps the training prior, balanced has none
    assert _tv(p_train, _measured(test_id)).max() < 0.03
    uniform = train.type_answer_mask().float()
    uniform = uniform / uniform.sum(1, keepdim=True)
    assert _tv(_measured(balanced), uniform).max() < 0.03
    # configured priors say the same, and train_prior() is measured on the train split
    assert torch.allclose(
        _tv(train.configured_prior("train"), train.configured_prior("test")),
        torch.full_like(tv, strength),
        atol=1e-5,
    )
    assert torch.allclose(test.train_prior(), p_train)
    # bias_aligned means "answer is train-favoured": common in train, rare out of distribution
    assert train.tensors()["bias_aligned"].float().mean() > 0.5 + strength / 4
    assert test.tensors()["bias_aligned"].float().mean() < 0.5 - strength / 4


def test_prior_shift_items_and_collate(src):
    ds = PriorShiftVQA(src, "train", num_examples=64)
    item = ds[0]
    assert item["pixel_values"].shape == (3, 16, 16) and item["pixel_values"].dtype == torch.float32
    assert item["input_ids"].shape == (12,) and item["input_ids"].dtype == torch.long
    assert item["labels"].dtype == torch.long and item["bias_aligned"].dtype == torch.bool
    assert item["group"] == 2 * item["question_type"] + item["bias_aligned"].long()
    assert ds.answers[item["labels"]] == item["answer"]
    assert ds.tokenizer.decode(item["input_ids"]) == item["question"].replace("?", " ?")
    batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate)))
    assert batch["pixel_values"].shape == (8, 3, 16, 16) and batch["labels"].shape == (8,)
    assert isinstance(batch["question"], list) and len(batch["question"]) == 8
    assert ds.train_prior().shape == (len(ds.question_types), len(ds.answers))
    assert len(ds.group_names) == 2 * len(ds.question_types)


def test_prior_shift_answers_are_true_of_the_pixels(src):
    ds = PriorShiftVQA(src, "test", num_examples=300, noise_std=0.0, tint_strength=1.0)
    t = ds.tensors()
    labels = src.labels[t["image_index"]]
    assert torch.equal(labels, t["image_label"])
    for i in range(len(ds)):
        qtype = ds.question_types[t["question_type"][i]]
        ans = ds.answers[t["labels"][i]]
        cls = src.class_names[t["image_label"][i]]
        if qtype in ("what_class", "which_class"):
            assert ans == cls
        elif qtype in ("is_this", "does_show"):
            named = ds[i]["question"].rstrip("?").split()[-1]
            assert (ans == "yes") == (named == cls)
        elif qtype == "colour":
            # full-strength tint keeps only the named colour's channel
            px = t["pixel_values"][i]
            assert ans == ["red", "green", "blue"][int(px.sum((1, 2)).argmax())]
        else:
            assert ans == ("even" if int(cls) % 2 == 0 else "odd")


def test_prior_shift_images_are_disjoint(src):
    kw = dict(seed=1, num_examples=600)
    train = set(PriorShiftVQA(src, "train", **kw).tensors()["image_index"].tolist())
    bal = set(PriorShiftVQA(src, "balanced", **kw).tensors()["image_index"].tolist())
    test = set(PriorShiftVQA(src, "test", **kw).tensors()["image_index"].tolist())
    test_id = set(PriorShiftVQA(src, "test_id", **kw).tensors()["image_index"].tolist())
    assert not (train | bal) & (test | test_id)
    assert len(train | bal) <= 20 * 10


def test_prior_shift_determinism(src):
    a = PriorShiftVQA(src, "train", seed=5, num_examples=200)
    b = PriorShiftVQA(src, "train", seed=5, num_examples=200)
    c = PriorShiftVQA(src, "train", seed=6, num_examples=200)
    for k, v in a.tensors().items():
        assert torch.equal(v, b.tensors()[k]), k
    assert [a[i]["question"] for i in range(50)] == [b[i]["question"] for i in range(50)]
    assert not torch.equal(a.tensors()["pixel_values"], c.tensors()["pixel_values"])
    assert not torch.equal(a.tensors()["labels"], c.tensors()["labels"])


def test_prior_shift_other_sources_and_errors(src):
    arr = ArraySource(torch.rand(40, 3, 8, 8), torch.arange(40) % 4, ["cat", "dog", "car", "bus"])
    ds = PriorShiftVQA(arr, "train", num_examples=60, image_size=8)
    assert "superclass" not in ds.question_types and ds.noun == "object"
    sup = {"cat": "animal", "dog": "animal", "car": "vehicle", "bus": "vehicle"}
    ds = PriorShiftVQA(arr, "test", num_examples=60, image_size=8, superclasses=sup)
    assert "is it an animal or a vehicle?" in ds.all_questions()
    with pytest.raises(ConfigError, match="prior_strength"):
        PriorShiftVQA(src, "train", prior_strength=1.5)
    with pytest.raises(ConfigError, match="split"):
        PriorShiftVQA(src, "validation")
    with pytest.raises(ConfigError, match="question_types"):
        PriorShiftVQA(src, "train", question_types=("nope",))
    with pytest.raises(ConfigError, match="superclasses"):
        PriorShiftVQA(arr, "train", question_types=("superclass",))


# ---------------------------------------------------------------------------------------
# ContextShift
# ---------------------------------------------------------------------------------------


def test_context_shift_cooccurrence(src):
    p = 0.8
    train = ContextShift(src, "train", cooccurrence=p, seed=2, num_examples=2000)
    test = ContextShift(src, "test", cooccurrence=p, seed=2, num_examples=2000)
    assert abs(train.cooccurrence_rate() - p) < 0.03
    assert abs(test.cooccurrence_rate() - 1 / 9) < 0.03
    # test contexts are uniform over the other classes: every offset equally likely
    t = test.tensors()
    offsets = ((t["context_class"] - t["labels"]) % 10).bincount(minlength=10)
    assert offsets[0] == 0
    assert (offsets[1:].float() / 2000 - 1 / 9).abs().max() < 0.03
    assert not torch.any(train.partner == torch.arange(10))
    assert set(train.tensors()["image_index"].flatten().tolist()).isdisjoint(
        t["image_index"].flatten().tolist()
    )
    # test_id: held-out images with the training co-occurrence (same partners as train)
    test_id = ContextShift(src, "test_id", cooccurrence=p, seed=2, num_examples=2000)
    assert abs(test_id.cooccurrence_rate() - p) < 0.03
    assert torch.equal(test_id.partner, train.partner)
    assert set(train.tensors()["image_index"].flatten().tolist()).isdisjoint(
        test_id.tensors()["image_index"].flatten().tolist()
    )


def test_context_shift_regions(src):
    ds = ContextShift(src, "train", num_examples=50, image_size=12)
    t = ds.tensors()
    assert t["pixel_values"].shape == (50, 3, 12, 24) and t["region_pixels"].shape == (
        50,
        2,
        3,
        12,
        12,
    )
    assert torch.equal(src.labels[t["image_index"][:, 0]], t["labels"])
    assert torch.equal(src.labels[t["image_index"][:, 1]], t["context_class"])
    for i in range(50):
        for r in range(2):
            x0, y0, x1, y1 = t["boxes"][i, r].long().tolist()
            assert torch.equal(t["pixel_values"][i, :, y0:y1, x0:x1], t["region_pixels"][i, r])
        assert t["boxes"][i, 0, 0] == 12 * t["target_position"][i]
    assert 0.3 < t["target_position"].float().mean() < 0.7
    assert torch.equal(t["bias_aligned"], t["context_class"] == ds.partner[t["labels"]])
    assert set(collate([ds[0], ds[1]])) == set(ds[0])


def test_context_shift_determinism_and_errors(src):
    a, b = ContextShift(src, seed=4, num_examples=100), ContextShift(src, seed=4, num_examples=100)
    c = ContextShift(src, seed=5, num_examples=100)
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not torch.equal(a.tensors()["pixel_values"], c.tensors()["pixel_values"])
    with pytest.raises(ConfigError, match="cooccurrence"):
        ContextShift(src, cooccurrence=-0.1)
    two = ArraySource(torch.rand(8, 1, 4, 4), torch.arange(8) % 2, ["a", "b"])
    with pytest.raises(ConfigError, match="at least 3"):
        ContextShift(two)


# ---------------------------------------------------------------------------------------
# CompositionalPairs
# ---------------------------------------------------------------------------------------


def test_compositional_groups_are_valid_swaps(src):
    ds = CompositionalPairs(src, "test", num_groups=200, seed=1)
    for i in range(len(ds)):
        g = ds[i]
        c0, c1 = g["captions"]
        assert c0 != c1 and sorted(c0.split()) == sorted(c1.split())
        assert perturb_caption(c0, "swap", 0) == c1
        img0, img1 = g["pixel_values"]
        w = img0.shape[-1] // 2
        assert torch.equal(img0[..., :w], img1[..., w:]) and torch.equal(
            img0[..., w:], img1[..., :w]
        )
        assert not torch.equal(img0, img1)
        x, y = g["classes"].tolist()
        assert x != y and src.labels[g["image_index"]].tolist() == [x, y]
        assert c0.split()[1] == src.class_names[x] and c0.split()[-1] == src.class_names[y]
        assert ds.tokenizer.decode(g["input_ids"][1]) == c1


def test_compositional_pairs_mode_and_split(src):
    pairs = CompositionalPairs(src, "train", mode="pairs", num_groups=30)
    assert len(pairs) == 60
    a, b = pairs[0], pairs[1]
    assert a["negative_caption"] == b["caption"] and a["caption"] == b["negative_caption"]
    assert torch.equal(a["negative_input_ids"], b["input_ids"])
    assert a["pixel_values"].shape == (3, 16, 32)
    batch = collate([a, b])
    assert batch["negative_input_ids"].shape == (2, 12)
    test = CompositionalPairs(src, "test", num_groups=30)
    tr_idx = set(pairs._image_index.flatten().tolist())
    assert tr_idx.isdisjoint(test._image_index.flatten().tolist())
    same = CompositionalPairs(src, "test", num_groups=30)
    assert torch.equal(same._pixels, test._pixels)
    assert not torch.equal(
        CompositionalPairs(src, "test", num_groups=30, seed=9)._classes, test._classes
    )


def test_perturb_caption_kinds():
    assert perturb_caption("a cat left of an airplane", "swap", 0) == "an airplane left of a cat"
    assert perturb_caption("The dog is on the grass.", "swap", 0) == "The grass is on the dog."
    out = perturb_caption("A red car beside a dog", "attribute", np.random.default_rng(0))
    assert out != "A red car beside a dog" and out.split()[2:] == ["car", "beside", "a", "dog"]
    assert perturb_caption("two dogs", "number", 1).split()[1] == "dogs"
    assert perturb_caption("two dogs", "number", 1) != "two dogs"
    assert perturb_caption("a 3 left of a 7", "number", 2) != "a 3 left of a 7"
    with pytest.raises(DataError, match="cannot swap"):
        perturb_caption("a dog", "swap", 0)
    with pytest.raises(DataError, match="no attribute"):
        perturb_caption("a dog", "attribute", 0)
    with pytest.raises(ConfigError):
        perturb_caption("a dog", "shuffle", 0)


# ---------------------------------------------------------------------------------------
# ComparativePairs
# ---------------------------------------------------------------------------------------


def test_comparative_statements_are_true_of_the_classes(src):
    ds = ComparativePairs(src, "test", num_examples=500, seed=2)
    assert ds.statement_types == ["left_is", "right_is", "same", "larger", "both_super"]
    t_labels = torch.stack([ds[i]["labels"] for i in range(len(ds))])
    assert abs(t_labels.float().mean() - 0.5) < 0.01
    for i in range(len(ds)):
        it = ds[i]
        left, right = src.class_names[it["left_class"]], src.class_names[it["right_class"]]
        assert src.labels[it["image_index"]].tolist() == [it["left_class"], it["right_class"]]
        s, y = it["statement"], bool(it["labels"])
        if s.startswith("the left image shows a larger"):
            truth = int(left) > int(right)
        elif s.startswith("the left image shows"):
            truth = s.split()[-1] == left
        elif s.startswith("the right image shows"):
            truth = s.split()[-1] == right
        elif s == "both images show the same digit":
            truth = left == right
        else:
            parity = s.split()[-1]
            truth = all((int(c) % 2 == 0) == (parity == "even") for c in (left, right))
        assert truth == y, (s, left, right, y)
    b = collate([ds[0], ds[1]])
    assert b["pixel_values_left"].shape == (2, 3, 16, 16) and b["labels"].shape == (2,)


def test_comparative_determinism(src):
    a = ComparativePairs(src, "train", num_examples=100, seed=1)
    b = ComparativePairs(src, "train", num_examples=100, seed=1)
    c = ComparativePairs(src, "train", num_examples=100, seed=2)
    assert [a[i]["statement"] for i in range(100)] == [b[i]["statement"] for i in range(100)]
    assert torch.equal(a._left_pixels, b._left_pixels)
    assert [a[i]["statement"] for i in range(100)] != [c[i]["statement"] for i in range(100)]
    with pytest.raises(ConfigError, match="statement_types"):
        ComparativePairs(
            ArraySource(torch.rand(8, 1, 4, 4), torch.arange(8) % 2, ["a", "b"]),
            statement_types=("larger",),
        )


# ---------------------------------------------------------------------------------------
# the prior is an attractive shortcut with the default settings
# ---------------------------------------------------------------------------------------


class _TinyVQA(torch.nn.Module):
    def __init__(self, vocab: int, answers: int) -> None:
        super().__init__()
        nn = torch.nn
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 16, 64),
            nn.ReLU(),
        )
        self.emb = nn.Embedding(vocab, 32, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(96, 128), nn.ReLU(), nn.Linear(128, answers))

    def forward(self, pixel_values, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).float()
        q = (self.emb(input_ids) * m).sum(1) / m.sum(1)
        return self.head(torch.cat([self.cnn(pixel_values), q], 1))


def _fit(ds: PriorShiftVQA, epochs: int, seed: int = 0) -> _TinyVQA:
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _TinyVQA(ds.tokenizer.vocab_size, ds.num_answers)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    t = ds.tensors()
    for _ in range(epochs):
        perm = torch.randperm(len(ds), generator=gen)
        for s in range(0, len(ds), 64):
            b = perm[s : s + 64]
            logits = model(t["pixel_values"][b], t["input_ids"][b], t["attention_mask"][b])
            loss = torch.nn.functional.cross_entropy(logits, t["labels"][b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def _accuracy(model: _TinyVQA, ds: PriorShiftVQA) -> float:
    t = ds.tensors()
    logits = model(t["pixel_values"], t["input_ids"], t["attention_mask"])
    logits = logits.masked_fill(~ds.type_answer_mask()[t["question_type"]], float("-inf"))
    return float((logits.argmax(1) == t["labels"]).float().mean())


@pytest.mark.slow
def test_default_prior_shift_is_an_attractive_shortcut(src):
    """A plain model learns the prior (ID >> OOD); an oracle trained on ``balanced`` does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest and avoids oversubscription
    try:
        train = PriorShiftVQA(src, "train", num_examples=1500)
        tok = train.tokenizer
        test_id = PriorShiftVQA(src, "test_id", tokenizer=tok, num_examples=600)
        test = PriorShiftVQA(src, "test", tokenizer=tok, num_examples=600)
        balanced = PriorShiftVQA(src, "balanced", tokenizer=tok, num_examples=1500)
        plain = _fit(train, epochs=8)
        oracle = _fit(balanced, epochs=8)
        plain_id, plain_ood = _accuracy(plain, test_id), _accuracy(plain, test)
        oracle_ood = _accuracy(oracle, test)
    finally:
        torch.set_num_threads(threads)
    assert plain_id - plain_ood > 0.25, (plain_id, plain_ood)
    assert oracle_ood - plain_ood > 0.15, (oracle_ood, plain_ood)
