"""``torchrun --nproc_per_node=2`` (gloo, CPU): both ranks end with identical weights and only
rank 0 writes checkpoints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(script: Path, out: Path, *, timeout: int) -> None:
    """Run ``script out`` on two CPU ranks with torchrun; fail with its output if it fails."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(script),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_ranks_identical_weights(tmp_path):
    _torchrun(Path(__file__).with_name("_ddp_script.py"), tmp_path, timeout=240)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["sha256"] == r1["sha256"]
    # 24 examples, 2 ranks, batch 4 -> 3 steps per epoch per rank
    assert r0["steps"] == r1["steps"] == 6
    assert r0["checkpoint_writes"] > 0 and r1["checkpoint_writes"] == 0
    assert not r0["process_group_alive"] and not r1["process_group_alive"]
    assert (tmp_path / "run" / "last" / "checkpoint.json").is_file()
    assert (tmp_path / "run" / "run.json").is_file()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 2


_RESUME_SCRIPT = """
import hashlib, json, os, sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import causalvl
from causalvl.interventions.ensembles import set_bias_prior
from causalvl.training import Callback, TrainConfig, Trainer


class Blobs(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.x = torch.randn(3, 8, generator=g)[self.labels] * 2 + torch.randn(n, 8, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": int(self.labels[i])}


def net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def objective(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["labels"])


class Crash(Callback):
    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt


def digest(module):
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode() + t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(100 + rank)  # dropout masks differ per rank
    cfg = lambda d: TrainConfig(
        epochs=3, batch_size=4, lr=0.05, seed=2, device="cpu", output_dir=str(out / d)
    )
    full = net()
    Trainer(full, Blobs(24, 0), config=cfg("full"), objective=objective).fit()
    torch.manual_seed(100 + rank)
    try:
        Trainer(net(), Blobs(24, 0), config=cfg("cut"), objective=objective, callbacks=[Crash()]).fit()
    except KeyboardInterrupt:
        pass
    torch.manual_seed(7)  # whatever the global RNG holds now must not matter
    resumed = net()
    Trainer(resumed, Blobs(24, 0), config=cfg("cut"), objective=objective).fit(resume=True)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        tiny = causalvl.models.TinyVQA(vocab_size=20, num_answers=5, image_size=8, hidden=16)
    vl = causalvl.intervene(tiny, causalvl.GGEConfig(hidden_sizes=(8,)))
    set_bias_prior(vl, torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) * 0.9)
    g = torch.Generator().manual_seed(3)
    data = [
        {
            "pixel_values": torch.rand(3, 8, 8, generator=g),
            "input_ids": torch.randint(1, 20, (5,), generator=g),
            "question_type": int(torch.randint(0, 3, (), generator=g)),
            "labels": int(torch.randint(0, 5, (), generator=g)),
        }
        for _ in range(16)
    ]
    gge = Trainer(vl, data, config=TrainConfig(epochs=1, batch_size=4, device="cpu")).fit()
    info = {
        "full": digest(full),
        "resumed": digest(resumed),
        "gge": digest(vl),
        "gge_steps": gge.global_step,
    }
    (out / f"resume{rank}.json").write_text(json.dumps(info))
    dist.barrier()
    dist.destroy_process_group()


main(Path(sys.argv[1]))
"""


@pytest.mark.slow
def test_torchrun_resume_is_bitwise_and_stages_agree(tmp_path):
    """Under torchrun a run interrupted after epoch 1 and resumed ends with the weights of an
    uninterrupted one (every rank's dropout RNG restored), and GGE-iter's two optimizer
    stages per batch keep the ranks in step."""
    script = tmp_path / "resume_script.py"
    script.write_text(_RESUME_SCRIPT)
    _torchrun(script, tmp_path, timeout=300)
    r0 = json.loads((tmp_path / "resume0.json").read_text())
    r1 = json.loads((tmp_path / "resume1.json").read_text())
    assert r0["full"] == r1["full"] and r0["resumed"] == r1["resumed"]
    assert r0["resumed"] == r0["full"]
    assert r0["gge"] == r1["gge"] and r0["gge_steps"] == 2  # 16 examples, 2 ranks, batch 4
