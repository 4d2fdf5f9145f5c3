"""Adapters for the Hugging Face vision-language families causalvl supports out of the box.

Each class reads its frozen spec from :data:`causalvl.adapters.spec.FAMILY_SPECS`; the
registry (:data:`causalvl.adapters.registry.ADAPTER_TABLE`) imports this module only when a
model of one of these families is wrapped.
"""

from __future__ import annotations

from .base import ModelAdapter
from .spec import FAMILY_SPECS


class CLIPAdapter(ModelAdapter):
    """``CLIPModel``: contrastive; logits are ``logits_per_image`` ``(num_images, num_texts)``.

    Roles: ``vision_features`` = projected image embeddings ``(num_images, proj_dim)``,
    ``language_features`` = projected text embeddings ``(num_texts, proj_dim)``,
    ``vision_tokens`` = the vision encoder's patch states ``(num_images, patches + 1, hidden)``.
    """

    spec = FAMILY_SPECS["clip"]


class SiglipAdapter(CLIPAdapter):
    """``SiglipModel`` (and ``siglip2``): like CLIP, with the pooling heads as feature roles."""

    spec = FAMILY_SPECS["siglip"]


class ViltAdapter(ModelAdapter):
    """ViLT (``ViltForQuestionAnswering``, ``ViltForImageAndTextRetrieval``): single-stream.

    Roles: ``vision_features`` = patch embeddings ``(B, hidden, h, w)``, ``language_features`` =
    text embeddings ``(B, L, hidden)``, ``fused`` = the pooler ``(B, hidden)``.
    Masking the image (``vision_attention_mask``) keeps a single blank patch valid (ViLT cannot
    run with no valid patch).
    """

    spec = FAMILY_SPECS["vilt"]


class LxmertAdapter(ModelAdapter):
    """``LxmertForQuestionAnswering``: region features ``visual_feats`` ``(B, N, F)`` with boxes
    ``visual_pos`` ``(B, N, 4)``; logits are ``question_answering_score``.

    Roles: ``vision_features`` = projected region features ``(B, N, hidden)``,
    ``language_features`` = word embeddings ``(B, L, hidden)``, ``fused`` = the pooler;
    ``attention_layers`` / ``vision_attention_layers`` = the self-attention blocks of the
    language / relation (object) layers, a regex over several modules (for CATT).
    """

    spec = FAMILY_SPECS["lxmert"]


class VisualBertAdapter(ModelAdapter):
    """``VisualBertForQuestionAnswering`` and friends: detector features ``visual_embeds``
    ``(B, N, F)`` appended to the text stream.

    Roles: ``vision_features`` = projected visual embeddings ``(B, N, hidden)``,
    ``language_features`` = word embeddings ``(B, L, hidden)``, ``fused`` = the pooler;
    ``attention_layers`` = the encoder's self-attention blocks (a regex, for CATT).
    """

    spec = FAMILY_SPECS["visual_bert"]
