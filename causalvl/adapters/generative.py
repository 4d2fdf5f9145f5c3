"""Adapters for generative vision-language models (LLaVA, Qwen2-VL / Qwen2.5-VL, Idefics3 /
SmolVLM, PaliGemma).

Besides the usual input roles, a :class:`GenerativeAdapter` knows the image-token layout of its
family (the image token id, where image tokens sit in ``input_ids``, which pixel keys go with
them) and builds the counterfactual inputs of contrastive decoding
(:meth:`GenerativeAdapter.decoding_counterfactual`):

``"noise"``
    VCD's forward diffusion at step ``t`` on the processed ``pixel_values`` (same shape, same
    image-token layout).
``"blank"``
    zeros in processed space. For mean/std-normalised processors (CLIP, SigLIP, Qwen2-VL,
    Idefics3) this is the image filled with the processor's mean colour. (Idefics3 / SmolVLM
    skip all-zero images as padding, so their blank image holds 1e-6 instead.)
``"no_image"``
    the image tokens (and Qwen's vision start/end markers) are dropped from ``input_ids`` and
    every per-token input, and the pixel inputs are removed; the sequence gets shorter (rows are
    left-padded when they lose different numbers of tokens).
``"instruction"``
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
from .base import _REGISTRY, ModelAdapter, derangement, register_adapter

DECODING_COUNTERFACTUALS = ("noise", "blank", "no_image", "instruction")

#: ICD's disturbance instruction for LLaVA (p1k0pan/ICD, icd_sample_llava.py)
DEFAULT_DISTURBANCE = (
    "You are a confused objects detector to provide a fuzzy overview or impression of the image."
)


class GenerativeAdapter(ModelAdapter):
    """Base adapter of generative VLMs (``...ForConditionalGeneration`` models).

    Class attributes a subclass sets (besides :class:`ModelAdapter`'s):
        pixel_keys: the image inputs (dropped by ``"no_image"``).
        per_token_keys: inputs aligned with ``input_ids`` (``(B, L)``), edited with it.
        marker_attrs: config attributes holding ids of tokens that frame the image block
            (dropped with the image tokens).
        allows_no_image: whether the model can run with no image at all.
        state_attrs: dotted attribute paths of mutable per-generation model state (e.g.
            Qwen2-VL's ``model.rope_deltas``) that a second decoding branch must not clobber.
    """

    language_keys = ("input_ids", "attention_mask")
    required_keys = ("input_ids", "pixel_values")
    float_keys = ("pixel_values",)
    generative: ClassVar[bool] = True
    pixel_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    per_token_keys: ClassVar[tuple[str, ...]] = ("attention_mask",)
    marker_attrs: ClassVar[tuple[str, ...]] = ()
    allows_no_image: ClassVar[bool] = True
    state_attrs: ClassVar[tuple[str, ...]] = ()
    roles = {
        "vision_features": "model.multi_modal_projector",
        "language_features": "model.language_model.embed_tokens",
        "fused": "model.language_model.norm",
    }

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

    #: fill value of the ``"blank"`` image in processed space
    blank_value: ClassVar[float] = 0.0

    @property
    def pad_token_id(self) -> int:
        cfg = getattr(self.model, "config", None)
        for source in (
            getattr(cfg, "text_config", None),
            getattr(self.model, "generation_config", None),
        ):
            pad = getattr(source, "pad_token_id", None)
            if isinstance(pad, int):
                return pad
        return 0

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
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise InputError(
                "contrastive decoding needs input_ids of shape (batch, length) with the image "
                f"tokens expanded; got {type(ids).__name__}."
            )
        out = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        if mode in ("noise", "blank"):
            present = [k for k in self.pixel_keys if isinstance(out.get(k), torch.Tensor)]
            floating = [k for k in present if out[k].is_floating_point()]
            if not floating:
                raise InputError(
                    f"mode {mode!r} distorts the pixel inputs, but none of {list(self.pixel_keys)} "
                    f"is among the inputs {sorted(inputs)}."
                )
            from ..decoding.scores import diffusion_noise

            for k in floating:
                if mode == "blank":
                    out[k] = torch.full_like(out[k], self.blank_value)
                else:
                    out[k] = diffusion_noise(out[k], noise_step, generator)
            return out
        if mode == "no_image":
            return self._drop_image(out)
        if disturbance_ids is None or len(disturbance_ids) == 0:
            raise ConfigError(
                "the 'instruction' counterfactual needs the disturbance token ids: set "
                "CounterfactualDecodingConfig(disturbance_ids=[...]) or pass tokenizer=... to "
                "generate so the disturbance text can be encoded."
            )
        return self._insert_text(out, torch.as_tensor(list(disturbance_ids), dtype=ids.dtype))

    def _drop_image(self, out: dict[str, Any]) -> dict[str, Any]:
        if not self.allows_no_image:
            raise UnsupportedModelError(
                f"the {self.family} model cannot run without an image (its forward needs "
                "pixel_values for every prompt); use counterfactual='blank' or 'noise' instead."
            )
        ids = out["input_ids"]
        keep = ~self.image_block_mask(ids)
        if "attention_mask" in out and isinstance(out["attention_mask"], torch.Tensor):
            keep_valid = keep & out["attention_mask"].bool()
        else:
            keep_valid = keep
        counts = keep_valid.sum(1)
        new_len = int(counts.max())
        rows = ids.shape[0]
        token_keys = [
            "input_ids",
            *[k for k in self.per_token_keys if isinstance(out.get(k), torch.Tensor)],
        ]
        new: dict[str, torch.Tensor] = {}
        for k in token_keys:
            src = out[k]
            pad_value = self.pad_token_id if k == "input_ids" else 0
            dst = torch.full((rows, new_len), pad_value, dtype=src.dtype, device=src.device)
            for r in range(rows):
                kept = src[r][keep_valid[r]]
                if kept.numel():
                    dst[r, new_len - kept.numel() :] = kept  # left-pad
            new[k] = dst
        if "attention_mask" not in new:
            am = torch.zeros(rows, new_len, dtype=torch.long, device=ids.device)
            for r in range(rows):
                am[r, new_len - int(counts[r]) :] = 1
            if not bool((am == 1).all()):
                new["attention_mask"] = am
        else:
            am = torch.zeros_like(new["attention_mask"])
            for r in range(rows):
                am[r, new_len - int(counts[r]) :] = 1
            new["attention_mask"] = am
        out.update(new)
        for k in self.pixel_keys:
            out.pop(k, None)
        return out

    def _insert_text(self, out: dict[str, Any], prefix: torch.Tensor) -> dict[str, Any]:
        ids = out["input_ids"]
        prefix = prefix.to(ids.device)
        pos = self.text_insert_position(ids)
        n = prefix.numel()
        rows, length = ids.shape
        token_keys = [
            "input_ids",
            *[k for k in self.per_token_keys if isinstance(out.get(k), torch.Tensor)],
        ]
        for k in token_keys:
            src = out[k]
            dst = torch.empty((rows, length + n), dtype=src.dtype, device=src.device)
            for r in range(rows):
                p = int(pos[r])
                if k == "input_ids":
                    fill = prefix.to(src.dtype)
                elif k == "attention_mask":
                    fill = torch.ones(n, dtype=src.dtype, device=src.device)
                else:  # token types: inserted text is text (0)
                    fill = torch.zeros(n, dtype=src.dtype, device=src.device)
                dst[r] = torch.cat([src[r, :p], fill, src[r, p:]])
            out[k] = dst
        return out

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


@register_adapter("llava")
class LlavaAdapter(GenerativeAdapter):
    """``LlavaForConditionalGeneration``: ``pixel_values`` ``(B, 3, H, W)``; ``input_ids`` holds
    one image token per visual feature (576 for LLaVA-1.5-336)."""

    family = "llava"
    vision_keys = ("pixel_values", "image_sizes")
    pixel_keys = ("pixel_values", "image_sizes")
    input_ranks = {**ModelAdapter.input_ranks, "pixel_values": 4}


@register_adapter("qwen2_vl", "qwen2_5_vl")
class Qwen2VLAdapter(GenerativeAdapter):
    """``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration``: flattened
    patches ``pixel_values`` ``(sum(t*h*w), 3*2*14*14)`` with ``image_grid_thw`` ``(n_images, 3)``;
    ``prod(grid)/merge^2`` image tokens framed by vision start/end markers;
    ``mm_token_type_ids`` (1 on image tokens) drives M-RoPE. The model caches ``rope_deltas``
    between calls, which each decoding branch keeps separately."""

    family = "qwen2_vl"
    vision_keys = ("pixel_values", "image_grid_thw")
    language_keys = ("input_ids", "attention_mask", "mm_token_type_ids")
    pixel_keys = ("pixel_values", "image_grid_thw")
    per_token_keys = ("attention_mask", "mm_token_type_ids")
    input_ranks = {
        **ModelAdapter.input_ranks,
        "mm_token_type_ids": 2,
        "pixel_values": 2,
        "image_grid_thw": 2,
    }
    unbatched_keys = ("pixel_values", "image_grid_thw")
    marker_attrs = ("vision_start_token_id", "vision_end_token_id")
    state_attrs = ("model.rope_deltas",)
    roles = {
        "vision_features": "model.visual.merger",
        "language_features": "model.language_model.embed_tokens",
        "fused": "model.language_model.norm",
    }

    def _remove_vision(
        self, inputs: dict[str, Any], mode: str, generator: torch.Generator | None
    ) -> dict[str, Any]:
        if mode != "shuffle":
            return super()._remove_vision(inputs, mode, generator)
        # pixel_values holds the patches of every image one after another, not one row per
        # example: shuffle whole images (image_grid_thw rows), and only between images of the
        # same grid, which have the same number of image tokens in input_ids
        pixels, grid = inputs.get("pixel_values"), inputs.get("image_grid_thw")
        ids = inputs.get("input_ids")
        if not isinstance(pixels, torch.Tensor) or not isinstance(grid, torch.Tensor):
            raise InputError(
                "the qwen2_vl 'shuffle' counterfactual needs pixel_values and image_grid_thw; "
                f"got keys {sorted(inputs)}."
            )
        if grid.dim() != 2 or grid.shape[1] != 3:
            raise InputError(
                f"image_grid_thw must have shape (num_images, 3), got {tuple(grid.shape)}."
            )
        sizes = [int(n) for n in grid.long().prod(-1)]
        if sum(sizes) != pixels.shape[0]:
            raise InputError(
                f"image_grid_thw describes {sum(sizes)} patches but pixel_values holds "
                f"{pixels.shape[0]} rows; pass the processor's pixel_values and image_grid_thw "
                "together."
            )
        if isinstance(ids, torch.Tensor) and ids.dim() == 2:
            per_row = self.image_token_mask(ids).any(1)
            if int(per_row.sum()) != len(sizes) or len(sizes) != ids.shape[0]:
                raise InputError(
                    f"the qwen2_vl 'shuffle' counterfactual swaps images between examples and "
                    f"needs exactly one image per example; got {len(sizes)} images for "
                    f"{ids.shape[0]} examples. Use mode 'zeros', 'mean' or 'noise'."
                )
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, row in enumerate(grid.tolist()):
            groups.setdefault(tuple(int(v) for v in row), []).append(i)
        lonely = [g for g, members in groups.items() if len(members) < 2]
        if len(sizes) >= 2 and lonely:
            raise InputError(
                f"the qwen2_vl 'shuffle' counterfactual swaps images only between examples of "
                f"the same image grid (they take the same number of image tokens), and grid(s) "
                f"{lonely} occur once in this batch (grids {grid.tolist()}). Resize the images "
                "to one size, batch images of equal size together, or use mode 'zeros', 'mean' "
                "or 'noise'."
            )
        order = list(range(len(sizes)))
        for members in groups.values():
            perm = derangement(len(members), generator)
            for j, src in zip(members, perm.tolist(), strict=True):
                order[j] = members[src]
        starts = [0]
        for n in sizes:
            starts.append(starts[-1] + n)
        chunks = [pixels[starts[i] : starts[i + 1]] for i in order]
        inputs["pixel_values"] = torch.cat(chunks) if chunks else pixels.clone()
        inputs["image_grid_thw"] = grid[torch.tensor(order, dtype=torch.long, device=grid.device)]
        return inputs


@register_adapter("idefics3", "smolvlm")
class Idefics3Adapter(GenerativeAdapter):
    """``Idefics3ForConditionalGeneration`` / ``SmolVLMForConditionalGeneration``: ``pixel_values``
    ``(B, n_crops, 3, H, W)`` with ``pixel_attention_mask`` ``(B, n_crops, H, W)``;
    ``n_crops * image_seq_len`` image tokens."""

    family = "idefics3"
    #: Idefics3 treats an all-zero image as padding and skips it; 1e-6 is the mean colour in
    #: processed space to within float precision and is not skipped
    blank_value = 1e-6
    vision_keys = ("pixel_values", "pixel_attention_mask")
    pixel_keys = ("pixel_values", "pixel_attention_mask")
    input_ranks = {**ModelAdapter.input_ranks, "pixel_values": 5, "pixel_attention_mask": 4}
    roles = {
        "vision_features": "model.connector",
        "language_features": "model.text_model.embed_tokens",
        "fused": "model.text_model.norm",
    }

    def _remove_vision(
        self, inputs: dict[str, Any], mode: str, generator: torch.Generator | None
    ) -> dict[str, Any]:
        # an all-zero crop is padding to Idefics3 / SmolVLM: the model drops it and the image
        # tokens no longer match the image features. Crops that held an image get the blank
        # value instead of zeros (crops that were padding in the inputs stay padding).
        before = inputs.get("pixel_values")
        out = super()._remove_vision(inputs, mode, generator)
        after = out.get("pixel_values")
        if (
            isinstance(before, torch.Tensor)
            and isinstance(after, torch.Tensor)
            and after.is_floating_point()
            and before.shape == after.shape
            and before.dim() >= 3
        ):
            flat = before.dim() - 3  # the leading (batch, crops) dims of (..., 3, H, W)
            was_image = (before != 0).flatten(flat).any(-1)
            now_blank = (after == 0).flatten(flat).all(-1)
            fix = was_image & now_blank
            if bool(fix.any()):
                after = after.clone()
                after[fix] = self.blank_value
                out["pixel_values"] = after
        return out


@register_adapter("paligemma")
class PaliGemmaAdapter(GenerativeAdapter):
    """``PaliGemmaForConditionalGeneration``: ``pixel_values`` ``(B, 3, H, W)``; ``input_ids`` =
    ``image_seq_length`` image tokens, then BOS and the prefix; ``token_type_ids`` 0 on the
    prefix (bidirectional attention), 1 on generated suffix tokens."""

    family = "paligemma"
    vision_keys = ("pixel_values",)
    language_keys = ("input_ids", "attention_mask", "token_type_ids")
    per_token_keys = ("attention_mask", "token_type_ids")
    input_ranks = {**ModelAdapter.input_ranks, "pixel_values": 4}


def generative_families() -> list[str]:
    """Registered families whose adapter is a :class:`GenerativeAdapter`."""
    return sorted(
        k
        for k, v in _REGISTRY.items()
        if isinstance(v, type) and issubclass(v, GenerativeAdapter) and not k[:1].isupper()
    )
