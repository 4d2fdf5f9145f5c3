"""Closed forms of the CF-VQA / RUBi fusions and effects (methods.md §2-3) on random tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from causalvl.errors import ConfigError, InputError
from causalvl.interventions.fusion import EPS, answer_cross_entropy, effects, fuse

TOL = dict(rtol=1e-9, atol=1e-9)
sig = torch.sigmoid


def _branches(seed: int, b: int, a: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, a, generator=g, dtype=torch.float64) for _ in range(3)]


cases = dict(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 4),
    a=st.integers(1, 6),
    scale=st.floats(0.1, 4.0),
    c=st.floats(-3.0, 3.0),
)


def _ls(x: torch.Tensor) -> torch.Tensor:
    return torch.log(sig(x) + EPS)


def _hm(s: torch.Tensor) -> torch.Tensor:
    return torch.log(s + EPS) - torch.log1p(s)


@settings(max_examples=25, deadline=None)
@given(**cases)
def test_fuse_matches_definitions(seed, b, a, scale, c):
    zk, zq, zv = _branches(seed, b, a, scale)
    torch.testing.assert_close(fuse(zk, zq, zv, mode="rubi"), zk * sig(zq), **TOL)
    torch.testing.assert_close(fuse(zk, zq, mode="rubi"), zk * sig(zq), **TOL)
    torch.testing.assert_close(fuse(zk, zq, zv, mode="harmonic"), _hm(sig(zk) * sig(zq) * sig(zv)))
    torch.testing.assert_close(fuse(zk, zq, mode="harmonic"), _hm(sig(zk) * sig(zq)))
    torch.testing.assert_close(fuse(zk, zq, zv, mode="sum"), torch.log(sig(zk + zq + zv) + EPS))
    torch.testing.assert_close(fuse(zk, zq, mode="sum"), torch.log(sig(zk + zq) + EPS))


@settings(max_examples=25, deadline=None)
@given(**cases)
def test_rubi_tie_closed_form(seed, b, a, scale, c):
    zk, zq, zv = _branches(seed, b, a, scale)
    for v in (None, zv):  # rubi ignores z_v
        e = effects(zk, zq, v, c=c, mode="rubi")
        torch.testing.assert_close(e["tie"], (zk - c) * sig(zq), **TOL)
        cc = torch.full_like(zk, c)
        torch.testing.assert_close(e["te"], zk * sig(zq) - cc * sig(cc), **TOL)
        torch.testing.assert_close(e["nde"], cc * sig(zq) - cc * sig(cc), **TOL)
        torch.testing.assert_close(e["nie"], zk * sig(cc) - cc * sig(cc), **TOL)


@settings(max_examples=25, deadline=None)
@given(**cases)
def test_sum_closed_forms(seed, b, a, scale, c):
    zk, zq, zv = _branches(seed, b, a, scale)
    complete = effects(zk, zq, zv, c=c, mode="sum")
    # TIE = log σ(Z_k+Z_q+Z_v) − log σ(Z_q + 2c)  (with the eps inside the logs)
    expected = _ls(zk + zq + zv) - _ls(zq + 2 * c)
    torch.testing.assert_close(complete["tie"], expected, **TOL)
    torch.testing.assert_close(
        complete["te"],
        _ls(zk + zq + zv) - _ls(torch.tensor(3.0 * c, dtype=torch.float64)),
    )
    simple = effects(zk, zq, c=c, mode="sum")
    expected = _ls(zk + zq) - _ls(zq + c)
    torch.testing.assert_close(simple["tie"], expected, **TOL)
    torch.testing.assert_close(
        simple["nie"],
        _ls(zk + c) - _ls(torch.tensor(2.0 * c, dtype=torch.float64)),
    )


@settings(max_examples=25, deadline=None)
@given(**cases)
def test_harmonic_closed_forms(seed, b, a, scale, c):
    zk, zq, zv = _branches(seed, b, a, scale)
    sc = sig(torch.tensor(c, dtype=torch.float64))

    def hm(s):  # log[S / (1 + S)], with the eps of the code
        return torch.log(s + EPS) - torch.log1p(s)

    e = effects(zk, zq, zv, c=c, mode="harmonic")
    s, s_q = sig(zk) * sig(zq) * sig(zv), sc**2 * sig(zq)
    torch.testing.assert_close(e["tie"], hm(s) - hm(s_q), **TOL)
    torch.testing.assert_close(e["nde"], hm(s_q) - hm(sc**3), **TOL)
    torch.testing.assert_close(e["nie"], hm(sig(zk) * sc * sig(zv)) - hm(sc**3))
    simple = effects(zk, zq, c=c, mode="harmonic")
    torch.testing.assert_close(simple["tie"], hm(sig(zk) * sig(zq)) - hm(sc * sig(zq)), **TOL)


@settings(max_examples=25, deadline=None)
@given(**cases, mode=st.sampled_from(["rubi", "harmonic", "sum"]), complete=st.booleans())
def test_effect_identities(seed, b, a, scale, c, mode, complete):
    zk, zq, zv = _branches(seed, b, a, scale)
    e = effects(zk, zq, zv if complete else None, c=c, mode=mode)
    assert set(e) == {"te", "nde", "tie", "nie"}
    torch.testing.assert_close(e["tie"], e["te"] - e["nde"], rtol=1e-7, atol=1e-7)
    # TE and the fused scores differ by a constant, so they rank answers identically
    fused = fuse(zk, zq, zv if complete else None, mode=mode)
    diff = fused - e["te"]
    torch.testing.assert_close(diff, diff[:1, :1].expand_as(diff))
    # c enters before the sigmoid: a tensor c gives the same numbers as the float (a float64
    # tensor: a float32 one would round c itself)
    e2 = effects(zk, zq, zv if complete else None, c=torch.tensor(c, dtype=zk.dtype), mode=mode)
    torch.testing.assert_close(e2["tie"], e["tie"])


def test_effects_broadcast_question_branch_and_c_gradient():
    zk = torch.randn(3, 5)
    zq = torch.randn(1, 5)  # a per-candidate prior broadcast over images
    c = torch.tensor(0.3, requires_grad=True)
    e = effects(zk, zq, c=c, mode="harmonic")
    assert e["tie"].shape == (3, 5) and e["nde"].shape == (3, 5)
    e["tie"].sum().backward()
    assert c.grad is not None and c.grad.abs() > 0


def test_bad_mode_and_bad_c():
    zk = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="'hm'.*'harmonic'"):
        fuse(zk, zk, mode="hm")
    with pytest.raises(ConfigError, match="unknown"):
        effects(zk, zk, c=0.0, mode="max")
    with pytest.raises(InputError, match="scalar"):
        effects(zk, zk, c=torch.zeros(3), mode="sum")


def test_answer_cross_entropy_labels():
    z = torch.randn(4, 3)
    ids = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(answer_cross_entropy(z, {"labels": ids}), F.cross_entropy(z, ids))
    soft = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.9], [0.0, 1.0, 0.0], [0.0, 0.6, 0.0]])
    got = answer_cross_entropy(z, {"labels": soft})
    logp = F.log_softmax(z, -1)
    want = -(0.25 * logp[1, 0] + 0.75 * logp[1, 2] + logp[2, 1] + logp[3, 1]) / 4
    torch.testing.assert_close(got, want)
    square = torch.randn(3, 3)
    torch.testing.assert_close(
        answer_cross_entropy(square, {}, kind="contrastive"),
        F.cross_entropy(square, torch.arange(3)),
    )
    with pytest.raises(InputError, match="no 'labels'"):
        answer_cross_entropy(z, {})
    with pytest.raises(InputError, match=r"shape \(4,\)"):
        answer_cross_entropy(z, {"labels": torch.tensor([[0], [1], [2], [0]])})
    with pytest.raises(InputError, match="soft-score"):
        answer_cross_entropy(z, {"labels": torch.rand(4, 5)})


def test_loss_errors_name_the_loss_that_failed():
    from causalvl.losses import per_example_loss, task_loss

    with pytest.raises(InputError, match=r"the branch loss \(CF-VQA / RUBi\) needs class ids"):
        answer_cross_entropy(torch.zeros(2, 3), {})
    with pytest.raises(InputError, match="Group DRO needs answer logits.*contrastive"):
        per_example_loss(torch.zeros(2, 3, 4), torch.zeros(2), what="Group DRO")
    with pytest.raises(InputError, match=r"the task loss: class-id labels must have shape \(2,\)"):
        task_loss(torch.zeros(2, 3), {"labels": torch.zeros(3).long()})


@pytest.mark.parametrize(
    ("config", "owner"),
    [("LMHConfig", "LMHConfig"), ("GGEConfig", "GGEConfig"), ("GroupDROConfig", "GroupDROConfig")],
)
def test_a_batch_without_labels_names_the_intervention(config, owner):
    import causalvl

    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=3, image_size=8)
    cfg = getattr(causalvl, config)(**({"num_groups": 2} if config == "GroupDROConfig" else {}))
    vl = causalvl.intervene(net, cfg)
    if vl.needs_prior:
        vl.set_bias_prior(torch.full((2, 3), 1 / 3))
    batch = {"pixel_values": torch.rand(2, 3, 8, 8), "input_ids": torch.randint(1, 20, (2, 4))}
    batch.update(question_type=torch.tensor([0, 1]), group=torch.tensor([0, 1]))
    with pytest.raises(InputError, match=f"{owner} needs 'labels' in the batch"):
        vl.objective(vl(batch), batch)
