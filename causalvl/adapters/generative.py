"""Adapters for generative vision-language models (LLaVA, Qwen2-VL / Qwen2.5-VL, Idefics3 /
SmolVLM, PaliGemma).

Besides the usual input roles, a :class:`GenerativeAdapter` knows the image-token layout of its
family (the image token id, where image tokens sit in ``input_ids``, which pixel keys go with
them; the data is in its :class:`~causalvl.adapters.spec.AdapterSpec`). The counterfactual
inputs of contrastive decoding are input transforms (:mod:`causalvl.adapters.transforms`);
:meth:`GenerativeAdapter.decoding_counterfactual` runs them under their decoding names:

``"noise"`` (transform ``diffusion_noise``)
    VCD's forward diffusion at step ``t`` on the processed ``pixel_values`` (same shape, same
    image-token layout). Not a noise *image*: that is ``vision_noise_image``.
``"blank"`` (transform ``blank_image``)
    zeros in processed space. For mean/std-normalised processors (CLIP, SigLIP, Qwen2-VL,
    Idefics3) this is the image filled with the processor's mean colour. (Idefics3 / SmolVLM
    skip all-zero images as padding, so their blank image holds 1e-6 instead.)
``"no_image"`` (transform ``drop_image_tokens``)
    the image tokens (and Qwen's vision start/end markers) are dropped from ``input_ids`` and
    every per-token input, and the pixel inputs are removed; the sequence gets shorter (rows are
    left-padded when they lose different numbers of tokens).
``"instruction"`` (transform ``instruction_disturbance``)
    the image is kept and a disturbance prefix (ICD) is inserted into the text part, right after
    the image block; the sequence gets longer, so the branch has its own ``input_ids`` and mask.

Example:
    >>> from causalvl.decoding.tiny import tiny_generative_model
    >>> from causalvl.adapters import get_adapter
    >>> model, inputs = tiny_generative_model("llava")
    >>> adapter = get_adapter(model)
    >>> cf = adapter.decoding_counterfactual(inputs, "no_image")
    >>> inputs["input_ids"].shape[1] - cf["input_ids"].shape[1]
    4
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch

from ..errors import ConfigError, InputError, UnsupportedModelError
from . import transforms as _transforms
from .base import ModelAdapter
from .registry import generative_families
from .spec import FAMILY_SPECS, GENERATIVE_SPEC

DECODING_COUNTERFACTUALS = tuple(_transforms.DECODING_MODES)

#: ICD's disturbance instruction for LLaVA (p1k0pan/ICD, icd_sample_llava.py)
DEFAULT_DISTURBANCE = (
    "You are a confused objects detector to provide a fuzzy overview or impression of the image."
)


class GenerativeAdapter(ModelAdapter):
    """Base adapter of generative VLMs (``...ForConditionalGeneration`` models).

    A subclass sets ``spec`` (``causalvl.adapters.spec.GENERATIVE_SPEC.replace(family=..., ...)``),
    or, as before, these class attributes (besides :class:`ModelAdapter`'s):
        pixel_keys: the image inputs (dropped by ``"no_image"``).
        per_token_keys: inputs aligned with ``input_ids`` (``(B, L)``), edited with it.
        marker_attrs: config attributes holding ids of tokens that frame the image block
            (dropped with the image tokens).
        allows_no_image: whether the model can run with no image at all.
        state_attrs: dotted attribute paths of mutable per-generation model state (e.g.
            Qwen2-VL's ``model.rope_deltas``) that a second decoding branch must not clobber.
    """

    spec = GENERATIVE_SPEC
    # mirrored from the spec (set by ModelAdapter.__init_subclass__)
    pixel_keys: ClassVar[tuple[str, ...]]
    per_token_keys: ClassVar[tuple[str, ...]]
    marker_attrs: ClassVar[tuple[str, ...]]
    allows_no_image: ClassVar[bool]
    state_attrs: ClassVar[tuple[str, ...]]
    #: fill value of the ``"blank"`` image in processed space
    blank_value: ClassVar[float]

    # -- layout -----------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        """The id of the image placeholder token (``config.image_token_id`` / ``image_token_index``)."""
        cfg = getattr(self.model, "config", None)
        for name in ("image_token_id", "image_token_index"):
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                return value
        raise UnsupportedModelError(
            f"the {self.family} adapter cannot find the image token id in the model config "
            "(looked for image_token_id and image_token_index); set it on model.config."
        )

    @property
    def marker_token_ids(self) -> frozenset[int]:
        cfg = getattr(self.model, "config", None)
        return frozenset(
            v for a in self.marker_attrs if isinstance(v := getattr(cfg, a, None), int)
        )

    @property
    def bos_token_id(self) -> int | None:
        cfg = getattr(self.model, "config", None)
        for source in (
            getattr(cfg, "text_config", None),
            getattr(self.model, "generation_config", None),
        ):
            value = getattr(source, "bos_token_id", None)
            if isinstance(value, int):
                return value
        return None

    def _batch_groups(self) -> list[tuple[str, ...]]:
        # several images may belong to one prompt: only the per-token inputs share the batch
        return [tuple(k for k in self.language_keys if k not in self.unbatched_keys)]

    def batch_size(self, inputs: Mapping[str, Any]) -> int:
        """Rows of ``input_ids`` (pixel inputs need not have one row per example)."""
        ids = inputs.get("input_ids")
        if isinstance(ids, torch.Tensor) and ids.dim() > 0:
            return int(ids.shape[0])
        return super().batch_size(inputs)

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` bool: True on image placeholder tokens."""
        return input_ids == self.image_token_id

    def image_block_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` bool: image tokens and the markers framing them (dropped by ``no_image``)."""
        mask = self.image_token_mask(input_ids)
        for tok in self.marker_token_ids:
            mask |= input_ids == tok
        return mask

    def text_insert_position(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B,)`` long: where a disturbance prefix goes in each row — right after the image block
        (and after a BOS token that directly follows it, as in PaliGemma)."""
        block = self.image_block_mask(input_ids)
        if not bool(block.any(dim=1).all()):
            raise InputError(
                f"some rows of input_ids hold no image token (id {self.image_token_id}); the "
                "'instruction' counterfactual inserts the disturbance after the image block. "
                "Expand the image tokens with the model's processor."
            )
        length = input_ids.shape[1]
        idx = torch.arange(length, device=input_ids.device).expand_as(input_ids)
        pos = torch.where(block, idx, torch.full_like(idx, -1)).max(dim=1).values + 1
        bos = self.bos_token_id
        if bos is not None:
            nxt = input_ids.gather(1, pos.clamp(max=length - 1)[:, None])[:, 0]
            pos = pos + ((pos < length) & (nxt == bos)).long()
        return pos

    # -- counterfactual inputs of contrastive decoding -------------------------------------
    def decoding_counterfactual(
        self,
        inputs: Mapping[str, Any],
        mode: str,
        *,
        noise_step: int = 500,
        generator: torch.Generator | None = None,
        disturbance_ids: Sequence[int] | torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Inputs of the counterfactual decoding branch (``inputs`` is not modified).

        Args:
            inputs: the factual model inputs (``input_ids`` ``(B, L)`` with expanded image
                tokens, ``pixel_values`` and the family's other image keys).
            mode: ``"noise"``, ``"blank"``, ``"no_image"`` or ``"instruction"`` (module docs).
            noise_step: diffusion step ``t`` of ``"noise"`` (0-999).
            generator: CPU generator of the ``"noise"`` draw.
            disturbance_ids: token ids of the ``"instruction"`` disturbance prefix.

        Returns:
            a new dict; every tensor is a fresh tensor (no storage shared with ``inputs``).
        """
        if mode not in DECODING_COUNTERFACTUALS:
            raise ConfigError(
                f"counterfactual = {mode!r} unknown; choose one of {DECODING_COUNTERFACTUALS}."
            )
        transform = _transforms.get_transform(_transforms.DECODING_MODES[mode])
        options = {
            "noise_step": noise_step,
            "disturbance_ids": disturbance_ids,
        }
        return transform(
            self,
            inputs,
            generator=generator,
            **{k: v for k, v in options.items() if k in transform.options},
        )

    # -- per-branch model state -------------------------------------------------------------
    @contextlib.contextmanager
    def isolated_state(self, store: dict[str, Any]) -> Iterator[None]:
        """Run a decoding branch with its own copy of the model's mutable generation state.

        On entry the attributes in :attr:`state_attrs` are set from ``store`` (or left as they
        are when ``store`` has no entry yet); on exit the branch's values are saved back into
        ``store`` and the previous values restored, also when the forward raises.
        """
        if self.model is None or not self.state_attrs:
            yield
            return
        saved: dict[str, Any] = {}
        for path in self.state_attrs:
            owner, name = self._owner(path)
            if owner is None:
                continue
            saved[path] = getattr(owner, name)
            if path in store:
                setattr(owner, name, store[path])
        try:
            yield
        finally:
            for path, value in saved.items():
                owner, name = self._owner(path)
                store[path] = getattr(owner, name)
                setattr(owner, name, value)

    def _owner(self, path: str) -> tuple[Any, str]:
        parts = path.split(".")
        owner: Any = self.model
        for p in parts[:-1]:
            owner = getattr(owner, p, None)
            if owner is None:
                return None, parts[-1]
        return (owner, parts[-1]) if hasattr(owner, parts[-1]) else (None, parts[-1])


class LlavaAdapter(GenerativeAdapter):
    """``LlavaForConditionalGeneration``: ``pixel_values`` ``(B, 3, H, W)``; ``input_ids`` holds
    one image token per visual feature (576 for LLaVA-1.5-336)."""

    spec = FAMILY_SPECS["llava"]


class Qwen2VLAdapter(GenerativeAdapter):
    """``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration``: flattened
    patches ``pixel_values`` ``(sum(t*h*w), 3*2*14*14)`` with ``image_grid_thw`` ``(n_images, 3)``;
    ``prod(grid)/merge^2`` image tokens framed by vision start/end markers;
    ``mm_token_type_ids`` (1 on image tokens) drives M-RoPE. The model caches ``rope_deltas``
    between calls, which each decoding branch keeps separately. Shuffling images
    (``vision_shuffle``) moves whole images between examples of the same grid
    (``image_layout="grid_patches"``)."""

    spec = FAMILY_SPECS["qwen2_vl"]


class Idefics3Adapter(GenerativeAdapter):
    """``Idefics3ForConditionalGeneration`` / ``SmolVLMForConditionalGeneration``: ``pixel_values``
    ``(B, n_crops, 3, H, W)`` with ``pixel_attention_mask`` ``(B, n_crops, H, W)``;
    ``n_crops * image_seq_len`` image tokens. An all-zero crop is padding to these models, so a
    removed image holds the blank value 1e-6 instead (``zero_image_is_padding``)."""

    spec = FAMILY_SPECS["idefics3"]


class PaliGemmaAdapter(GenerativeAdapter):
    """``PaliGemmaForConditionalGeneration``: ``pixel_values`` ``(B, 3, H, W)``; ``input_ids`` =
    ``image_seq_length`` image tokens, then BOS and the prefix; ``token_type_ids`` 0 on the
    prefix (bidirectional attention), 1 on generated suffix tokens."""

    spec = FAMILY_SPECS["paligemma"]


__all__ = [
    "DECODING_COUNTERFACTUALS",
    "DEFAULT_DISTURBANCE",
    "GenerativeAdapter",
    "Idefics3Adapter",
    "LlavaAdapter",
    "PaliGemmaAdapter",
    "Qwen2VLAdapter",
    "generative_families",
]
