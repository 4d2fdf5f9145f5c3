"""Errors a newcomer meets first say what was wrong and how to fix it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import causalvl
from causalvl.datasets import load_valse
from causalvl.errors import DataError, NoMatchingModuleError


def test_load_valse_on_a_folder_says_a_file_is_expected(tmp_path):
    (tmp_path / "existence.json").write_text("{}")
    with pytest.raises(DataError, match=r"is a folder, but a file is expected: one VALSE piece"):
        load_valse(tmp_path)
    with pytest.raises(DataError, match=r"existence\.json"):
        load_valse(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load_valse(tmp_path / "missing.json")


class _TwoTower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.img = nn.Linear(4, 8)
        self.txt = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.img(image) * self.txt(tokens).mean(1))


def _adapter() -> causalvl.GenericAdapter:
    return causalvl.GenericAdapter(
        vision_keys=["image"], language_keys=["tokens"], roles={"language_features": "txt"}
    )


def test_cfvqa_complete_graph_without_vision_role_names_the_fix():
    with pytest.raises(NoMatchingModuleError) as info:
        causalvl.intervene(_TwoTower(), causalvl.CFVQAConfig(num_answers=3), adapter=_adapter())
    message = str(info.value)
    assert "graph='complete') (the default) needs the image feature" in message
    assert "no 'vision_features' role" in message and "graph='simple'" in message
    vl = causalvl.intervene(
        _TwoTower(),
        causalvl.CFVQAConfig(num_answers=3, graph="simple"),
        adapter=_adapter(),
    )
    out = vl(image=torch.rand(2, 4), tokens=torch.ones(2, 5, dtype=torch.long))
    assert out.logits.shape == (2, 3)
