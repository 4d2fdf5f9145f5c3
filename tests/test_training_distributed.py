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


@pytest.mark.slow
def test_torchrun_two_ranks_identical_weights(tmp_path):
    script = Path(__file__).with_name("_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(script.parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
