"""Training is a function of the data, the model and the seed: display options never change it,
and the balanced sampler draws what it promises."""

from __future__ import annotations

import pytest
import torch

import causalvl
from causalvl.datasets import PriorShiftVQA
from causalvl.errors import ConfigError, InputError
from causalvl.progress import progress_bar
from causalvl.training import TrainConfig, Trainer, balanced_weights


@pytest.fixture(scope="module")
def train_data():
    return PriorShiftVQA(split="train", seed=0, num_examples=192)


def _weights(data, **config) -> torch.Tensor:
    torch.manual_seed(0)
    net = causalvl.models.TinyVQA(
        vocab_size=len(data.tokenizer), num_answers=data.num_answers, image_size=16, hidden=16
    )
    vl = causalvl.intervene(net, causalvl.IdentityConfig())
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 32, "seed": 3, "device": "cpu", **config})
    Trainer(vl, data, eval_data={"id": data}, config=cfg).fit()
    return torch.cat([p.detach().flatten() for p in vl.parameters()])


def test_progress_bars_do_not_change_trained_weights(train_data):
    quiet = _weights(train_data, progress=False)
    shown = _weights(train_data, progress=True)
    assert torch.equal(quiet, shown)
    # and the run depends on its seed (the comparison above is not vacuous)
    assert not torch.equal(quiet, _weights(train_data, progress=False, seed=4))


def test_progress_bar_iterates_a_loader_once():
    class Counting:
        def __init__(self):
            self.iters = 0

        def __len__(self):
            return 3

        def __iter__(self):
            self.iters += 1
            return iter(range(3))

    for enabled in (False, True):
        data = Counting()
        assert list(progress_bar(data, enabled=enabled, desc="x")) == [0, 1, 2]
        assert data.iters == 1


def test_balanced_weights_equalise_answers_within_each_type(train_data):
    w = balanced_weights(train_data)
    t = train_data.tensors()
    cells = {}
    for q, a, wi in zip(t["question_type"].tolist(), t["labels"].tolist(), w.tolist()):
        cells[(q, a)] = cells.get((q, a), 0.0) + wi
    assert all(abs(v - 1.0) < 1e-9 for v in cells.values())
    # the training prior is far from uniform, so the weights are too
    assert float(w.max() / w.min()) > 5


def test_balanced_sampler_draws_answers_uniformly_within_type(train_data):
    trainer = Trainer(
        causalvl.intervene(
            causalvl.models.TinyVQA(
                vocab_size=len(train_data.tokenizer), num_answers=train_data.num_answers
            ),
            causalvl.IdentityConfig(),
        ),
        train_data,
        config=TrainConfig(sampler="balanced", batch_size=64, device="cpu"),
    )
    drawn = []
    for epoch in range(30):
        drawn += [
            (int(q), int(a))
            for b in trainer._train_loader(epoch)
            for q, a in zip(b["question_type"], b["labels"])
        ]
    colour = train_data.question_types.index("colour")
    counts = torch.tensor(
        [
            sum(1 for q, a in drawn if q == colour and a == ans)
            for ans in train_data._type_answers[colour]
        ],
        dtype=torch.float64,
    )
    share = counts / counts.sum()
    plain = train_data.split_prior()[colour][train_data._type_answers[colour]]
    assert float(plain.max()) > 0.6  # the data is skewed ...
    assert float((share - 1 / 3).abs().max()) < 0.05  # ... the draws are not


def test_balanced_sampler_errors(train_data):
    from torch.utils.data import DataLoader

    vl = causalvl.intervene(
        causalvl.models.TinyVQA(vocab_size=50, num_answers=30), causalvl.IdentityConfig()
    )
    with pytest.raises(ConfigError, match="needs the Dataset"):
        Trainer(vl, DataLoader(train_data), config=TrainConfig(sampler="balanced"))
    with pytest.raises(ConfigError, match="balance_keys"):
        TrainConfig(balance_keys=())
    with pytest.raises(InputError, match="'colour_name'"):
        balanced_weights([{"labels": torch.tensor(0)}], ("colour_name",))
