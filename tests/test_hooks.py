"""Scoped hooks: the primary tensor of every output kind is read and replaced without losing
the rest of the output, and only the manager's own hooks are removed."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from causalvl.errors import InterventionStateError
from causalvl.hooks import HookManager, count_hooks, get_primary, replace_primary


def test_replace_primary_keeps_the_rest_of_a_tuple():
    a, b, c = torch.zeros(2), torch.ones(3), torch.full((1,), 7.0)
    new = torch.full((2,), 5.0)
    out = replace_primary((a, b, c), new)
    assert isinstance(out, tuple) and len(out) == 3
    assert out[0] is new and out[1] is b and out[2] is c


def test_replace_primary_keeps_the_rest_of_a_list_and_returns_a_new_list():
    original = [torch.zeros(2), torch.ones(3)]
    new = torch.full((2,), 5.0)
    out = replace_primary(original, new)
    assert isinstance(out, list) and len(out) == 2
    assert out[0] is new and out[1] is original[1]
    assert original[0] is not new  # the caller's list is not modified


def test_replace_primary_copies_a_model_output():
    hidden, pooled = torch.zeros(1, 4, 3), torch.ones(1, 3)
    output = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
    new = torch.full_like(hidden, 2.0)
    out = replace_primary(output, new)
    assert type(out) is BaseModelOutputWithPooling
    assert out.last_hidden_state is new and out.pooler_output is pooled
    assert output.last_hidden_state is hidden  # not mutated in place


def test_replace_primary_of_a_tensor_is_the_new_tensor():
    new = torch.ones(2)
    assert replace_primary(torch.zeros(2), new) is new


def test_get_primary_of_every_output_kind():
    t = torch.arange(3.0)
    assert get_primary(t) is t
    assert get_primary((t, torch.zeros(1))) is t
    assert get_primary([t]) is t
    assert get_primary(BaseModelOutputWithPooling(last_hidden_state=t)) is t
    with pytest.raises(InterventionStateError, match="cannot find a tensor"):
        get_primary(("no tensor", t))


def test_hook_manager_removes_only_its_own_hooks_also_on_error():
    lin = torch.nn.Linear(2, 2)
    foreign = lin.register_forward_hook(lambda *a: None)
    with pytest.raises(RuntimeError, match="boom"), HookManager() as hm:
        hm.add_forward_hook(lin, lambda mod, args, kwargs, out: out)
        hm.add_forward_pre_hook(lin, lambda mod, args, kwargs: None)
        assert count_hooks(lin) == 3
        raise RuntimeError("boom")
    assert count_hooks(lin) == 1
    foreign.remove()
    assert count_hooks(lin) == 0
