"""``CounterfactualDecodingConfig``: visual contrastive decoding (VCD / ICD / VDD) as an
intervention on generative VLMs.

At every decoding step the next token is chosen from

    s = (1 + alpha) * logit(y | v, x) - alpha * logit(y | v', x),   restricted to plausible y

where ``v'`` is a distorted, blank or removed image (or ``x`` a disturbed instruction); see
:func:`~causalvl.decoding.scores.vcd_scores`. Use it through the wrapper::

    vl = causalvl.intervene(model, causalvl.CounterfactualDecodingConfig(alpha=1.0, beta=0.1))
    ids = vl.generate(**inputs, max_new_tokens=16, do_sample=False)

or with a plain ``model.generate`` and :class:`~causalvl.CounterfactualLogitsProcessor`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..adapters.base import ModelAdapter
from ..errors import ConfigError, InputError, UnsupportedModelError
from ..interventions.base import Intervention, implements
from ..runtime import module_dtype_device
from .config import CounterfactualDecodingConfig

if TYPE_CHECKING:
    from .processor import StepRecord


@dataclass(frozen=True)
class CounterfactualDecodingOutput:
    """What :meth:`CounterfactualDecoding.generate` returns with ``return_dict_in_generate=True``.

    Attributes:
        sequences: ``(B, L + new)`` prompt and generated token ids.
        scores: one ``(B, vocab)`` tensor per step: the combined (contrastive) scores.
        factual_logits: one ``(B, vocab)`` tensor per step: the factual branch's scores.
        counterfactual_logits: one ``(B, vocab)`` tensor per step: the counterfactual branch's.
        strategy: ``"batched"`` or ``"processor"``, the pattern that ran.
    """

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...]
    factual_logits: tuple[torch.Tensor, ...]
    counterfactual_logits: tuple[torch.Tensor, ...]
    strategy: str


_UNSUPPORTED = ("num_beams", "num_return_sequences", "prompt_lookup_num_tokens")


@implements(CounterfactualDecodingConfig)
class CounterfactualDecoding(Intervention):
    """Implementation of :class:`CounterfactualDecodingConfig` (see its docs).

    The wrapped forward returns the model's own outputs (the contrast acts on decoding);
    :meth:`generate` runs the two-branch decoding loop.
    """

    takes_over_generation = True

    def __init__(
        self, config: CounterfactualDecodingConfig, model: nn.Module, adapter: ModelAdapter
    ) -> None:
        super().__init__(config, model, adapter)
        from ..adapters.generative import GenerativeAdapter, generative_families

        if not isinstance(adapter, GenerativeAdapter):
            raise UnsupportedModelError(
                f"CounterfactualDecodingConfig needs a generative VLM; {type(model).__name__} "
                f"has the {type(adapter).__name__}. Supported generative families: "
                f"{', '.join(generative_families())}."
            )

    # -- the decoding loop ----------------------------------------------------------------
    def counterfactual_inputs(
        self, adapter: ModelAdapter, inputs: Mapping[str, Any], tokenizer: Any = None
    ) -> dict[str, Any]:
        """The counterfactual branch's prompt inputs for ``inputs`` (seeded noise draw)."""
        cfg = self.config
        disturbance = cfg.disturbance_ids
        if cfg.counterfactual == "instruction" and disturbance is None:
            if tokenizer is None:
                raise ConfigError(
                    "counterfactual='instruction' needs the disturbance as token ids: pass "
                    "tokenizer=... to generate, or set CounterfactualDecodingConfig("
                    "disturbance_ids=[...])."
                )
            disturbance = tokenizer(cfg.disturbance, add_special_tokens=False)["input_ids"]
        # the adapter's method, so a family that overrides it is honoured
        return adapter.decoding_counterfactual(  # type: ignore[attr-defined]
            inputs,
            cfg.counterfactual,
            noise_step=cfg.noise_step,
            generator=torch.Generator().manual_seed(cfg.seed),
            disturbance_ids=disturbance,
        )

    @torch.no_grad()
    def generate(
        self, base_model: nn.Module, adapter: ModelAdapter, *args: Any, **kwargs: Any
    ) -> Any:
        """Generate with contrastive decoding.

        Args:
            base_model: the generative model.
            adapter: its generative adapter.
            *args: at most one positional argument, ``input_ids``.
            **kwargs: the model inputs (``input_ids``, ``attention_mask``, ``pixel_values``,
                ...) and ``generate`` options (``max_new_tokens``, ``do_sample``,
                ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``logits_processor``,
                ``return_dict_in_generate``, ...); ``tokenizer`` for the ``"instruction"``
                counterfactual.

        Returns:
            ``(B, L + new)`` token ids, or a :class:`CounterfactualDecodingOutput` with
            ``return_dict_in_generate=True``.
        """
        # the processors subclass transformers' LogitsProcessor: imported here, so reading a
        # CounterfactualDecodingConfig does not import transformers
        from .processor import (
            BatchedContrastProcessor,
            CounterfactualLogitsProcessor,
            TokenSelector,
        )

        cfg: CounterfactualDecodingConfig = self.config  # type: ignore[assignment]
        if args:
            if len(args) > 1 or "input_ids" in kwargs:
                raise InputError(
                    "pass the inputs as keyword arguments: vl.generate(**inputs, ...)."
                )
            kwargs["input_ids"] = args[0]
        tokenizer = kwargs.pop("tokenizer", None)
        return_dict = bool(kwargs.pop("return_dict_in_generate", False))
        for key in ("output_scores", "output_logits"):
            kwargs.pop(key, None)
        gen_config = kwargs.pop("generation_config", None)
        gen_config = copy.deepcopy(
            gen_config if gen_config is not None else base_model.generation_config
        )
        kwargs = gen_config.update(**kwargs)  # generation options go into the config copy
        for key in _UNSUPPORTED:
            value = getattr(gen_config, key, None)
            if value not in (None, 1):
                raise ConfigError(
                    f"contrastive decoding does not support {key}={value!r}; it decodes one "
                    "sequence per prompt (greedy or sampling)."
                )
        _, device = module_dtype_device(base_model)
        sample_gen = torch.Generator(device=device).manual_seed(cfg.seed)
        selector = TokenSelector(
            do_sample=bool(gen_config.do_sample),
            temperature=gen_config.temperature,
            top_k=gen_config.top_k,
            top_p=gen_config.top_p,
            min_p=gen_config.min_p,
            generator=sample_gen,
        )
        # generate picks the token the processor chose (one-hot scores): greedy, no warpers
        gen_config.do_sample = False
        for key in ("temperature", "top_k", "top_p", "min_p"):
            setattr(gen_config, key, None)
        gen_config.return_dict_in_generate = False
        gen_config.output_scores = gen_config.output_logits = False

        inputs = adapter.model_inputs(kwargs)
        if "input_ids" not in inputs:
            raise InputError(
                "generate needs input_ids with the image tokens expanded (as the model's processor "
                "returns them); got keys " + str(sorted(kwargs)) + "."
            )
        adapter.validate_inputs(inputs)
        cf_inputs = self.counterfactual_inputs(adapter, inputs, tokenizer)
        strategy = self._strategy(inputs, cf_inputs)
        user_procs = list(kwargs.pop("logits_processor", None) or [])
        batch = int(inputs["input_ids"].shape[0])

        if strategy == "batched":
            proc: Any = BatchedContrastProcessor(
                batch,
                alpha=cfg.alpha,
                beta=cfg.beta,
                space=cfg.space,
                selector=selector,
                record=return_dict,
            )
            run_kwargs = dict(kwargs)
            for key, value in inputs.items():
                other = cf_inputs[key]
                if isinstance(value, torch.Tensor):
                    run_kwargs[key] = torch.cat([value, other.to(value.device)], 0)
            out = base_model.generate(
                **run_kwargs, generation_config=gen_config, logits_processor=[*user_procs, proc]
            )
            sequences = out[:batch]
        else:
            proc = CounterfactualLogitsProcessor(
                base_model,
                cf_inputs,
                alpha=cfg.alpha,
                beta=cfg.beta,
                space=cfg.space,
                adapter=adapter,
                record=return_dict,
                selector=selector,
            )
            sequences = base_model.generate(
                **kwargs, generation_config=gen_config, logits_processor=[*user_procs, proc]
            )
        if not return_dict:
            return sequences
        hist: list[StepRecord] = proc.history
        return CounterfactualDecodingOutput(
            sequences=sequences,
            scores=tuple(h.scores for h in hist),
            factual_logits=tuple(h.factual for h in hist),
            counterfactual_logits=tuple(h.counterfactual for h in hist),
            strategy=strategy,
        )

    def _strategy(self, inputs: Mapping[str, Any], cf_inputs: Mapping[str, Any]) -> str:
        chosen = self.config.strategy
        same = set(inputs) == set(cf_inputs) and all(
            (not isinstance(v, torch.Tensor))
            or (isinstance(cf_inputs[k], torch.Tensor) and cf_inputs[k].shape == v.shape)
            for k, v in inputs.items()
        )
        if chosen == "batched" and not same:
            raise ConfigError(
                f"strategy='batched' needs counterfactual inputs shaped like the factual ones, "
                f"but counterfactual={self.config.counterfactual!r} changes them; use "
                "strategy='auto' or 'processor'."
            )
        if chosen == "auto":
            return "batched" if same else "processor"
        return chosen
