"""Probes: each diagnostic on hand-computed batches, the not-applicable rule, and the Trainer's
evaluation sharing the accuracy / worst-group code (and its minimum group size) with diagnose."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

import causalvl
from causalvl.diagnostics import DiagnosticsConfig, calibration, diagnose
from causalvl.diagnostics.metrics import DEFAULT_MIN_GROUP_SIZE
from causalvl.diagnostics.probes import (
    PROBES,
    AccuracyProbe,
    BiasProbe,
    CalibrationProbe,
    ContextProbe,
    EffectsProbe,
    LanguagePriorProbe,
    Probe,
    ProbeContext,
    StepOutputs,
)
from causalvl.errors import InputError

# -- accuracy and groups ------------------------------------------------------------------------


def _one_hot_logits(preds: list[int], a: int = 3) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(preds), a).float()


def test_accuracy_probe_over_two_batches_by_hand():
    probe = AccuracyProbe(min_group_size=2)
    b1 = {"labels": torch.tensor([0, 1, 2]), "group": torch.tensor([0, 0, 1])}
    b2 = {"labels": torch.tensor([2, 2]), "group": torch.tensor([1, 2])}
    probe.update(b1, StepOutputs.of(_one_hot_logits([0, 0, 2]), b1["labels"]))
    probe.update(b2, StepOutputs.of(_one_hot_logits([1, 2]), b2["labels"]))
    assert probe.n == 5
    r = probe.finish()
    # correct: 1 0 1 | 0 1 -> 3/5; groups: 0 -> 1/2, 1 -> 1/2, 2 -> 1/1 (size 1 < 2: small)
    assert r.accuracy == 0.6 and r.n == 5
    assert [(g.group, g.accuracy, g.n) for g in r.groups.per_group] == [
        (0, 0.5, 2),
        (1, 0.5, 2),
        (2, 1.0, 1),
    ]
    assert r.groups.worst_group.group == 0 and r.groups.worst_group_accuracy == 0.5
    assert [g.group for g in r.groups.small_groups] == [2]


def test_accuracy_probe_soft_scores_and_missing_groups():
    probe = AccuracyProbe()
    labels = torch.tensor([[0.0, 0.3, 1.0], [0.6, 0.0, 0.0]])
    probe.update({"labels": labels}, StepOutputs.of(_one_hot_logits([1, 0]), labels))
    r = probe.finish()
    assert r.accuracy == pytest.approx((0.3 + 0.6) / 2) and r.groups is None
    # one batch without 'group' leaves the split without group metrics (never half of them)
    probe = AccuracyProbe(min_group_size=1)
    b = {"labels": torch.tensor([0, 1]), "group": torch.tensor([0, 1])}
    probe.update(b, StepOutputs.of(_one_hot_logits([0, 1]), b["labels"]))
    probe.update({"labels": b["labels"]}, StepOutputs.of(_one_hot_logits([0, 0]), b["labels"]))
    assert probe.finish().groups is None and probe.finish().accuracy == 0.75
    with pytest.raises(InputError, match="before any update"):
        AccuracyProbe().finish()
    with pytest.raises(InputError, match="labels or correct"):
        StepOutputs.of(torch.zeros(2, 3))


def test_bias_and_calibration_probes_match_the_pure_functions():
    labels = torch.tensor([0, 1, 2, 0])
    aligned = torch.tensor([True, False, True, False])
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 3.0], [0.0, 1.0, 0.0]])
    bias, calib = BiasProbe(), CalibrationProbe(n_bins=4)
    for lo, hi in ((0, 3), (3, 4)):
        batch = {"labels": labels[lo:hi], "bias_aligned": aligned[lo:hi]}
        out = StepOutputs.of(logits[lo:hi], labels[lo:hi])
        bias.update(batch, out)
        calib.update(batch, out)
    b = bias.finish()
    # correct: 1 0 1 0 -> aligned 2/2, conflicting 0/2
    assert (b.accuracy_aligned, b.accuracy_conflicting, b.gap) == (1.0, 0.0, 1.0)
    assert (b.n_aligned, b.n_conflicting) == (2, 2)
    conf = torch.softmax(logits.double(), -1).max(-1).values
    want = calibration(conf, torch.tensor([1.0, 0, 1, 0]), n_bins=4, aligned=aligned)
    assert calib.finish() == want
    # without bias_aligned: no bias result, calibration without the aligned split
    bias, calib = BiasProbe(), CalibrationProbe()
    out = StepOutputs.of(logits, labels)
    bias.update({"labels": labels}, out)
    calib.update({"labels": labels}, out)
    assert bias.finish() is None and calib.finish().confidence_aligned is None


def test_effects_probe_by_hand():
    probe = EffectsProbe(bins=2)
    te = torch.tensor([[1.0, -3.0], [2.0, 0.0]])
    out = StepOutputs(
        logits=torch.zeros(2, 2),
        preds=torch.tensor([1, 0]),
        correct=torch.ones(2, dtype=torch.float64),
        effects={"te": te, "scalar": torch.tensor([[0.5], [1.5]]), "other": torch.ones(3, 2)},
    )
    probe.update({}, out)
    r = probe.finish()
    assert list(r.effects) == ["te", "scalar"]  # 'other' is not per example: skipped
    assert r.effects["te"].mean_abs == 1.5 and r.effects["te"].mean_predicted == -0.5
    assert r.effects["scalar"].mean_predicted == 1.0 and r.effects["scalar"].n == 2
    assert EffectsProbe().finish() is None


# -- applicability ------------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(4.0))

    def forward(self, image, tokens):
        return self.w * image + 0.0 * tokens[:, :1].float()


def test_language_prior_probe_takes_the_blind_reason_from_the_context():
    class Impl:
        image_blind_reason = "its answer has no image-blind counterpart"

    class Wrapped(_Net):
        base_model = adapter = disable_interventions = None
        interventions = {"cf": Impl()}

    adapter = causalvl.GenericAdapter(vision_keys=["image"], language_keys=["tokens"])
    ctx = ProbeContext(
        config=DiagnosticsConfig(), run=lambda b: (b["image"], {}), adapter=adapter, model=Wrapped()
    )
    probe = LanguagePriorProbe.from_context(ctx)
    assert probe.blind_reason == Impl.image_blind_reason  # known before applies()
    assert probe.applies(ctx) is None and probe.blind_reason == Impl.image_blind_reason
    bare = dataclasses.replace(ctx, model=_Net())
    assert LanguagePriorProbe.from_context(bare).blind_reason is None


def test_probes_that_do_not_apply_give_a_reason_and_stay_none():
    cfg = DiagnosticsConfig(metrics=("bias",))
    adapter = causalvl.GenericAdapter(vision_keys=["image"], language_keys=[])
    ctx = ProbeContext(config=cfg, run=lambda b: (b["image"], {}), adapter=adapter, model=_Net())
    reasons = {cls.__name__: cls.from_context(ctx).applies(ctx) for cls in PROBES}
    assert reasons["AccuracyProbe"] is None and reasons["BiasProbe"] is None
    assert reasons["CalibrationProbe"] == "'calibration' is not in DiagnosticsConfig.metrics"
    assert "not in DiagnosticsConfig.metrics" in reasons["CausalProbe"]
    full = ProbeContext(config=DiagnosticsConfig(), run=ctx.run, adapter=adapter, model=ctx.model)
    assert "no language input" in LanguagePriorProbe(full).applies(full)
    assert issubclass(PROBES[0], Probe) and PROBES[0] is AccuracyProbe
    with pytest.raises(InputError, match="run"):
        ContextProbe(ProbeContext(config=cfg))
    # through diagnose: the parts that do not apply are None, not zero
    n = 8
    batch = {
        "image": nn.functional.one_hot(torch.arange(n) % 3, 3).float(),
        "tokens": torch.zeros(n, 2, dtype=torch.long),
        "labels": torch.arange(n) % 3,
    }
    d = diagnose(_Net(), batch, adapter=adapter, metrics=("bias",), progress=False)["test"]
    assert d.accuracy == 1.0 and d.n == n
    assert d.bias is None and d.calibration is None and d.language_prior is None
    assert d.groups is None and d.context is None and d.effects is None


# -- the Trainer's evaluation shares the probe --------------------------------------------------


class _Rows(torch.utils.data.Dataset):
    """Example i has a fixed one-hot 'image' (the prediction of _Net), a label and a group."""

    def __init__(self, preds: list[int], labels: list[int], groups: list[int]) -> None:
        self.image = nn.functional.one_hot(torch.tensor(preds), 3).float()
        self.labels, self.groups = torch.tensor(labels), torch.tensor(groups)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.image[i],
            "tokens": torch.zeros(2, dtype=torch.long),
            "labels": self.labels[i],
            "group": self.groups[i],
        }


def _trainer(eval_data, **settings):
    adapter = causalvl.GenericAdapter(vision_keys=["image"], language_keys=["tokens"])
    vl = causalvl.intervene(_Net(), causalvl.IdentityConfig(), adapter=adapter)
    cfg = causalvl.TrainConfig(**{"epochs": 1, "batch_size": 6, **settings})
    return vl, adapter, causalvl.Trainer(vl, eval_data["val"], eval_data=eval_data, config=cfg)


def test_trainer_worst_group_uses_the_diagnostics_minimum_group_size():
    # group 0: 25 examples, 20 right (0.8); group 1: 3 examples, all wrong (0.0, but tiny)
    preds = [0] * 20 + [1] * 5 + [1] * 3
    data = _Rows(preds, [0] * 28, [0] * 25 + [1] * 3)
    vl, adapter, trainer = _trainer({"val": data})
    # a group of 25 is large enough; the group of 3 left out is named, with the setting
    with pytest.warns(
        UserWarning, match=r"group=1 \(3\).*TrainConfig\(min_group_size=20\)"
    ) as caught:
        metrics = trainer.evaluate()
    assert caught[0].filename == __file__  # it points at the caller of evaluate()
    d = diagnose(vl, data, adapter=adapter, progress=False, batch_size=6)["test"]
    assert DEFAULT_MIN_GROUP_SIZE == 20 == d.groups.min_group_size
    assert metrics["val/accuracy"] == d.accuracy == 20 / 28
    # before, the Trainer took the minimum over every group: 0.0 from the three examples
    assert metrics["val/worst_group_accuracy"] == d.groups.worst_group_accuracy == 0.8


def test_trainer_falls_back_to_every_group_when_none_is_large_enough():
    data = _Rows([0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 2, 2])
    vl, adapter, trainer = _trainer({"val": data})
    with pytest.warns(
        UserWarning,
        match=r"no group of eval split 'val' has 20 examples \(the largest has 2\).*"
        r"TrainConfig\(min_group_size=20\)",
    ):
        metrics = trainer.evaluate()
    d = diagnose(vl, data, adapter=adapter, progress=False)["test"]
    assert d.groups.worst_group_accuracy is None  # diagnose reports no worst group (n/a)
    assert metrics["val/accuracy"] == d.accuracy == 0.5
    assert metrics["val/worst_group_accuracy"] == 0.0  # group 2: both wrong


def test_trainer_min_group_size_is_a_setting_passed_to_the_probe():
    preds = [0] * 20 + [1] * 5 + [1] * 3
    data = _Rows(preds, [0] * 28, [0] * 25 + [1] * 3)
    vl, adapter, trainer = _trainer({"val": data}, min_group_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every group has 3 examples: none is left out
        metrics = trainer.evaluate()
    d = diagnose(vl, data, adapter=adapter, progress=False, min_group_size=3)["test"]
    assert metrics["val/worst_group_accuracy"] == d.groups.worst_group_accuracy == 0.0


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "20"])
def test_trainconfig_rejects_a_bad_min_group_size(value):
    with pytest.raises(causalvl.ConfigError, match="min_group_size"):
        causalvl.TrainConfig(min_group_size=value)


def test_trainer_warns_about_left_out_groups_once_per_split_per_fit():
    preds = [0] * 20 + [1] * 5 + [1] * 3
    data = _Rows(preds, [0] * 28, [0] * 25 + [1] * 3)
    vl, adapter, trainer = _trainer({"val": data, "ood": data}, epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()
    left_out = [str(w.message) for w in caught if "left out" in str(w.message)]
    assert len(left_out) == 2  # one per split, not one per epoch
    assert any("'val'" in m for m in left_out) and any("'ood'" in m for m in left_out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()  # a new fit warns again
    assert len([w for w in caught if "left out" in str(w.message)]) == 2
