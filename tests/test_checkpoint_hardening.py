"""Training checkpoints under crashes, tampering and odd file systems."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import causalvl
from causalvl.errors import CheckpointError
from causalvl.training import TrainConfig, Trainer, load_checkpoint
from causalvl.training import checkpoint as ckpt_mod
from causalvl.training.checkpoint import Checkpoint, save_checkpoint


class Blobs(Dataset):
    def __init__(self, n: int = 24, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.x = torch.randn(3, 8, generator=g)[self.labels] * 2 + torch.randn(n, 8, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": int(self.labels[i])}


def ce_objective(model: nn.Module, batch: dict) -> torch.Tensor:
    return F.cross_entropy(model(batch["x"]), batch["labels"])


def make_net(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _cfg(tmp: Path, **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=8, lr=0.01, seed=3, output_dir=str(tmp))
    base.update(kw)
    return TrainConfig(**base)


def _train(tmp: Path, epochs: int = 1, resume: bool = False, net: nn.Module | None = None):
    net = net if net is not None else make_net()
    return Trainer(net, Blobs(), config=_cfg(tmp, epochs=epochs), objective=ce_objective).fit(
        resume=resume
    )


def _save(directory: Path, epoch: int) -> None:
    save_checkpoint(
        directory, Checkpoint(model={"w": torch.full((2,), float(epoch))}, state={"epoch": epoch})
    )


# -- item: two crashes in a row ------------------------------------------------------------------
def test_second_crash_keeps_the_only_complete_copy(tmp_path, monkeypatch):
    last = tmp_path / "last"
    _save(last, 1)
    real_replace = os.replace

    def cut_before_new_lands(src, dst):
        if Path(dst).name == "last":  # old moved aside, the new folder not renamed in
            raise OSError("power cut (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", cut_before_new_lands)
    for _ in range(2):  # the first crash leaves only .last.old; the second must not delete it
        with pytest.raises(OSError, match="simulated"):
            _save(last, 2)
        assert not last.exists() and load_checkpoint(last).state["epoch"] == 1
    monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)
    _save(last, 3)
    assert load_checkpoint(last).state["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


@pytest.mark.parametrize("first", range(7))
@pytest.mark.parametrize("second", range(7))
def test_any_two_crash_points_leave_a_loadable_checkpoint(tmp_path, monkeypatch, first, second):
    """Crash at the k-th file-system step of one write, then at the j-th of the next."""
    last = tmp_path / "last"
    _save(last, 1)
    real_replace, real_rmtree = os.replace, ckpt_mod.shutil.rmtree

    def crash_at(k):
        count = {"n": 0}

        def step():
            count["n"] += 1
            if count["n"] == k + 1:
                raise OSError(f"crash at step {k} (simulated)")

        def replace(src, dst):
            step()
            real_replace(src, dst)

        def rmtree(path, *a, **kw):
            if Path(path).name.startswith(".last.tmp-"):
                return real_rmtree(path, *a, **kw)  # the failed write's own cleanup
            step()
            real_rmtree(path, *a, **kw)

        monkeypatch.setattr(ckpt_mod.os, "replace", replace)
        monkeypatch.setattr(ckpt_mod.shutil, "rmtree", rmtree)

    for epoch, k in ((2, first), (3, second)):
        crash_at(k)
        with contextlib.suppress(OSError):
            _save(last, epoch)
        monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)
        monkeypatch.setattr(ckpt_mod.shutil, "rmtree", real_rmtree)
        assert load_checkpoint(last).state["epoch"] in (1, 2, epoch)


def test_resume_fails_loudly_when_the_checkpoint_vanished(tmp_path):
    _train(tmp_path, epochs=1)
    import shutil

    shutil.rmtree(tmp_path / "last")
    with pytest.raises(CheckpointError, match="a checkpoint was written.*metrics.jsonl"):
        _train(tmp_path, epochs=2, resume=True)
    (tmp_path / "last").mkdir()  # an empty folder where the checkpoint was
    with pytest.raises(CheckpointError, match="has no checkpoint.json"):
        _train(tmp_path, epochs=2, resume=True)
    # a fresh folder still starts from scratch with a warning
    with pytest.warns(UserWarning, match="starting from scratch"):
        _train(tmp_path / "fresh", epochs=1, resume=True)


# -- leftovers of killed writes --------------------------------------------------------------------
def test_next_save_removes_folders_left_by_killed_writes(tmp_path):
    last = tmp_path / "last"
    _save(last, 1)
    for name in (".last.tmp-abc123", ".last.trash-x", ".last.old.trash-y"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / ".best.tmp-keep").mkdir()  # another checkpoint's write: not ours to remove
    _save(last, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.tmp-keep", "last"]


# -- file modes ------------------------------------------------------------------------------------
def test_checkpoint_and_saved_weights_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        _save(tmp_path / "run" / "last", 1)
        net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
        causalvl.intervene(net, causalvl.IdentityConfig()).save_pretrained(tmp_path / "sp")
        causalvl.ConfounderDictionary(torch.eye(2)).save(tmp_path / "sp")
    finally:
        os.umask(previous)
    last = tmp_path / "run" / "last"
    assert stat.S_IMODE(last.stat().st_mode) == 0o755
    for f in [*last.iterdir(), *(tmp_path / "sp").iterdir()]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


# -- tampered training state -----------------------------------------------------------------------
def _tamper(tmp: Path, edit) -> None:
    index_path = tmp / "last" / "checkpoint.json"
    index = json.loads(index_path.read_text())
    edit(index)
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda ix: ix["state"].pop("epoch"), "epoch"),
        (lambda ix: ix["state"].update(epoch="two"), "epoch"),
        (lambda ix: ix["state"].update(epoch=-5), "epoch"),
        (lambda ix: ix["state"].update(epoch=10**6), "epoch"),
        (lambda ix: ix["state"].update(epoch=1.5), "epoch"),
        (lambda ix: ix["state"].update(step=None), "step"),
        (lambda ix: ix["state"].update(history=5), "history"),
        (lambda ix: ix["state"].update(history=[{"a": "x"}]), "history"),
        (lambda ix: ix["state"].update(best=5), "best"),
        (lambda ix: ix["state"].update(bad_epochs=-1), "bad_epochs"),
        (lambda ix: ix.update(optimizer=5), "optimizer"),
        (lambda ix: ix.update(state=[1, 2]), "state"),
        (lambda ix: ix.update(optimizer={"__dict__": 5}), "malformed"),
        (lambda ix: ix.update(state={"__tuple__": 3}), "malformed"),
    ],
)
def test_tampered_training_state_is_a_checkpoint_error(tmp_path, edit, field):
    _train(tmp_path, epochs=1)
    _tamper(tmp_path, edit)
    with pytest.raises(CheckpointError, match=field):
        _train(tmp_path, epochs=2, resume=True)


def test_tampered_index_bytes_are_checkpoint_errors(tmp_path):
    _train(tmp_path, epochs=1)
    index_path = tmp_path / "last" / "checkpoint.json"
    for raw in (b"\xff\xfe{", b"[" * 100_000, b'{"format_version": ' + b"9" * 5000 + b"}"):
        index_path.write_bytes(raw)
        with pytest.raises(CheckpointError, match="checkpoint.json is corrupted"):
            load_checkpoint(tmp_path / "last")


def test_wrong_size_rng_state_is_a_checkpoint_error(tmp_path):
    from safetensors.torch import load_file, save_file

    _train(tmp_path, epochs=1)
    extra_path = tmp_path / "last" / "extra.safetensors"
    extra = load_file(str(extra_path))
    extra["rng/torch_cpu/rank0"] = extra["rng/torch_cpu/rank0"][:100].clone()
    save_file(extra, str(extra_path))
    net = make_net(4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng_before = torch.get_rng_state()
    with pytest.raises(CheckpointError, match="RNG state 'rng/torch_cpu/rank0'"):
        _train(tmp_path, epochs=2, resume=True, net=net)
    assert torch.equal(torch.get_rng_state(), rng_before)  # nothing restored half-way
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


# -- the wrapper's own generator -------------------------------------------------------------------
class VQAData(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.px = torch.rand(n, 3, 8, 8, generator=g)
        self.ids = torch.randint(1, 20, (n, 5), generator=g)
        self.labels = torch.randint(0, 4, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.px[i], "input_ids": self.ids[i], "labels": self.labels[i]}


class StopAfter(causalvl.training.Callback):
    def __init__(self, k: int) -> None:
        self.k = k

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        if epoch == self.k:
            raise KeyboardInterrupt("simulated interrupt")


@pytest.mark.parametrize("mode", ["noise", "shuffle"])
def test_prior_subtraction_random_modes_resume_exactly(tmp_path, mode):
    def wrapped():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        cfg = causalvl.PriorSubtractionConfig(mode=mode, train_on="debiased", alpha=1.0)
        return causalvl.intervene(net, cfg, seed=7)

    cfg = _cfg(tmp_path / "full", epochs=3, batch_size=8, optimizer="sgd")
    full = wrapped()
    Trainer(full, VQAData(24, 0), config=cfg).fit()
    cut = wrapped()
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            cut,
            VQAData(24, 0),
            config=cfg.replace(output_dir=str(tmp_path / "cut")),
            callbacks=[StopAfter(0)],
        ).fit()
    resumed = wrapped()
    Trainer(resumed, VQAData(24, 0), config=cfg.replace(output_dir=str(tmp_path / "cut"))).fit(
        resume=True
    )
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(full.rng_state()["wrapper"], resumed.rng_state()["wrapper"])
    # the generator really mattered: without its state the run ends elsewhere
    other = wrapped()
    other.set_rng_state({"wrapper": torch.Generator().manual_seed(99).get_state()})
    Trainer(other, VQAData(24, 0), config=cfg.replace(output_dir=None)).fit()
    assert not all(torch.equal(a, b) for a, b in zip(full.parameters(), other.parameters()))


def test_set_rng_state_rejects_unknown_or_malformed_states():
    vl = causalvl.intervene(
        causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8),
        causalvl.IdentityConfig(),
    )
    state = vl.rng_state()
    assert set(state) == {"wrapper"}
    with pytest.raises(CheckpointError, match="belong to no generator"):
        vl.set_rng_state({"other": state["wrapper"]})
    with pytest.raises(CheckpointError, match="'wrapper' is torch.uint8 \\(10,\\)"):
        vl.set_rng_state({"wrapper": state["wrapper"][:10]})
    vl.set_rng_state(state)
