"""Robust training against spurious correlations: Group DRO, JTT and DFR."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import causalvl
from causalvl.errors import ConfigError, InputError, NoMatchingModuleError
from causalvl.interventions.group_dro import (
    GroupDROConfig,
    group_dro_update,
    group_mean_losses,
)
from causalvl.outputs import InterventionOutput
from causalvl.training import (
    TrainConfig,
    Trainer,
    jtt_error_set,
    load_checkpoint,
    refit_last_layer,
    train_jtt,
    upsample,
)


class VQAData(Dataset):
    """TinyVQA inputs with labels and a group id (label x parity of the index)."""

    def __init__(self, n: int, seed: int, num_answers: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.px = torch.rand(n, 3, 8, 8, generator=g)
        self.ids = torch.randint(1, 20, (n, 5), generator=g)
        self.labels = torch.randint(0, num_answers, (n,), generator=g)
        self.group = self.labels * 2 + torch.arange(n) % 2

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "pixel_values": self.px[i],
            "input_ids": self.ids[i],
            "labels": self.labels[i],
            "group": self.group[i],
            "question_type": self.labels[i] % 2,
        }


def tiny_vqa(seed: int = 0, num_answers: int = 3) -> causalvl.models.TinyVQA:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return causalvl.models.TinyVQA(
            vocab_size=20, num_answers=num_answers, image_size=8, hidden=16
        )


def dro(num_groups: int = 6, **kw) -> causalvl.IntervenedModel:
    return causalvl.intervene(tiny_vqa(), GroupDROConfig(num_groups=num_groups, **kw))


# ----------------------------------------------------------------------------------------
# Group DRO
# ----------------------------------------------------------------------------------------
def test_group_dro_weights_after_two_steps_match_hand_computed_values():
    q = torch.full((3,), 1 / 3, dtype=torch.float64)
    q = group_dro_update(q, torch.tensor([1.0, 2.0, 0.0]), torch.tensor([True] * 3), 0.5)
    # q_g ∝ (1/3) exp(0.5 * L_g): exp(0.5), exp(1), exp(0), normalised
    assert q.tolist() == pytest.approx([0.3071958857, 0.5064803911, 0.1863237232], abs=1e-9)
    # group 2 is absent from the second batch: its weight is not multiplied
    q = group_dro_update(q, torch.tensor([2.0, 0.0, 9.0]), torch.tensor([True, True, False]), 0.5)
    assert q.tolist() == pytest.approx([0.5465493873, 0.3314989604, 0.1219516523], abs=1e-9)
    # the adjustment C / sqrt(n) enters the update; normalize_loss divides by the sum
    q = group_dro_update(
        torch.full((2,), 0.5),
        torch.tensor([1.0, 1.0]),
        torch.tensor([True, True]),
        1.0,
        adjustment=torch.tensor([0.0, 1.0]),
        normalize_loss=True,
    )
    a = [1 / 3, 2 / 3]
    expected = [math.exp(v) / (math.exp(a[0]) + math.exp(a[1])) for v in a]
    assert q.tolist() == pytest.approx(expected, abs=1e-6)


def test_group_mean_losses():
    losses = torch.tensor([1.0, 3.0, 5.0, 2.0])
    means, counts = group_mean_losses(losses, torch.tensor([0, 0, 2, 2]), 4)
    assert means.tolist() == [2.0, 0.0, 3.5, 0.0] and counts.tolist() == [2.0, 0.0, 2.0, 0.0]


def _fixed_output(z: torch.Tensor) -> InterventionOutput:
    logits = torch.stack([z, torch.zeros_like(z)], 1).requires_grad_(True)
    return InterventionOutput(logits=logits, factual_logits=logits)


def test_group_dro_objective_updates_q_before_use_and_weights_the_group_means():
    vl = causalvl.intervene(tiny_vqa(num_answers=2), GroupDROConfig(num_groups=3, eta=0.5))
    impl = vl.interventions["0_group_dro"]
    assert impl.q.tolist() == pytest.approx([1 / 3] * 3)
    vl.train()
    z = torch.tensor([0.0, 1.0, 2.0, -1.0])
    labels = torch.tensor([1, 1, 1, 1])  # CE = log(1 + e^z)
    batch = {"labels": labels, "group": torch.tensor([0, 0, 1, 1])}
    ce = [math.log1p(math.exp(v)) for v in z.tolist()]
    g0, g1 = (ce[0] + ce[1]) / 2, (ce[2] + ce[3]) / 2
    out = _fixed_output(z)
    obj = vl.objective(out, batch)
    w = [math.exp(0.5 * g0), math.exp(0.5 * g1), 1.0]
    q1 = [v / sum(w) for v in w]
    assert impl.q.tolist() == pytest.approx(q1, abs=1e-6)
    assert int(impl.num_updates) == 1
    assert sorted(obj.parts) == ["group_dro"]
    assert float(obj.loss.detach()) == pytest.approx(q1[0] * g0 + q1[1] * g1, abs=1e-6)
    # the gradient of example i is q_g / n_g times its own CE gradient; q is not differentiated
    obj.loss.backward()
    sig = torch.sigmoid(z)
    expected = torch.tensor([q1[0] / 2] * 2 + [q1[1] / 2] * 2) * sig
    assert torch.allclose(out.logits.grad[:, 0], expected, atol=1e-6)
    # second step: only group 1 present
    batch2 = {"labels": torch.tensor([1]), "group": torch.tensor([1])}
    vl.objective(_fixed_output(torch.tensor([0.0])), batch2)
    w2 = [q1[0], q1[1] * math.exp(0.5 * math.log(2)), q1[2]]
    assert impl.q.tolist() == pytest.approx([v / sum(w2) for v in w2], abs=1e-6)
    # evaluation mode computes the loss with the current weights and leaves them alone
    vl.eval()
    before = impl.q.clone()
    vl.objective(_fixed_output(z), batch)
    assert torch.equal(impl.q, before) and int(impl.num_updates) == 2


def test_group_dro_generalization_adjustment_and_soft_scores():
    cfg = GroupDROConfig(group_counts=(16, 4), generalization_adjustment=2.0, eta=1.0)
    assert cfg.num_groups == 2 and cfg.adjustments() == pytest.approx((0.5, 1.0))
    vl = causalvl.intervene(tiny_vqa(num_answers=2), cfg)
    impl = vl.interventions["0_group_dro"]
    vl.train()
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([0.0, 0.0])
    vl.objective(_fixed_output(z), {"labels": scores, "group": torch.tensor([0, 1])})
    bce = 2 * math.log(2)  # answer-summed BCE of zero logits
    w = [math.exp(bce + 0.5), math.exp(bce + 1.0)]
    assert impl.q.tolist() == pytest.approx([v / sum(w) for v in w], abs=1e-6)
    per_group = GroupDROConfig(
        group_counts=(9, 0), generalization_adjustment=(3.0, 0.0)
    ).adjustments()
    assert per_group == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "num_groups"),
        ({"num_groups": 0}, "num_groups"),
        ({"num_groups": 2, "eta": -0.1}, "eta"),
        ({"num_groups": 2, "generalization_adjustment": 1.0}, "group_counts"),
        ({"num_groups": 2, "generalization_adjustment": (1.0, 2.0, 3.0)}, "one number per group"),
        ({"num_groups": 2, "generalization_adjustment": -1.0}, "generalization_adjustment"),
        ({"num_groups": 3, "group_counts": (1, 2)}, "num_groups = 3"),
        ({"group_counts": (4, -1)}, "integers >= 0"),
        ({"group_counts": (4, 0), "generalization_adjustment": 1.0}, "no training example"),
        ({"num_groups": 2, "normalize_loss": "yes"}, "normalize_loss"),
    ],
)
def test_group_dro_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GroupDROConfig(**kwargs)


def test_group_dro_config_json_roundtrip():
    cfg = GroupDROConfig(group_counts=(3, 5), generalization_adjustment=(1.0, 0.0), eta=0.1)
    again = causalvl.InterventionConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again, GroupDROConfig)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"group": None}, "needs the batch key 'group'"),
        ({"group": torch.tensor([0, 1, 2, 6])}, r"ids in \[0, 6\].*num_groups = 6"),
        ({"group": torch.tensor([0, -1, 2, 3])}, "ids must lie in"),
        ({"group": torch.tensor([0.0, 1.0, 2.0, 3.0])}, "integer group ids"),
        ({"group": torch.tensor([0, 1])}, r"must be \(4,\)"),
        ({"labels": None}, "needs 'labels'"),
    ],
)
def test_group_dro_batch_errors(change, match):
    vl = dro()
    batch = {
        "pixel_values": torch.rand(4, 3, 8, 8),
        "input_ids": torch.randint(1, 20, (4, 5)),
        "labels": torch.tensor([0, 1, 2, 0]),
        "group": torch.tensor([0, 1, 2, 3]),
    }
    for k, v in change.items():
        if v is None:
            batch.pop(k)
        else:
            batch[k] = v
    with pytest.raises(InputError, match=match):
        vl.objective(vl(batch), batch)


def test_group_dro_save_load_roundtrip(tmp_path):
    vl = dro(eta=0.3)
    data = VQAData(8, 0)
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in data[0]}
    vl.train()
    for _ in range(3):
        vl.objective(vl(batch), batch)
    q = vl.interventions["0_group_dro"].q.clone()
    assert not torch.allclose(q, torch.full_like(q, 1 / 6))
    vl.save_pretrained(tmp_path)
    again = causalvl.load(tmp_path, tiny_vqa())
    impl = again.interventions["0_group_dro"]
    assert torch.equal(impl.q, q) and int(impl.num_updates) == 3
    assert impl.config == vl.configs[0]


def _dro_trainer(out_dir, vl, callbacks=()):
    cfg = TrainConfig(
        epochs=3,
        batch_size=8,
        lr=0.01,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=0.1,
        seed=4,
        output_dir=str(out_dir),
        select_metric="val/worst_group_accuracy",
    )
    return Trainer(
        vl,
        VQAData(40, 0),
        eval_data={"val": VQAData(16, 1)},
        config=cfg,
        callbacks=list(callbacks),
    )


def test_group_dro_interrupt_and_resume_is_bitwise_equal(tmp_path):
    class StopAfter(causalvl.Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 0:
                raise KeyboardInterrupt("simulated interrupt")

    full = dro(eta=0.5)
    r_full = _dro_trainer(tmp_path / "full", full).fit()
    cut = dro(eta=0.5)
    with pytest.raises(KeyboardInterrupt):
        _dro_trainer(tmp_path / "cut", cut, [StopAfter()]).fit()
    q_after_one = load_checkpoint(tmp_path / "cut" / "last").model["interventions.0_group_dro.q"]
    assert not torch.allclose(q_after_one, torch.full((6,), 1 / 6))  # q is in the checkpoint
    resumed = causalvl.intervene(tiny_vqa(seed=9), GroupDROConfig(num_groups=6, eta=0.5))
    r_res = _dro_trainer(tmp_path / "cut", resumed).fit(resume=True)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert r_full.history == r_res.history
    assert "val/worst_group_accuracy" in r_res.final_metrics
    assert int(resumed.interventions["0_group_dro"].num_updates) == 3 * 5


# ----------------------------------------------------------------------------------------
# JTT
# ----------------------------------------------------------------------------------------
class Points(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"input": self.x[i], "labels": self.y[i]}


def test_jtt_error_set_of_a_fixed_linear_model():
    net = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(3, 2))  # predicts argmax over (x0, x1, 0)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -2.0], [2.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 2, 0, 1])  # predictions 0, 1, 2, 0, 1 -> only index 1 is wrong
    net.train()
    errors = jtt_error_set(net, Points(x, y), batch_size=2)
    assert errors.tolist() == [1] and errors.dtype == torch.long
    assert net.training  # mode restored
    y2 = torch.tensor([1, 1, 2, 2, 0])
    assert jtt_error_set(net, Points(x, y2), batch_size=4).tolist() == [0, 3, 4]


def test_jtt_error_set_of_a_wrapped_model_and_soft_scores():
    vl = causalvl.intervene(tiny_vqa(), causalvl.IdentityConfig())
    data = VQAData(20, 3)
    batch = {k: torch.stack([data[i][k] for i in range(20)]) for k in data[0]}
    vl.eval()
    with torch.no_grad():
        pred = vl(batch).logits.argmax(-1)
    expected = (pred != data.labels).nonzero().flatten().tolist()
    assert expected and jtt_error_set(vl, data, batch_size=7).tolist() == expected

    class Soft(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            scores = [[1.0, 0.3, 0.0], [0.0, 0.6, 0.6], [0.0, 0.0, 0.3]][i]
            return {"input": torch.tensor([1.0, 0.0]), "labels": torch.tensor(scores)}

    net = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))  # always answer 1
    # answer 1 is below the best score for 0 and 2, and among the best for 1
    assert jtt_error_set(net, Soft()).tolist() == [0, 2]


def test_jtt_error_set_errors():
    net = nn.Linear(2, 2)
    data = Points(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="not a DataLoader"):
        jtt_error_set(net, DataLoader(data))
    with pytest.raises(InputError, match="empty"):
        jtt_error_set(net, Points(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ConfigError, match="batch_size"):
        jtt_error_set(net, data, batch_size=0)

    class NoLabels(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"input": torch.zeros(2)}

    with pytest.raises(InputError, match="needs 'labels'"):
        jtt_error_set(net, NoLabels())


def test_upsample_layout_and_collate():
    class WithCollate(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return i

        @staticmethod
        def collate(items):
            return {"ids": torch.tensor(items)}

    view = upsample(WithCollate(), torch.tensor([4, 1]), factor=3)
    assert len(view) == 5 + 2 * 2
    assert [view[i] for i in range(len(view))] == [0, 1, 2, 3, 4, 4, 1, 4, 1]
    assert view[-1] == 1 and view.source_indices.tolist() == [0, 1, 2, 3, 4, 4, 1, 4, 1]
    assert view.collate([1, 2])["ids"].tolist() == [1, 2]
    assert len(upsample(WithCollate(), [], factor=5)) == 5
    assert len(upsample(WithCollate(), [2], factor=1)) == 5
    with pytest.raises(IndexError):
        view[9]
    # the Trainer sees the collate function and every copy
    loader = DataLoader(view, batch_size=9, collate_fn=view.collate)
    assert sorted(next(iter(loader))["ids"].tolist()) == [0, 1, 1, 1, 2, 3, 4, 4, 4]


@pytest.mark.parametrize(
    ("indices", "factor", "error", "match"),
    [
        ([1], 0, ConfigError, "factor"),
        ([1], 2.5, ConfigError, "factor"),
        ([5], 2, InputError, "span"),
        ([-1], 2, InputError, "span"),
        ([1, 1], 2, InputError, "duplicates"),
        (torch.tensor([0.5]), 2, InputError, "integer"),
        (torch.tensor([[0, 1]]), 2, InputError, "integer"),
        (torch.tensor([True, False]), 2, InputError, "boolean mask"),
    ],
)
def test_upsample_errors(indices, factor, error, match):
    with pytest.raises(error, match=match):
        upsample(list(range(5)), indices, factor)


class Blobs(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        centres = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]])
        self.x = centres[self.y] + 1.2 * torch.randn(n, 2, generator=g)
        self.group = self.y * 2 + torch.arange(n) % 2

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i], "group": self.group[i]}


def _blob_objective(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["labels"])


def _blob_predict(model, batch):
    return model(batch["x"])


def test_train_jtt_runs_both_stages_on_the_upsampled_data(tmp_path):
    built = []

    def build():
        with torch.random.fork_rng():
            torch.manual_seed(len(built))
            net = nn.Linear(2, 3)
        built.append(net)
        return net

    train = Blobs(60, 0)
    cfg = TrainConfig(
        epochs=2,
        batch_size=16,
        lr=0.05,
        weight_decay=0.1,
        output_dir=str(tmp_path),
        select_metric="val/worst_group_accuracy",
    )
    res = train_jtt(
        build,
        train,
        id_epochs=1,
        upweight=4,
        config=cfg,
        eval_data={"val": Blobs(30, 1)},
        objective=_blob_objective,
        predict=_blob_predict,
    )
    assert len(built) == 2 and res.model is built[1]
    k = int(res.error_set.numel())
    assert 0 < k < 60
    # the error set is the identification model's own mistakes
    assert torch.equal(res.error_set, jtt_error_set(built[0], train, predict=_blob_predict))
    assert res.upsampled_size == 60 + 4 * k and res.error_rate == pytest.approx(k / 60)
    assert res.identification.epochs_completed == 1 and res.result.epochs_completed == 2
    assert res.result.global_step == 2 * math.ceil((60 + 4 * k) / 16)
    assert res.result.best_metric == "val/worst_group_accuracy"
    assert (tmp_path / "identification" / "last").is_dir() and (
        tmp_path / "final" / "best"
    ).is_dir()


def test_train_jtt_errors_and_empty_error_set_warning():
    train = Blobs(12, 0)
    cfg = TrainConfig(epochs=1, batch_size=4)
    kw = dict(objective=_blob_objective, predict=_blob_predict)
    net = nn.Linear(2, 3)
    with pytest.raises(ConfigError, match="same model twice"):
        train_jtt(lambda: net, train, id_epochs=1, upweight=1, config=cfg, **kw)
    with pytest.raises(ConfigError, match="id_epochs"):
        train_jtt(lambda: nn.Linear(2, 3), train, id_epochs=0, upweight=1, config=cfg, **kw)
    with pytest.raises(ConfigError, match="upweight"):
        train_jtt(lambda: nn.Linear(2, 3), train, id_epochs=1, upweight=-1, config=cfg, **kw)
    with pytest.raises(ConfigError, match="TrainConfig"):
        train_jtt(lambda: nn.Linear(2, 3), train, id_epochs=1, upweight=1, config={}, **kw)
    with pytest.raises(ConfigError, match="build_model"):
        train_jtt(net, train, id_epochs=1, upweight=1, config=cfg, **kw)

    class Perfect(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.scale

    class Onehot(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {"x": 10 * F.one_hot(torch.tensor(i % 3), 3).float(), "labels": i % 3}

    with pytest.warns(UserWarning, match="nothing is upweighted"):
        res = train_jtt(Perfect, Onehot(), id_epochs=1, upweight=3, config=cfg, **kw)
    assert res.error_set.numel() == 0 and res.upsampled_size == 6


# ----------------------------------------------------------------------------------------
# DFR
# ----------------------------------------------------------------------------------------
class Spurious(Dataset):
    """3 answers; a core feature (one-hot answer + noise 0.45) and a stronger, cleaner spurious
    one (2 x one-hot attribute + noise 0.1) whose attribute equals the answer with probability
    ``p_align``; plus 4 noise dimensions. ``group = answer * 3 + attribute``."""

    def __init__(self, n: int, p_align: float, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 3, (n,), generator=g)
        align = torch.rand(n, generator=g) < p_align
        a = torch.where(align, y, (y + torch.randint(1, 3, (n,), generator=g)) % 3)
        core = F.one_hot(y, 3).float() + 0.45 * torch.randn(n, 3, generator=g)
        spur = 2.0 * F.one_hot(a, 3).float() + 0.1 * torch.randn(n, 3, generator=g)
        self.x = torch.cat([core, spur, torch.randn(n, 4, generator=g)], 1)
        self.y, self.group = y, y * 3 + a

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"input": self.x[i], "labels": self.y[i], "group": self.group[i]}


def _accuracies(net: nn.Module, data: Spurious) -> tuple[float, float]:
    with torch.no_grad():
        ok = (net(data.x).argmax(1) == data.y).float()
    return float(ok.mean()), min(float(ok[data.group == g].mean()) for g in data.group.unique())


def _erm_on_spurious() -> nn.Module:
    train = Spurious(600, 0.97, 0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(OrderedDict(backbone=nn.Identity(), classifier=nn.Linear(10, 3)))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(net(train.x), train.y).backward()
        opt.step()
    return net


@pytest.mark.parametrize("C", [None, 0.3])
def test_dfr_refit_recovers_the_core_feature(C):
    net = _erm_on_spurious()
    test = Spurious(3000, 1 / 3, 2)  # attribute independent of the answer
    erm_acc, erm_worst = _accuracies(net, test)
    assert erm_acc < 0.75 and erm_worst < 0.6  # ERM leans on the spurious feature
    refit_set = Spurious(300, 0.6, 1)  # held out, still skewed: balancing does the rest
    res = refit_last_layer(net, refit_set, balance_key="group", num_subsamples=5, C=C, seed=0)
    acc, worst = _accuracies(net, test)
    assert acc > 0.85 and worst > 0.75, (acc, worst)
    assert res.layer == "classifier" and res.num_examples == 300 and res.num_answers == 3
    assert len(res.cells) == 9 and sum(res.cell_counts) == 300
    assert res.subsample_size == 9 * min(res.cell_counts)
    assert res.cell_table[(0,)] == int((refit_set.group == 0).sum())
    if C is None:
        assert set(res.C_scores) == set(causalvl.training.dfr.DFR_C_GRID)
        assert (
            max(res.C_scores, key=lambda c: (res.C_scores[c], -list(res.C_scores).index(c)))
            == res.C
        )
    else:
        assert res.C == 0.3 and res.C_scores == {}
    # the reported refit accuracy is that of the weights written into the layer
    assert res.refit_accuracy == pytest.approx(
        float((net(refit_set.x).argmax(1) == refit_set.y).float().mean())
    )
    assert net.classifier.weight.dtype == torch.float32
    assert not torch.equal(net.classifier.weight, res.previous_weight)


def test_dfr_is_seeded_and_balances_on_several_keys():
    a, b = _erm_on_spurious(), _erm_on_spurious()
    refit_set = Spurious(200, 0.6, 1)
    r1 = refit_last_layer(a, refit_set, balance_key="labels", num_subsamples=3, seed=5)
    r2 = refit_last_layer(b, refit_set, balance_key="labels", num_subsamples=3, seed=5)
    assert torch.equal(a.classifier.weight, b.classifier.weight) and r1.C == r2.C
    assert r1.cells == ((0,), (1,), (2,)) and r1.balance_key == ("labels",)


def test_dfr_on_a_wrapped_model_finds_the_classifier():
    vl = causalvl.intervene(tiny_vqa(), causalvl.IdentityConfig())
    vl.train()
    data = VQAData(60, 4)
    before = {k: v.clone() for k, v in vl.state_dict().items()}
    res = refit_last_layer(vl, data, num_subsamples=2)  # default: (question_type, labels)
    assert res.layer == "classifier" and res.balance_key == ("question_type", "labels")
    assert {c[1] for c in res.cells} == {0, 1, 2} and vl.training
    changed = [k for k, v in vl.state_dict().items() if not torch.equal(v, before[k])]
    assert sorted(changed) == ["base_model.classifier.bias", "base_model.classifier.weight"]
    assert torch.equal(before["base_model.classifier.weight"], res.previous_weight)

    # soft-score labels are balanced by their best answer
    class Soft(VQAData):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["labels"] = F.one_hot(item["labels"], 3).float() * 0.9
            return item

    res2 = refit_last_layer(vl, Soft(60, 4), balance_key="labels", C=1.0, num_subsamples=1)
    assert res2.cell_counts == tuple(int((data.labels == k).sum()) for k in range(3))


def test_dfr_binary_single_logit_and_two_logit_layers():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 2
    x = torch.stack([2.0 * y - 1, torch.zeros(80)], 1) + 0.3 * torch.randn(80, 2, generator=g)
    for out in (1, 2):
        net = nn.Sequential(nn.Identity(), nn.Linear(2, out))
        res = refit_last_layer(net, Points(x, y), balance_key="labels", C=1.0, num_subsamples=2)
        with torch.no_grad():
            z = net(x)
        pred = (z[:, 0] > 0).long() if out == 1 else z.argmax(1)
        assert res.refit_accuracy == 1.0 and bool((pred == y).all())
        assert res.num_answers == 2


def test_dfr_errors():
    net = _erm_on_spurious()
    data = Spurious(60, 0.6, 1)
    with pytest.raises(ConfigError, match="not an nn.Linear"):
        refit_last_layer(net, data, layer="backbone", balance_key="group")
    with pytest.raises(NoMatchingModuleError, match="no module 'head'"):
        refit_last_layer(net, data, layer="head", balance_key="group")
    with pytest.raises(InputError, match="no 'question_type'"):
        refit_last_layer(net, data)
    missing = Points(data.x[data.y != 2], data.y[data.y != 2])
    with pytest.raises(InputError, match=r"answers \[2\]"):
        refit_last_layer(net, missing, balance_key="labels")
    few = Points(data.x[:3], torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="fewer than 2 examples"):
        refit_last_layer(net, few, balance_key="labels")
    refit_last_layer(net, few, balance_key="labels", C=1.0, num_subsamples=1)  # fixed C: fine
    for kwargs, match in [
        ({"balance_key": ()}, "balance_key"),
        ({"num_subsamples": 0}, "num_subsamples"),
        ({"C": 0.0}, "C = 0.0"),
        ({"C_grid": []}, "C_grid"),
        ({"penalty": "elasticnet"}, "penalty"),
    ]:
        with pytest.raises(ConfigError, match=match):
            refit_last_layer(net, data, **{"balance_key": "group", **kwargs})

    class Scaled(nn.Module):  # the logits are not any Linear's output
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, input):
            return 2 * self.fc(input)

    with pytest.raises(NoMatchingModuleError, match="pass layer="):
        refit_last_layer(Scaled(), data, balance_key="group")
    res = refit_last_layer(Scaled(), data, layer="fc", balance_key="labels", C=1.0)
    assert res.layer == "fc"


def test_dfr_writes_the_unstandardised_classifier():
    """The layer's logits on raw features equal the regression's decision on standardised ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from causalvl.training.dfr import _SKLEARN_L1_RATIO

    g = torch.Generator().manual_seed(1)
    y = torch.arange(60) % 2
    x = torch.stack([2.0 * y - 1, torch.zeros(60), torch.zeros(60)], 1)
    x = x + torch.randn(60, 3, generator=g)
    x = x * torch.tensor([100.0, 0.01, 3.0]) + torch.tensor([50.0, -7.0, 0.0])
    net = nn.Sequential(nn.Identity(), nn.Linear(3, 1).double())
    res = refit_last_layer(
        net, Points(x.double(), y), balance_key="labels", C=0.5, num_subsamples=1
    )
    assert res.subsample_size == 60  # balanced already: the subsample is the whole set
    z = StandardScaler().fit_transform(x.double().numpy())
    penalty = {"l1_ratio": 1.0} if _SKLEARN_L1_RATIO else {"penalty": "l1"}
    clf = LogisticRegression(C=0.5, solver="liblinear", tol=1e-8, **penalty).fit(z, y.numpy())
    with torch.no_grad():
        ours = net(x.double())[:, 0].numpy()
    ref = clf.decision_function(z)
    assert abs(ours - ref).max() < 0.05 * abs(ref).max()
    assert net[1].weight.dtype == torch.float64


def _dro_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        vl = causalvl.intervene(tiny_vqa(num_answers=2), GroupDROConfig(num_groups=3, eta=0.5))
        vl.train()
        z = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 3.0])
        groups = torch.tensor([0, 0, 1, 1, 2, 0])
        part = slice(0, 3) if rank == 0 else slice(3, 6)
        batch = {"labels": torch.ones(3, dtype=torch.long), "group": groups[part]}
        vl.objective(_fixed_output(z[part]), batch)
        torch.save(vl.interventions["0_group_dro"].q, f"{out_dir}/q{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_group_dro_weights_agree_across_processes(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed gloo")
    mp.spawn(_dro_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    q0, q1 = torch.load(tmp_path / "q0.pt"), torch.load(tmp_path / "q1.pt")
    assert torch.equal(q0, q1)
    # the update saw the group means of the whole (6-example) batch, as one process would
    vl = causalvl.intervene(tiny_vqa(num_answers=2), GroupDROConfig(num_groups=3, eta=0.5))
    vl.train()
    z = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 3.0])
    batch = {"labels": torch.ones(6, dtype=torch.long), "group": torch.tensor([0, 0, 1, 1, 2, 0])}
    vl.objective(_fixed_output(z), batch)
    assert torch.allclose(q0, vl.interventions["0_group_dro"].q, atol=1e-6)


@pytest.mark.slow
def test_group_dro_and_jtt_raise_worst_group_accuracy_over_erm(tmp_path):
    """A linear classifier on Spurious data (minority groups of 2-5 examples): selected by
    worst-group validation accuracy, ERM stays near 0 on the worst group of a balanced test set;
    Group DRO and JTT lift it, and JTT's error set is exactly the minority groups."""
    train, val, test = Spurious(600, 0.97, 0), Spurious(300, 1 / 3, 1), Spurious(3000, 1 / 3, 2)

    def build():
        net = nn.Sequential(OrderedDict(backbone=nn.Identity(), classifier=nn.Linear(10, 3)))
        adapter = causalvl.GenericAdapter(vision_keys=["input"], language_keys=[])
        return causalvl.intervene(net, causalvl.IdentityConfig(), adapter=adapter)

    def config(name):
        return TrainConfig(
            epochs=30,
            batch_size=32,
            lr=0.05,
            optimizer="sgd",
            momentum=0.9,
            weight_decay=0.01,
            seed=0,
            select_metric="val/worst_group_accuracy",
            output_dir=str(tmp_path / name),
            load_best_at_end=True,
        )

    torch.manual_seed(0)
    erm = build()
    Trainer(erm, train, eval_data={"val": val}, config=config("erm")).fit()
    erm_acc, erm_worst = _accuracies(erm.base_model, test)

    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(backbone=nn.Identity(), classifier=nn.Linear(10, 3)))
    adapter = causalvl.GenericAdapter(vision_keys=["input"], language_keys=[])
    dro_vl = causalvl.intervene(net, GroupDROConfig(num_groups=9, eta=0.1), adapter=adapter)
    Trainer(dro_vl, train, eval_data={"val": val}, config=config("dro")).fit()
    dro_acc, dro_worst = _accuracies(net, test)

    torch.manual_seed(0)
    jtt = train_jtt(
        build, train, id_epochs=1, upweight=20, config=config("jtt"), eval_data={"val": val}
    )
    jtt_acc, jtt_worst = _accuracies(jtt.model.base_model, test)
    minority = (train.group // 3 != train.group % 3).nonzero().flatten()
    assert jtt.error_set.tolist() == minority.tolist()

    assert erm_worst < 0.1
    assert dro_worst > erm_worst + 0.25 and dro_acc > erm_acc
    assert jtt_worst > 0.6 and jtt_acc > 0.8
