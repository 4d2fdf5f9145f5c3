"""What a model family *is*, as frozen data: :class:`AdapterSpec` and the table of built-in specs.

An adapter describes; input transforms act. The spec holds everything about a family that is a
fact rather than code: which input keys carry vision and language, which are required, which
module gives which feature (roles), where the logits are, which input masks a role's tokens when
its feature is pooled, where the pad token id lives, and the image layout the input transforms
(:mod:`causalvl.adapters.transforms`) need (image-token markers, a vision mask, how images are
packed). The adapter classes read their spec; the little family behaviour that is code (e.g. the
generic adapter's logits callable) stays as small method overrides.

    >>> from causalvl.adapters.spec import FAMILY_SPECS
    >>> FAMILY_SPECS["vilt"].vision_mask_key
    'pixel_mask'
    >>> FAMILY_SPECS["clip"].kind, FAMILY_SPECS["clip"].logits_field
    ('contrastive', 'logits_per_image')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

#: rank each input must have when present (checked by ``ModelAdapter.validate_inputs``)
DEFAULT_INPUT_RANKS: Mapping[str, int] = MappingProxyType(
    {"input_ids": 2, "attention_mask": 2, "token_type_ids": 2}
)

#: the fields an adapter class also exposes as attributes (``adapter.vision_keys``, ...)
MIRRORED_FIELDS = (
    "family",
    "kind",
    "vision_keys",
    "language_keys",
    "required_keys",
    "float_keys",
    "extra_keys",
    "roles",
    "vision_mask_key",
    "input_ranks",
    "unbatched_keys",
    "feature_layouts",
    "generative",
    "pixel_keys",
    "per_token_keys",
    "marker_attrs",
    "allows_no_image",
    "state_attrs",
    "blank_value",
)


@dataclass(frozen=True)
class AdapterSpec:
    """The frozen description of one model family.

    Attributes:
        family: registry key (``model.config.model_type``); ``""`` for a generic description.
        kind: ``"classifier"`` (logits ``(batch, num_answers)``) or ``"contrastive"`` (logits
            ``(num_images, num_texts)``; the language input is a set of candidate texts).
        vision_keys / language_keys: input keys of each modality.
        required_keys: keys the forward cannot run without.
        float_keys: inputs whose dtype must be floating.
        extra_keys: other inputs passed to the model unchanged (neither vision nor language).
        roles: role name -> module path (relative to the model).
        logits_field: the output field holding the answer logits (``None``: the output itself
            when it is a tensor, else the first of ``logits``, ``logits_per_image``,
            ``question_answering_score``).
        vision_mask_key: an input key that masks vision out (``"vision_attention_mask"``).
        input_ranks: input key -> the rank it must have when present.
        unbatched_keys: vision / language keys whose first dimension is not the batch.
        feature_layouts: role -> ``"batch_first"`` / ``"sequence_first"`` of its 3-D feature.
        pool_masks: role -> the input key whose ``(B, N)`` mask weights the mean over N when the
            role's feature is pooled (default: ``attention_mask`` for ``language_features``,
            ``vision_mask_key`` for every other role).
        pad_token_from: attribute paths (from the model) searched, in order, for
            ``pad_token_id``; the pad token replaces removed language tokens.
        generative: the model generates text (next-token logits ``(batch, length, vocab)``).
        pixel_keys: image inputs dropped by ``"drop_image_tokens"`` (generative families).
        per_token_keys: inputs aligned with ``input_ids`` ``(B, L)``, edited with it.
        marker_attrs: config attributes holding ids of tokens that frame the image block.
        allows_no_image: the model can run with no image at all.
        state_attrs: dotted paths of mutable per-generation model state (e.g. Qwen2-VL's
            ``model.rope_deltas``) that a second decoding branch must not clobber.
        blank_value: fill value of a blank image in processed space.
        image_layout: ``"batched"`` (one image row per example) or ``"grid_patches"`` (Qwen2-VL:
            every image's patches one after another, described by ``image_grid_thw``).
        zero_image_is_padding: the model skips an all-zero image as padding (Idefics3 /
            SmolVLM): a removed image is filled with ``blank_value`` instead of zeros.
        mask_keeps_one_patch: masking the image keeps one blank patch valid (ViLT cannot run
            with no valid patch; the patch size is read from ``model.config.patch_size``).
        unsupported_transforms: input transforms this family refuses although its keys would
            allow them (see :meth:`causalvl.adapters.ModelAdapter.supports`).
    """

    family: str = ""
    kind: Literal["classifier", "contrastive"] = "classifier"
    vision_keys: tuple[str, ...] = ()
    language_keys: tuple[str, ...] = ()
    required_keys: tuple[str, ...] = ()
    float_keys: tuple[str, ...] = ()
    extra_keys: tuple[str, ...] = ()
    roles: Mapping[str, str] = field(default_factory=dict)
    logits_field: str | None = None
    vision_mask_key: str | None = None
    input_ranks: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_INPUT_RANKS))
    unbatched_keys: tuple[str, ...] = ()
    feature_layouts: Mapping[str, str] = field(default_factory=dict)
    pool_masks: Mapping[str, str] = field(default_factory=dict)
    pad_token_from: tuple[str, ...] = ("config", "config.text_config")
    generative: bool = False
    pixel_keys: tuple[str, ...] = ()
    per_token_keys: tuple[str, ...] = ()
    marker_attrs: tuple[str, ...] = ()
    allows_no_image: bool = True
    state_attrs: tuple[str, ...] = ()
    blank_value: float = 0.0
    image_layout: Literal["batched", "grid_patches"] = "batched"
    zero_image_is_padding: bool = False
    mask_keeps_one_patch: bool = False
    unsupported_transforms: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("roles", "input_ranks", "feature_layouts", "pool_masks"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        object.__setattr__(self, "unsupported_transforms", frozenset(self.unsupported_transforms))

    def __hash__(self) -> int:
        # the mapping fields are read-only views, which do not hash: hash their items
        return hash(
            tuple(
                tuple(sorted(value.items())) if isinstance(value, Mapping) else value
                for value in (getattr(self, f.name) for f in dataclasses.fields(self))
            )
        )

    def pool_mask_key(self, role: str) -> str | None:
        """The input key masking ``role``'s tokens when its feature is pooled."""
        if role in self.pool_masks:
            return self.pool_masks[role]
        return "attention_mask" if role == "language_features" else self.vision_mask_key

    def replace(self, **changes: Any) -> AdapterSpec:
        """A copy with ``changes`` applied (the spec itself is frozen)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_attributes(cls, source: Any, base: AdapterSpec | None = None) -> AdapterSpec:
        """``base`` (default: an empty spec) with the fields an adapter exposes as attributes
        (:data:`MIRRORED_FIELDS`) read from ``source``: an adapter class written with class
        attributes, or a :class:`~causalvl.GenericAdapter` instance."""
        values: dict[str, Any] = {}
        for name in MIRRORED_FIELDS:
            value = getattr(source, name, None)
            if value is None and name != "vision_mask_key":
                continue
            if isinstance(value, property):  # a class whose subclass reads it from elsewhere
                continue
            values[name] = dict(value) if isinstance(value, Mapping) else value
        return (base if base is not None else cls()).replace(**values)


_VQA_TEXT = ("input_ids", "attention_mask", "token_type_ids")

#: defaults shared by the generative (``...ForConditionalGeneration``) families
GENERATIVE_SPEC = AdapterSpec(
    language_keys=("input_ids", "attention_mask"),
    required_keys=("input_ids", "pixel_values"),
    float_keys=("pixel_values",),
    roles={
        "vision_features": "model.multi_modal_projector",
        "language_features": "model.language_model.embed_tokens",
        "fused": "model.language_model.norm",
    },
    pad_token_from=("config.text_config", "generation_config"),
    generative=True,
    pixel_keys=("pixel_values",),
    per_token_keys=("attention_mask",),
)

_CLIP = AdapterSpec(
    family="clip",
    kind="contrastive",
    vision_keys=("pixel_values",),
    language_keys=("input_ids", "attention_mask"),
    required_keys=("pixel_values", "input_ids"),
    float_keys=("pixel_values",),
    input_ranks={**DEFAULT_INPUT_RANKS, "pixel_values": 4},
    roles={
        "vision_features": "visual_projection",
        "language_features": "text_projection",
        "vision_tokens": "vision_model.encoder",
    },
    logits_field="logits_per_image",
)

_QWEN2_VL = GENERATIVE_SPEC.replace(
    family="qwen2_vl",
    vision_keys=("pixel_values", "image_grid_thw"),
    language_keys=("input_ids", "attention_mask", "mm_token_type_ids"),
    pixel_keys=("pixel_values", "image_grid_thw"),
    per_token_keys=("attention_mask", "mm_token_type_ids"),
    input_ranks={
        **DEFAULT_INPUT_RANKS,
        "mm_token_type_ids": 2,
        "pixel_values": 2,
        "image_grid_thw": 2,
    },
    unbatched_keys=("pixel_values", "image_grid_thw"),
    marker_attrs=("vision_start_token_id", "vision_end_token_id"),
    state_attrs=("model.rope_deltas",),
    roles={
        "vision_features": "model.visual.merger",
        "language_features": "model.language_model.embed_tokens",
        "fused": "model.language_model.norm",
    },
    image_layout="grid_patches",
)

_IDEFICS3 = GENERATIVE_SPEC.replace(
    family="idefics3",
    # Idefics3 treats an all-zero image as padding and skips it; 1e-6 is the mean colour in
    # processed space to within float precision and is not skipped
    blank_value=1e-6,
    zero_image_is_padding=True,
    vision_keys=("pixel_values", "pixel_attention_mask"),
    pixel_keys=("pixel_values", "pixel_attention_mask"),
    input_ranks={**DEFAULT_INPUT_RANKS, "pixel_values": 5, "pixel_attention_mask": 4},
    roles={
        "vision_features": "model.connector",
        "language_features": "model.text_model.embed_tokens",
        "fused": "model.text_model.norm",
    },
)

#: the spec of every built-in family, by family name (``model.config.model_type``)
FAMILY_SPECS: Mapping[str, AdapterSpec] = MappingProxyType(
    {
        "clip": _CLIP,
        "siglip": _CLIP.replace(
            family="siglip",
            roles={
                "vision_features": "vision_model.head",
                "language_features": "text_model.head",
                "vision_tokens": "vision_model.encoder",
            },
        ),
        "vilt": AdapterSpec(
            family="vilt",
            vision_keys=("pixel_values", "pixel_mask"),
            language_keys=_VQA_TEXT,
            required_keys=("pixel_values", "input_ids"),
            float_keys=("pixel_values",),
            vision_mask_key="pixel_mask",
            mask_keeps_one_patch=True,
            input_ranks={**DEFAULT_INPUT_RANKS, "pixel_values": 4, "pixel_mask": 3},
            roles={
                "vision_features": "vilt.embeddings.patch_embeddings",
                "language_features": "vilt.embeddings.text_embeddings",
                "fused": "vilt.pooler",
            },
        ),
        "lxmert": AdapterSpec(
            family="lxmert",
            vision_keys=("visual_feats", "visual_pos", "visual_attention_mask"),
            language_keys=_VQA_TEXT,
            required_keys=("input_ids", "visual_feats", "visual_pos"),
            float_keys=("visual_feats", "visual_pos"),
            input_ranks={**DEFAULT_INPUT_RANKS, "visual_feats": 3, "visual_pos": 3},
            vision_mask_key="visual_attention_mask",
            roles={
                "vision_features": "lxmert.encoder.visn_fc",
                "language_features": "lxmert.embeddings",
                "fused": "lxmert.pooler",
                "attention_layers": r"lxmert\.encoder\.layer\.\d+\.attention",
                "vision_attention_layers": r"lxmert\.encoder\.r_layers\.\d+\.attention",
            },
            logits_field="question_answering_score",
        ),
        "visual_bert": AdapterSpec(
            family="visual_bert",
            vision_keys=("visual_embeds", "visual_attention_mask", "visual_token_type_ids"),
            language_keys=_VQA_TEXT,
            required_keys=("input_ids", "attention_mask", "visual_embeds"),
            float_keys=("visual_embeds",),
            input_ranks={**DEFAULT_INPUT_RANKS, "visual_embeds": 3},
            vision_mask_key="visual_attention_mask",
            roles={
                "vision_features": "visual_bert.embeddings.visual_projection",
                "language_features": "visual_bert.embeddings.word_embeddings",
                "fused": "visual_bert.pooler",
                "attention_layers": r"visual_bert\.encoder\.layer\.\d+\.attention",
            },
        ),
        "llava": GENERATIVE_SPEC.replace(
            family="llava",
            vision_keys=("pixel_values", "image_sizes"),
            pixel_keys=("pixel_values", "image_sizes"),
            input_ranks={**DEFAULT_INPUT_RANKS, "pixel_values": 4},
        ),
        "qwen2_vl": _QWEN2_VL,
        "idefics3": _IDEFICS3,
        "paligemma": GENERATIVE_SPEC.replace(
            family="paligemma",
            vision_keys=("pixel_values",),
            language_keys=_VQA_TEXT,
            per_token_keys=("attention_mask", "token_type_ids"),
            input_ranks={**DEFAULT_INPUT_RANKS, "pixel_values": 4},
        ),
    }
)
