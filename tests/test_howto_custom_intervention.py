"""docs/howto_custom_intervention.md: its code blocks run, in order, as one program."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "howto_custom_intervention.md"


def test_the_custom_intervention_howto_runs(capsys, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3, "the page has a config, an implementation and a training block"
    # a real module, as a user's file would be (dataclasses look their module up)
    module = types.ModuleType("howto_custom_intervention")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    exec(compile("\n".join(blocks), str(PAGE), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["['vision_effect'] (8,)", "['gate_penalty', 'task']"]
    vl = namespace["vl"]
    assert vl.interventions["0_howto_gated_vision"].config.penalty == 0.5
