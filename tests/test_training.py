"""Trainer, checkpoints, schedules and TrainConfig validation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import causalvl
from causalvl.errors import CheckpointError, ConfigError
from causalvl.training import (
    BAN_MILESTONES,
    Callback,
    TrainConfig,
    Trainer,
    ban_factor,
    load_checkpoint,
    lr_factor,
)
from causalvl.training import checkpoint as ckpt_mod
from causalvl.training.checkpoint import flatten_state, unflatten_state
from causalvl.training.state import is_improvement


class Blobs(Dataset):
    """Three Gaussian blobs in 8-d, with a group id (class x parity of the index)."""

    def __init__(self, n: int = 48, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        centers = torch.randn(3, 8, generator=g) * 2
        self.x = centers[self.labels] + torch.randn(n, 8, generator=g)
        self.group = self.labels * 2 + torch.arange(n) % 2

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": int(self.labels[i]), "group": int(self.group[i])}


class DropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def ce_objective(model: nn.Module, batch: dict) -> torch.Tensor:
    return F.cross_entropy(model(batch["x"]), batch["labels"])


def make_net(seed: int = 0) -> DropNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DropNet()


class StopAfter(Callback):
    """Simulates a crash after epoch ``k`` (0-based) was checkpointed."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        if epoch == self.k:
            raise KeyboardInterrupt("simulated interrupt")


class EvaluateEveryEpoch(Callback):
    """Calls the public ``trainer.evaluate()`` after every epoch."""

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        trainer.evaluate()


def _noisy_objective(model: nn.Module, batch: dict) -> torch.Tensor:
    """ce_objective plus a draw from the global RNG (times zero), also during evaluation."""
    return ce_objective(model, batch) + 0.0 * torch.rand(())


def test_evaluate_restores_the_global_random_state():
    trainer = Trainer(
        make_net(),
        Blobs(24, 0),
        eval_data={"val": Blobs(24, 1)},
        config=TrainConfig(epochs=1, batch_size=8),
        objective=_noisy_objective,
    )
    before = torch.get_rng_state()
    trainer.evaluate()
    assert torch.equal(torch.get_rng_state(), before)


def test_a_callback_calling_evaluate_does_not_shift_training():
    data, val = Blobs(48, 0), Blobs(24, 1)
    nets = []
    for callbacks in ([], [EvaluateEveryEpoch()]):
        with torch.random.fork_rng():
            torch.manual_seed(11)  # dropout draws from the global RNG
            net = make_net()
            Trainer(
                net,
                data,
                eval_data={"val": val},
                config=_cfg(None, output_dir=None, epochs=3),
                objective=_noisy_objective,
                callbacks=callbacks,
            ).fit()
        nets.append(net)
    for (name, a), (_, b) in zip(nets[0].state_dict().items(), nets[1].state_dict().items()):
        assert torch.equal(a, b), name


def _cfg(tmp: Path, **kw) -> TrainConfig:
    base = dict(
        epochs=4,
        batch_size=8,
        lr=0.01,
        optimizer="adamw",
        schedule="warmup_cosine",
        warmup_steps=3,
        grad_clip=0.25,
        seed=3,
        output_dir=str(tmp),
        select_metric="val/accuracy",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_interrupt_and_resume_is_bitwise_equal(tmp_path):
    data, val = Blobs(48, 0), Blobs(24, 1)
    with torch.random.fork_rng():
        torch.manual_seed(11)  # dropout draws from the global RNG
        full = make_net()
        r_full = Trainer(
            full,
            data,
            eval_data={"val": val},
            config=_cfg(tmp_path / "full"),
            objective=ce_objective,
        ).fit()

    with torch.random.fork_rng():
        torch.manual_seed(11)
        first = make_net()
        with pytest.raises(KeyboardInterrupt):
            Trainer(
                first,
                data,
                eval_data={"val": val},
                config=_cfg(tmp_path / "cut"),
                objective=ce_objective,
                callbacks=[StopAfter(1)],
            ).fit()
        torch.manual_seed(999)  # whatever happens in between must not matter
        torch.rand(17)
        resumed = make_net(seed=5)  # different init: the weights must come from the checkpoint
        r_res = Trainer(
            resumed,
            data,
            eval_data={"val": val},
            config=_cfg(tmp_path / "cut"),
            objective=ce_objective,
        ).fit(resume=True)

    assert load_checkpoint(tmp_path / "cut" / "last").state["epoch"] == 4
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert r_full.history == r_res.history
    assert r_res.epochs_completed == 4 and r_res.global_step == r_full.global_step == 4 * 6
    # the run files: config, seed, versions; one metrics line per epoch
    run = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert run["seed"] == 3 and run["resumed_from_epoch"] == 2 and "torch" in run["versions"]
    assert set(run["versions"]) == set(causalvl.runtime.package_versions())
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    # dropout really was active: a run with another global RNG state ends elsewhere
    with torch.random.fork_rng():
        torch.manual_seed(12)
        other = make_net()
        Trainer(
            other,
            data,
            config=_cfg(None, output_dir=None, select_metric=None),
            objective=ce_objective,
        ).fit()
    assert not torch.equal(other.net[0].weight, full.net[0].weight)


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data = Blobs(24)
    net = make_net()
    cfg = _cfg(tmp_path, epochs=1, select_metric=None)
    Trainer(net, data, config=cfg, objective=ce_objective).fit()
    saved = {k: v.clone() for k, v in net.state_dict().items()}

    real = ckpt_mod.write_tensors
    calls = {"n": 0}

    def flaky(path, tensors):
        calls["n"] += 1
        if calls["n"] == 2:  # model file written, optimizer file half written
            path.write_bytes(b"\x00" * 11)
            raise OSError("disk full (simulated)")
        real(path, tensors)

    monkeypatch.setattr(ckpt_mod, "write_tensors", flaky)
    with pytest.raises(OSError, match="simulated"):
        Trainer(net, data, config=cfg.replace(epochs=3), objective=ce_objective).fit(resume=True)
    monkeypatch.setattr(ckpt_mod, "write_tensors", real)

    ck = load_checkpoint(tmp_path / "last")
    assert ck.state["epoch"] == 1
    assert all(torch.equal(ck.model[k], v) for k, v in saved.items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".last")]
    # and resuming from it works
    res = Trainer(make_net(7), data, config=cfg.replace(epochs=2), objective=ce_objective).fit(
        resume=True
    )
    assert res.epochs_completed == 2


def test_crash_between_renames_falls_back_to_previous(tmp_path, monkeypatch):
    data = Blobs(24)
    cfg = _cfg(tmp_path, epochs=1, select_metric=None)
    Trainer(make_net(), data, config=cfg, objective=ce_objective).fit()
    real_replace = os.replace

    def broken(src, dst):
        if Path(dst).name == "last":  # the old folder was moved aside, the new one not yet in
            raise OSError("power cut (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", broken)
    with pytest.raises(OSError, match="simulated"):
        Trainer(make_net(), data, config=cfg.replace(epochs=2), objective=ce_objective).fit(
            resume=True
        )
    monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)
    assert not (tmp_path / "last").exists()
    assert load_checkpoint(tmp_path / "last").state["epoch"] == 1


def test_checkpoint_files_have_no_pickle_and_roundtrip_optimizer(tmp_path):
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.randn(4, 8)).sum().backward()
    opt.step()
    tree, tensors = flatten_state(opt.state_dict())
    json.dumps(tree)  # plain JSON
    back = unflatten_state(tree, tensors)
    opt2 = torch.optim.Adam(make_net().parameters(), lr=0.1)
    opt2.load_state_dict(back)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(v, s2["state"][k][name])
    with pytest.raises(CheckpointError, match="object"):
        flatten_state({"x": object()})
    ckpt_mod.save_checkpoint(tmp_path / "c", ckpt_mod.Checkpoint(model=net.state_dict()))
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["checkpoint.json", "extra.safetensors", "model.safetensors"]
    for p in (tmp_path / "c").iterdir():
        assert not p.read_bytes().startswith(b"\x80")  # no pickle protocol header
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "c")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"schedule": "cosine"}, "schedule"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"device": "tpu"}, "device"),
        ({"patience": 2}, "patience"),
        ({"select_metric": "accuracy"}, "select_metric"),
        ({"lr_milestones": (5, 3)}, "lr_milestones"),
        ({"momentum": 1.5}, "momentum"),
        ({"amp_dtype": "float8"}, "amp_dtype"),
        ({"intervention_lr": 0.0}, "intervention_lr"),
    ],
)
def test_bad_config_values_are_rejected(kwargs, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kwargs)
    msg = str(info.value)
    assert f"TrainConfig.{field}" in msg and repr(next(iter(kwargs.values())))[:4] in msg


class CountingObjective:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model, batch):
        self.calls += 1
        return ce_objective(model, batch)


@pytest.mark.parametrize(
    "metric, match",
    [
        ("ood/accuracy", "no evaluation split named 'ood'"),
        ("val/worst_group_accuracy", "carry no 'group' key"),
        ("val/f1", "available"),
    ],
)
def test_unknown_selection_metric_rejected_before_training(metric, match):
    class NoGroup(Blobs):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            del item["group"]
            return item

    obj = CountingObjective()
    trainer = Trainer(
        make_net(),
        Blobs(16),
        eval_data={"val": NoGroup(8)},
        config=TrainConfig(epochs=1, select_metric=metric),
        objective=obj,
    )
    with pytest.raises(ConfigError, match=match):
        trainer.fit()
    assert obj.calls == 0


def test_other_misuse_errors(tmp_path):
    with pytest.raises(ConfigError, match="no default objective"):
        Trainer(make_net(), Blobs(8))
    with pytest.raises(ConfigError, match="output_dir"):
        Trainer(make_net(), Blobs(8), objective=ce_objective).fit(resume=True)
    with pytest.raises(ConfigError, match="split name"):
        Trainer(make_net(), Blobs(8), eval_data={"a/b": Blobs(4)}, objective=ce_objective)
    with pytest.warns(UserWarning, match="starting from scratch"):
        Trainer(
            make_net(),
            Blobs(8),
            config=TrainConfig(epochs=1, output_dir=str(tmp_path)),
            objective=ce_objective,
        ).fit(resume=True)


class _VQAData(Dataset):
    """Random TinyVQA examples (8x8 images, 5 tokens, 4 answers), with ``group`` = answer parity
    when ``groups``."""

    def __init__(self, n, seed, *, groups=False):
        g = torch.Generator().manual_seed(seed)
        self.px = torch.rand(n, 3, 8, 8, generator=g)
        self.ids = torch.randint(1, 20, (n, 5), generator=g)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.groups = groups

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {"pixel_values": self.px[i], "input_ids": self.ids[i], "labels": self.labels[i]}
        if self.groups:
            item["group"] = self.labels[i] % 2
        return item


def test_intervened_model_eval_metrics_early_stopping_and_best(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vl = causalvl.intervene(
            causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8),
            causalvl.IdentityConfig(),
        )
    cfg = TrainConfig(
        epochs=5,
        batch_size=16,
        optimizer="adamax",
        schedule="ban",
        output_dir=str(tmp_path),
        select_metric="ood/worst_group_accuracy",
        patience=1,
        min_delta=2.0,  # nothing counts as an improvement after the first epoch
        load_best_at_end=True,
    )
    result = causalvl.Trainer(
        vl,
        _VQAData(32, 0, groups=True),
        eval_data={"id": _VQAData(16, 1, groups=True), "ood": _VQAData(16, 2, groups=True)},
        config=cfg,
    ).fit()
    assert result.stopped_early and result.epochs_completed == 2 and result.best_epoch == 1
    assert set(result.final_metrics) == {
        "train/loss",
        "train/task",
        *(f"{s}/{m}" for s in ("id", "ood") for m in ("accuracy", "worst_group_accuracy", "loss")),
    }
    for s in ("id", "ood"):
        acc, worst = (
            result.final_metrics[f"{s}/accuracy"],
            result.final_metrics[f"{s}/worst_group_accuracy"],
        )
        assert 0.0 <= worst <= acc <= 1.0
    assert load_checkpoint(tmp_path / "best").state["epoch"] == 1
    again = causalvl.Trainer(
        vl,
        _VQAData(32, 0, groups=True),
        eval_data={"ood": _VQAData(16, 2, groups=True)},
        config=cfg,
    )
    resumed = again.fit(resume=True)  # an early-stopped run stays stopped
    assert resumed.stopped_early and resumed.epochs_completed == 2
    best = load_checkpoint(tmp_path / "best").model
    assert all(torch.equal(best[k], v) for k, v in vl.state_dict().items())  # load_best_at_end
    # the BanOptimizer warm-up: epoch 1 uses 0.5 x lr, epoch 2 0.75 x lr
    assert [h["lr"] for h in result.history] == pytest.approx([0.5e-3, 0.75e-3])


def test_lr_schedules_and_ban_milestones():
    assert BAN_MILESTONES == (14, 16, 18, 20, 22)
    warm = [ban_factor(e) for e in range(7)]
    assert warm == pytest.approx(torch.linspace(0.5, 2.0, 7).tolist())
    assert [ban_factor(e) for e in (7, 13, 14, 15, 16, 21, 22, 30)] == pytest.approx(
        [2.0, 2.0, 0.5, 0.5, 0.125, 2 * 0.25**4, 2 * 0.25**5, 2 * 0.25**5]
    )
    cfg = TrainConfig(epochs=24, schedule="ban", lr_milestones=(10, 12), lr_gamma=0.5)
    assert lr_factor(cfg, epoch=12, step=0, total_steps=1) == pytest.approx(0.5)
    cos = TrainConfig(epochs=2, schedule="warmup_cosine", warmup_steps=4, min_lr_ratio=0.1)
    f = [lr_factor(cos, epoch=0, step=s, total_steps=20) for s in range(20)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(f[4:], f[5:])) and f[-1] > 0.1 and f[-1] < 0.12
    step = TrainConfig(epochs=8, schedule="step")
    assert step.milestones() == (4, 6)
    assert [lr_factor(step, epoch=e, step=0, total_steps=1) for e in (0, 4, 6)] == pytest.approx(
        [1.0, 0.1, 0.01]
    )

    class LrLog(Callback):
        def __init__(self):
            self.lrs = []

        def on_step_end(self, trainer, step, parts):
            self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    log = LrLog()
    Trainer(
        make_net(),
        Blobs(16),
        config=TrainConfig(
            epochs=2,
            batch_size=4,
            lr=0.1,
            optimizer="sgd",
            schedule="warmup_cosine",
            warmup_steps=2,
        ),
        objective=ce_objective,
        callbacks=[log],
    ).fit()
    expected = [
        0.1
        * lr_factor(
            TrainConfig(epochs=2, schedule="warmup_cosine", warmup_steps=2),
            epoch=s // 4,
            step=s,
            total_steps=8,
        )
        for s in range(8)
    ]
    assert log.lrs == pytest.approx(expected)
    assert math.isclose(log.lrs[1], 0.1)


def test_amp_on_cpu_warns_and_trains_with_progress_and_logs(caplog, capsys):
    net = make_net()
    before = net.net[0].weight.clone()
    caplog.set_level("INFO", logger="causalvl.training")
    with pytest.warns(UserWarning, match="amp=True has no effect"):
        Trainer(
            net,
            Blobs(8),
            eval_data=Blobs(8, 1),
            config=TrainConfig(epochs=1, amp=True, device="cpu", progress=True, log_every=1),
            objective=ce_objective,
        ).fit()
    assert not torch.equal(before, net.net[0].weight)
    assert "epoch 1/1: train/loss" in caplog.text and "eval/accuracy" in caplog.text
    assert "epoch 1 step 1: loss" in caplog.text
    assert "epoch 1/1" in capsys.readouterr().err  # the tqdm bar


def test_gge_iterative_takes_one_optimizer_step_per_stage():
    vl = _gge_iter()
    assert vl.stages() == (("gge_question",), ("gge_base",))
    loader = _gge_batches()
    data = list(loader)
    cfg = TrainConfig(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0)
    Trainer(vl, loader, config=cfg).fit()

    ref = _gge_iter()
    opt = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=0.1, momentum=0.0)
    for batch in data:
        for stage in (0, 1):
            ref.objective(ref(batch), batch, stage=stage).loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
    for (name, a), (_, b) in zip(vl.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), name

    summed = _gge_iter()  # one step on the summed loss ends elsewhere
    opt = torch.optim.SGD([p for p in summed.parameters() if p.requires_grad], lr=0.1)
    for batch in data:
        summed.objective(summed(batch), batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert not torch.equal(summed.base_model.classifier.weight, vl.base_model.classifier.weight)
    with pytest.raises(causalvl.InterventionStateError, match="out of range"):
        vl.objective(vl(data[0]), data[0], stage=2)
    plain = causalvl.intervene(make_net_vqa(), causalvl.IdentityConfig())
    assert plain.stages() == ((),)


def make_net_vqa():
    return causalvl.models.TinyVQA(vocab_size=20, num_answers=5, image_size=8, hidden=16)


def test_intervention_lr_puts_intervention_parameters_in_their_own_group():
    net = causalvl.models.TinyVQA(vocab_size=12, num_answers=3, image_size=8, hidden=8)
    vl = causalvl.intervene(net, causalvl.RUBiConfig(hidden_sizes=(8,)))
    data = [
        {
            "pixel_values": torch.rand(3, 8, 8),
            "input_ids": torch.tensor([1, 2, 3]),
            "labels": torch.tensor(i % 3),
        }
        for i in range(8)
    ]
    config = TrainConfig(
        epochs=1, batch_size=4, lr=1e-3, intervention_lr=1e-2, schedule="warmup_cosine"
    )
    trainer = Trainer(vl, data, config=config)
    trainer.fit()
    groups = trainer.optimizer.param_groups
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-2]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in vl.intervention_parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.parameters()}


# -- TrainState: the one thing a checkpoint holds and a resume restores ------------------------
#: The fields of checkpoint.json's training state and the extra tensors, as written since
#: format 1; a checkpoint with exactly these must keep resuming.
FORMAT_1_STATE_KEYS = {
    "epoch",
    "step",
    "history",
    "best",
    "bad_epochs",
    "scheduler",
    "world_size",
    "config",
    "scaler",
}


def _as_format_1(directory: Path) -> None:
    """Rewrite the checkpoint in ``directory`` field by field as format 1 wrote it (the
    training state built by hand, RNG states under their format-1 names only)."""
    ck = load_checkpoint(directory)
    s = ck.state
    state = {
        "epoch": s["epoch"],
        "step": s["step"],
        "history": s["history"],
        "best": {
            "metric": s["best"]["metric"],
            "value": s["best"]["value"],
            "epoch": s["best"]["epoch"],
        },
        "bad_epochs": s["bad_epochs"],
        "scheduler": {"name": s["scheduler"]["name"], "factor": s["scheduler"]["factor"]},
        "world_size": 1,
        "config": s["config"],
        "scaler": None,
    }
    extra = {
        "rng/data": ck.extra_tensors["rng/data"],
        "rng/torch_cpu/rank0": ck.extra_tensors["rng/torch_cpu/rank0"],
    }
    ckpt_mod._discard(directory)
    ckpt_mod.save_checkpoint(
        directory,
        ckpt_mod.Checkpoint(
            model=ck.model, optimizer=ck.optimizer, extra_tensors=extra, state=state
        ),
    )


def test_format_1_checkpoint_resumes_bitwise(tmp_path):
    data, val = Blobs(48, 0), Blobs(24, 1)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        full = make_net()
        Trainer(
            full,
            data,
            eval_data={"val": val},
            config=_cfg(tmp_path / "full"),
            objective=ce_objective,
        ).fit()
        torch.manual_seed(11)
        with pytest.raises(KeyboardInterrupt):
            Trainer(
                make_net(),
                data,
                eval_data={"val": val},
                config=_cfg(tmp_path / "cut"),
                objective=ce_objective,
                callbacks=[StopAfter(1)],
            ).fit()
        written = load_checkpoint(tmp_path / "cut" / "last")
        # what this version writes keeps format 1's fields, so earlier versions read it too
        assert set(written.state) == FORMAT_1_STATE_KEYS
        assert {"rng/data", "rng/torch_cpu/rank0"} <= set(written.extra_tensors)
        _as_format_1(tmp_path / "cut" / "last")
        torch.manual_seed(999)
        resumed = make_net(seed=5)
        result = Trainer(
            resumed,
            data,
            eval_data={"val": val},
            config=_cfg(tmp_path / "cut"),
            objective=ce_objective,
        ).fit(resume=True)
    assert result.epochs_completed == 4
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_train_state_checkpoint_roundtrip(tmp_path):
    from causalvl.training.state import TrainState

    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.randn(4, 8)).sum().backward()
    opt.step()
    state = TrainState(
        epoch=2,
        step=12,
        history=[{"epoch": 1.0, "val/accuracy": 0.5}, {"epoch": 2.0, "val/accuracy": 0.75}],
        best_value=0.75,
        best_epoch=2,
        bad_epochs=0,
        lr_factor=0.5,
        model=net.state_dict(),
        objective={"w": torch.ones(3)},
        optimizer=opt.state_dict(),
        scaler={"scale": 1024.0, "_growth_tracker": 3},
        rng={"data": torch.Generator().manual_seed(1).get_state()},
        world_size=1,
        config=TrainConfig(epochs=3, select_metric="val/accuracy").to_dict(),
    )
    ckpt_mod.save_checkpoint(tmp_path / "last", state.to_checkpoint())
    back = TrainState.from_checkpoint(load_checkpoint(tmp_path / "last"), tmp_path, epochs=3)
    for name in ("epoch", "step", "history", "best_value", "best_epoch", "bad_epochs"):
        assert getattr(back, name) == getattr(state, name), name
    assert back.lr_factor == 0.5 and back.scaler == state.scaler and back.config == state.config
    assert all(torch.equal(back.model[k], v) for k, v in state.model.items())
    assert torch.equal(back.objective["w"], torch.ones(3))
    assert torch.equal(back.rng["data"], state.rng["data"])
    assert back.optimizer["param_groups"] == state.optimizer["param_groups"]
    counters = back.counters()
    assert counters.model is None and counters.optimizer is None and counters.rng == {}
    with pytest.raises(CheckpointError, match="epoch"):  # more epochs than the run has
        TrainState.from_checkpoint(load_checkpoint(tmp_path / "last"), tmp_path, epochs=1)


# -- model selection: the comparison and its delta ---------------------------------------------
@pytest.mark.parametrize(
    "mode, min_delta, value, best, better",
    [
        ("max", 0.0, 0.75, 0.5, True),
        ("max", 0.0, 0.5, 0.75, False),
        ("max", 0.0, 0.5, 0.5, False),  # a tie is no improvement
        ("max", 0.25, 0.625, 0.5, False),  # better, but by less than min_delta
        ("max", 0.25, 0.75, 0.5, False),  # better by exactly min_delta
        ("max", 0.25, 0.875, 0.5, True),
        ("max", 0.25, 0.375, 0.5, False),
        ("min", 0.0, 0.25, 0.5, True),
        ("min", 0.0, 0.75, 0.5, False),
        ("min", 0.0, 0.5, 0.5, False),
        ("min", 0.25, 0.375, 0.5, False),
        ("min", 0.25, 0.25, 0.5, False),
        ("min", 0.25, 0.125, 0.5, True),
        ("min", 0.25, 0.625, 0.5, False),
        ("max", 0.25, 0.0, None, True),  # the first value always counts
        ("min", 0.0, 5.0, float("nan"), True),
        ("max", 0.0, float("nan"), 0.5, False),
        ("max", 0.0, float("nan"), None, False),
    ],
)
def test_is_improvement_follows_mode_and_min_delta(mode, min_delta, value, best, better):
    assert is_improvement(value, best, mode=mode, min_delta=min_delta) is better


def test_selection_in_min_mode_keeps_the_lowest_loss_epoch(tmp_path):
    cfg = TrainConfig(
        epochs=4,
        batch_size=8,
        lr=0.05,
        seed=1,
        output_dir=str(tmp_path),
        select_metric="val/loss",
        select_mode="min",
    )
    result = Trainer(
        make_net(), Blobs(24), eval_data={"val": Blobs(12, 1)}, config=cfg, objective=ce_objective
    ).fit()
    losses = [h["val/loss"] for h in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.best_value == min(losses)
    assert load_checkpoint(tmp_path / "best").state["epoch"] == result.best_epoch


# -- optimizer stages with a user objective -----------------------------------------------------
def _gge_iter():
    from causalvl.interventions.ensembles import set_bias_prior

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = causalvl.models.TinyVQA(vocab_size=20, num_answers=5, image_size=8, hidden=16)
    vl = causalvl.intervene(net, causalvl.GGEConfig(hidden_sizes=(8,)))
    set_bias_prior(vl, torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) * 0.9)
    return vl


def _gge_batches():
    out = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        out.append(
            {
                "pixel_values": torch.rand(6, 3, 8, 8, generator=g),
                "input_ids": torch.randint(1, 20, (6, 5), generator=g),
                "question_type": torch.randint(0, 3, (6,), generator=g),
                "labels": torch.randint(0, 5, (6,), generator=g),
            }
        )
    return torch.utils.data.DataLoader(out, batch_size=None)


def test_user_objective_with_stage_keeps_the_optimizer_stages():
    cfg = TrainConfig(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0)
    default = _gge_iter()
    Trainer(default, _gge_batches(), config=cfg).fit()
    stages_seen = []

    def objective(model, batch, stage=None):
        stages_seen.append(stage)
        return model.objective(model(batch), batch, stage=stage)

    mine = _gge_iter()
    Trainer(mine, _gge_batches(), config=cfg, objective=objective).fit()
    assert stages_seen == [0, 1] * 3
    for (name, a), (_, b) in zip(default.state_dict().items(), mine.state_dict().items()):
        assert torch.equal(a, b), name

    class KwargsObjective(nn.Module):  # an nn.Module objective taking **kwargs works too
        def forward(self, model, batch, **kwargs):
            return model.objective(model(batch), batch, stage=kwargs.get("stage"))

    third = _gge_iter()
    Trainer(third, _gge_batches(), config=cfg, objective=KwargsObjective()).fit()
    assert torch.equal(third.base_model.classifier.weight, default.base_model.classifier.weight)


def test_user_objective_without_stage_is_rejected_for_a_staged_model():
    calls = []

    def objective(model, batch):
        calls.append(1)
        return model.objective(model(batch), batch)

    trainer = Trainer(
        _gge_iter(), _gge_batches(), config=TrainConfig(epochs=1), objective=objective
    )
    with pytest.raises(ConfigError, match="2 optimizer stages") as info:
        trainer.fit()
    assert "def objective(model, batch, stage=None)" in str(info.value)
    assert "stage=stage" in str(info.value)
    assert calls == []  # rejected before any step
    # a model with one stage takes any objective
    plain = causalvl.intervene(make_net_vqa(), causalvl.IdentityConfig())
    Trainer(plain, _gge_batches(), config=TrainConfig(epochs=1), objective=objective).fit()
    assert len(calls) == 3


# -- evaluation, logging and display never touch training's random state -----------------------
def noisy_objective(model: nn.Module, batch: dict) -> torch.Tensor:
    """Draws from the global RNG at every call, in training and in evaluation."""
    x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
    return F.cross_entropy(model(x), batch["labels"])


def test_evaluation_logging_and_bars_do_not_change_trained_weights(caplog):
    caplog.set_level("INFO", logger="causalvl.training")

    def weights(**kw):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = make_net()
            Trainer(
                net,
                Blobs(24),
                config=TrainConfig(
                    **{"epochs": 3, "batch_size": 8, "seed": 2, **kw.pop("config", {})}
                ),
                objective=noisy_objective,
                **kw,
            ).fit()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    quiet = weights()
    busy = weights(
        eval_data={"a": Blobs(8, 1), "b": Blobs(8, 2)},
        config={"progress": True, "log_every": 1, "select_metric": "a/loss"},
    )
    assert torch.equal(quiet, busy)
    assert not torch.equal(quiet, weights(config={"seed": 5}))  # not vacuous


def test_evaluation_does_not_draw_from_the_wrappers_generator():
    def weights(eval_data):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        cfg = causalvl.PriorSubtractionConfig(mode="noise", train_on="debiased", alpha=1.0)
        vl = causalvl.intervene(net, cfg, seed=7)
        Trainer(
            vl, _VQAData(16, 0), eval_data=eval_data, config=TrainConfig(epochs=2, batch_size=8)
        ).fit()
        return torch.cat([p.detach().flatten() for p in vl.parameters()])

    assert torch.equal(weights(None), weights({"val": _VQAData(8, 1)}))


def test_user_objective_gets_the_epoch_schedule():
    from causalvl.interventions.ensembles import set_bias_prior

    def wrapped():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = make_net_vqa()
        cfg = causalvl.GGEConfig(
            loss="decompose", variant="together", weight_schedule="sin", hidden_sizes=(8,)
        )
        vl = causalvl.intervene(net, cfg)
        set_bias_prior(vl, torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) * 0.9)
        return vl

    def objective(model, batch):  # one stage: no stage argument needed
        return model.objective(model(batch), batch)

    cfg = TrainConfig(epochs=2, lr=0.1, optimizer="sgd")
    default, mine = wrapped(), wrapped()
    Trainer(default, _gge_batches(), config=cfg).fit()
    Trainer(mine, _gge_batches(), config=cfg, objective=objective).fit()
    for (name, a), (_, b) in zip(default.state_dict().items(), mine.state_dict().items()):
        assert torch.equal(a, b), name


def test_eval_mode_restores_each_submodules_own_mode():
    net = make_net().train()
    frozen = net.net[2]  # the dropout, kept in eval mode as a frozen part would be
    frozen.eval()
    with causalvl.runtime.eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net.net[0].training and not frozen.training
    with pytest.raises(RuntimeError), causalvl.runtime.eval_mode(net):
        raise RuntimeError("the block fails")
    assert net.training and not frozen.training
    plain = object()
    with causalvl.runtime.eval_mode(plain) as same:
        assert same is plain
