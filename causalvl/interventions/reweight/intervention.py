"""Reweighting by the answer prior: the backdoor adjustment over the question type as a loss.

The question type ``t`` confounds the question and the answer (it sets which answers are likely).
Weighting each training example by ``1 / p_train(a | t)`` makes the answer independent of the
type in the weighted training distribution: ``P(a | do(t))`` instead of ``P(a | t)``. Three
weightings (``ReweightConfig.kind``), the last two from the LMH authors' code (Clark et al., 2019;
``ReweightByInvBias``):

================  =====================================================================
``kind``          loss over a batch (``b`` = the prior row of the example's type)
================  =====================================================================
inverse_prior     ``sum_i w_i CE_i / sum_i w_i`` with ``w_i = 1 / b_i[a_i]``
lmh_ce            ``sum_i w_i CE_i / sum_i w_i`` with ``w_i = 1 - b_i[a_i]``
lmh_bce           ``sum_{i,a} (1 - b_ia) BCE(f_ia, y_ia) / sum_{i,a} (1 - b_ia)``
================  =====================================================================

Dividing by the weight sum normalises the weights to mean 1 in every batch. Importance weighting
does little for a model that can fit its training set (Byrd and Lipton, 2019): the weighted and
unweighted optima coincide once every training example is fitted, so pair it with early stopping
or strong weight decay, and compare it with the resampling twin
(``TrainConfig(sampler="balanced")``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...adapters.base import ModelAdapter
from ...batch import require_labels
from ...errors import InputError
from ...outputs import InterventionOutput
from ...runtime import module_dtype_device
from ..base import implements
from ..branches import infer_num_answers
from ..losses import reweight_loss
from ..prior import _PriorTableMixin
from .config import ReweightConfig


@implements(ReweightConfig)
class Reweight(_PriorTableMixin):
    """Implementation of :class:`ReweightConfig`: buffers ``prior`` and ``prior_is_set``; the
    loss part ``"reweighted"`` replaces the task loss."""

    replaces_task_loss = True

    def __init__(self, config: ReweightConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        dtype, device = module_dtype_device(model)
        self.num_answers = config.num_answers or infer_num_answers(model, adapter)
        self._init_prior(self.num_answers, dtype, device)

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        f = output.factual_logits
        if f.dim() != 2 or f.shape[1] != self.num_answers:
            raise InputError(
                f"ReweightConfig needs answer logits (B, {self.num_answers}); got "
                f"{tuple(f.shape)} (contrastive models are not supported)."
            )
        labels = require_labels(batch, "ReweightConfig").to(f.device)
        bias = self._batch_prior(batch, f.shape[0])
        cfg = self.config
        return {"reweighted": reweight_loss(f, labels, bias, cfg.kind, min_prior=cfg.min_prior)}


__all__ = ["Reweight", "ReweightConfig", "reweight_loss"]
