"""Adapters for the Hugging Face vision-language families causalvl supports out of the box."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import ModelAdapter, register_adapter


@register_adapter("clip")
class CLIPAdapter(ModelAdapter):
    """``CLIPModel``: contrastive; logits are ``logits_per_image`` ``(num_images, num_texts)``.

    Roles: ``vision_features`` = projected image embeddings ``(num_images, proj_dim)``,
    ``language_features`` = projected text embeddings ``(num_texts, proj_dim)``,
    ``vision_tokens`` = the vision encoder's patch states ``(num_images, patches + 1, hidden)``.
    """

    family = "clip"
    kind = "contrastive"
    vision_keys = ("pixel_values",)
    language_keys = ("input_ids", "attention_mask")
    required_keys = ("pixel_values", "input_ids")
    float_keys = ("pixel_values",)
    input_ranks = {**ModelAdapter.input_ranks, "pixel_values": 4}
    roles = {
        "vision_features": "visual_projection",
        "language_features": "text_projection",
        "vision_tokens": "vision_model.encoder",
    }

    def logits(self, output: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        return output.logits_per_image


@register_adapter("siglip", "siglip2")
class SiglipAdapter(CLIPAdapter):
    """``SiglipModel``: like CLIP, with the pooling heads as feature roles."""

    family = "siglip"
    roles = {
        "vision_features": "vision_model.head",
        "language_features": "text_model.head",
        "vision_tokens": "vision_model.encoder",
    }


@register_adapter("vilt")
class ViltAdapter(ModelAdapter):
    """ViLT (``ViltForQuestionAnswering``, ``ViltForImageAndTextRetrieval``): single-stream.

    Roles: ``vision_features`` = patch embeddings ``(B, hidden, h, w)``, ``language_features`` =
    text embeddings ``(B, L, hidden)``, ``fused`` = the pooler ``(B, hidden)``.
    ``"mask"`` removal keeps a single blank patch valid (ViLT cannot run with no valid patch).
    """

    family = "vilt"
    vision_keys = ("pixel_values", "pixel_mask")
    language_keys = ("input_ids", "attention_mask", "token_type_ids")
    required_keys = ("pixel_values", "input_ids")
    float_keys = ("pixel_values",)
    vision_mask_key = "pixel_mask"
    input_ranks = {**ModelAdapter.input_ranks, "pixel_values": 4, "pixel_mask": 3}
    roles = {
        "vision_features": "vilt.embeddings.patch_embeddings",
        "language_features": "vilt.embeddings.text_embeddings",
        "fused": "vilt.pooler",
    }

    def _mask_vision(self, inputs: dict[str, Any], keys: list[str]) -> dict[str, Any]:
        pixels = inputs["pixel_values"]
        mask = inputs.get("pixel_mask")
        if not isinstance(mask, torch.Tensor):
            mask = torch.ones(
                pixels.shape[0], *pixels.shape[2:], dtype=torch.long, device=pixels.device
            )
        patch = int(self.model.config.patch_size) if self.model is not None else 32
        new_mask = torch.zeros_like(mask)
        new_mask[:, :patch, :patch] = 1
        inputs["pixel_mask"] = new_mask
        inputs["pixel_values"] = torch.zeros_like(pixels)
        return inputs


@register_adapter("lxmert")
class LxmertAdapter(ModelAdapter):
    """``LxmertForQuestionAnswering``: region features ``visual_feats`` ``(B, N, F)`` with boxes
    ``visual_pos`` ``(B, N, 4)``; logits are ``question_answering_score``.

    Roles: ``vision_features`` = projected region features ``(B, N, hidden)``,
    ``language_features`` = word embeddings ``(B, L, hidden)``, ``fused`` = the pooler;
    ``attention_layers`` / ``vision_attention_layers`` = the self-attention blocks of the
    language / relation (object) layers, a regex over several modules (for CATT).
    """

    family = "lxmert"
    vision_keys = ("visual_feats", "visual_pos", "visual_attention_mask")
    language_keys = ("input_ids", "attention_mask", "token_type_ids")
    required_keys = ("input_ids", "visual_feats", "visual_pos")
    float_keys = ("visual_feats", "visual_pos")
    input_ranks = {**ModelAdapter.input_ranks, "visual_feats": 3, "visual_pos": 3}
    vision_mask_key = "visual_attention_mask"
    roles = {
        "vision_features": "lxmert.encoder.visn_fc",
        "language_features": "lxmert.embeddings",
        "fused": "lxmert.pooler",
        "attention_layers": r"lxmert\.encoder\.layer\.\d+\.attention",
        "vision_attention_layers": r"lxmert\.encoder\.r_layers\.\d+\.attention",
    }

    def logits(self, output: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        return output.question_answering_score


@register_adapter("visual_bert")
class VisualBertAdapter(ModelAdapter):
    """``VisualBertForQuestionAnswering`` and friends: detector features ``visual_embeds``
    ``(B, N, F)`` appended to the text stream.

    Roles: ``vision_features`` = projected visual embeddings ``(B, N, hidden)``,
    ``language_features`` = word embeddings ``(B, L, hidden)``, ``fused`` = the pooler;
    ``attention_layers`` = the encoder's self-attention blocks (a regex, for CATT).
    """

    family = "visual_bert"
    vision_keys = ("visual_embeds", "visual_attention_mask", "visual_token_type_ids")
    language_keys = ("input_ids", "attention_mask", "token_type_ids")
    required_keys = ("input_ids", "attention_mask", "visual_embeds")
    float_keys = ("visual_embeds",)
    input_ranks = {**ModelAdapter.input_ranks, "visual_embeds": 3}
    vision_mask_key = "visual_attention_mask"
    roles = {
        "vision_features": "visual_bert.embeddings.visual_projection",
        "language_features": "visual_bert.embeddings.word_embeddings",
        "fused": "visual_bert.pooler",
        "attention_layers": r"visual_bert\.encoder\.layer\.\d+\.attention",
    }


from . import generative  # noqa: E402, F401  (registers the generative families)
