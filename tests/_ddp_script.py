"""Trained by tests/test_training_distributed.py under ``torchrun --nproc_per_node=2``.

Every rank trains the same tiny IntervenedModel with the same script; afterwards each rank
writes the checksum of its final weights and the number of checkpoint writes it made to
``<out>/rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

import causalvl
from causalvl.training import checkpoint as ckpt_mod


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


def main(out: Path) -> None:
    torch.set_num_threads(1)
    writes = {"n": 0}
    real = ckpt_mod.save_checkpoint

    def counting(*args, **kwargs):
        writes["n"] += 1
        return real(*args, **kwargs)

    ckpt_mod.save_checkpoint = counting
    import causalvl.training.trainer as trainer_mod

    trainer_mod.save_checkpoint = counting

    with torch.random.fork_rng():
        torch.manual_seed(0)  # same initial weights on every rank
        net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
    vl = causalvl.intervene(net, causalvl.IdentityConfig())
    cfg = causalvl.TrainConfig(
        epochs=2, batch_size=4, lr=0.01, seed=1, device="cpu", output_dir=str(out / "run")
    )
    trainer = causalvl.Trainer(vl, VQAData(24, 0), eval_data=VQAData(8, 1), config=cfg)
    result = trainer.fit()
    rank = int(os.environ.get("RANK", "0"))
    digest = hashlib.sha256()
    for name, tensor in sorted(vl.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    info = {
        "rank": rank,
        "world_size": trainer.dist.world_size,
        "sha256": digest.hexdigest(),
        "checkpoint_writes": writes["n"],
        "steps": result.global_step,
        "process_group_alive": torch.distributed.is_initialized(),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
