"""Small reference models: a VQA classifier and a contrastive image-text model.

They train in seconds on a CPU and have the module structure the published methods assume
(separate vision and question encoders, a fusion, an answer classifier), so the demo, the
examples and the tests exercise every intervention on them. Their adapters are registered by
class name, so ``causalvl.intervene(TinyVQA(...), cfg)`` needs no adapter argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapters.base import ModelAdapter, register_adapter
from .errors import ConfigError, InputError


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} = {value!r} is invalid: must be an integer >= 1.")


class ConvEncoder(nn.Module):
    """Images ``(B, C, H, W)`` -> features ``(B, hidden)`` with two conv blocks."""

    def __init__(self, in_channels: int, hidden: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * width, hidden),
            nn.ReLU(),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


class BagOfWordsEncoder(nn.Module):
    """Token ids ``(B, L)`` (+ mask) -> features ``(B, hidden)``: masked mean of embeddings,
    then a linear layer. Token id 0 is padding."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.proj(pooled)


class Fusion(nn.Module):
    """Element-wise product of the two modalities followed by an MLP: ``(B, hidden)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, vision: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        return self.mlp(vision * language)


class TinyVQA(nn.Module):
    """A small VQA classifier: CNN image encoder, bag-of-words question encoder, product fusion.

    Args:
        vocab_size: question vocabulary size (id 0 is padding).
        num_answers: size of the answer vocabulary.
        image_size: side of the square input images (any size works; used for documentation).
        channels: image channels.
        hidden: feature width.

    Inputs: ``pixel_values`` ``(B, channels, H, W)``, ``input_ids`` ``(B, L)``,
    optional ``attention_mask`` ``(B, L)``. Returns logits ``(B, num_answers)``.

    Roles: ``vision_features`` (``vision_encoder``), ``language_features``
    (``question_encoder``), ``fused`` (``fusion``), all ``(B, hidden)``.

    Example:
        >>> import torch
        >>> net = TinyVQA(vocab_size=20, num_answers=4, image_size=8)
        >>> net(torch.rand(2, 3, 8, 8), torch.randint(1, 20, (2, 5))).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        vocab_size: int,
        num_answers: int,
        image_size: int = 16,
        channels: int = 3,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        _check_dims(
            vocab_size=vocab_size,
            num_answers=num_answers,
            image_size=image_size,
            channels=channels,
            hidden=hidden,
        )
        self.vision_encoder = ConvEncoder(channels, hidden)
        self.question_encoder = BagOfWordsEncoder(vocab_size, hidden)
        self.fusion = Fusion(hidden)
        self.classifier = nn.Linear(hidden, num_answers)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        v = self.vision_encoder(pixel_values)
        q = self.question_encoder(input_ids, attention_mask)
        return self.classifier(self.fusion(v, q))


class TinyContrastive(nn.Module):
    """A small CLIP-like dual encoder. Returns ``logits_per_image`` ``(num_images, num_texts)``
    = ``exp(logit_scale) * cos(image_i, text_j)``.

    Example:
        >>> import torch
        >>> net = TinyContrastive(vocab_size=20)
        >>> net(torch.rand(3, 3, 16, 16), torch.randint(1, 20, (5, 6))).shape
        torch.Size([3, 5])
    """

    def __init__(
        self, vocab_size: int, channels: int = 3, hidden: int = 64, embed_dim: int = 32
    ) -> None:
        super().__init__()
        _check_dims(vocab_size=vocab_size, channels=channels, hidden=hidden, embed_dim=embed_dim)
        self.vision_encoder = ConvEncoder(channels, hidden)
        self.text_encoder = SequenceEncoder(vocab_size, hidden)
        self.image_proj = nn.Linear(hidden, embed_dim)
        self.text_proj = nn.Linear(hidden, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        img = F.normalize(self.image_proj(self.vision_encoder(pixel_values)), dim=-1)
        txt = F.normalize(self.text_proj(self.text_encoder(input_ids, attention_mask)), dim=-1)
        return self.logit_scale.exp() * img @ txt.t()


class SequenceEncoder(nn.Module):
    """Token ids ``(B, L)`` -> ``(B, hidden)`` with a GRU, so word order matters (unlike a bag
    of words, it can tell "a 3 left of a 7" from "a 7 left of a 3")."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        states, _ = self.gru(self.embed(input_ids))
        last = attention_mask.long().sum(1).clamp_min(1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]


@register_adapter("TinyVQA")
class TinyVQAAdapter(ModelAdapter):
    """Adapter of :class:`TinyVQA`."""

    family = "tiny_vqa"
    vision_keys = ("pixel_values",)
    language_keys = ("input_ids", "attention_mask")
    required_keys = ("pixel_values", "input_ids")
    float_keys = ("pixel_values",)
    roles = {
        "vision_features": "vision_encoder",
        "language_features": "question_encoder",
        "fused": "fusion",
    }


@register_adapter("TinyContrastive")
class TinyContrastiveAdapter(TinyVQAAdapter):
    """Adapter of :class:`TinyContrastive`."""

    family = "tiny_contrastive"
    kind = "contrastive"
    roles = {
        "vision_features": "image_proj",
        "language_features": "text_proj",
    }


class RegionEncoder(nn.Module):
    """Region crops ``(B, R, C, h, w)`` -> region features ``(B, R, hidden)``: one shared
    :class:`ConvEncoder` applied to every crop (a stand-in for a detector's RoI features)."""

    def __init__(self, in_channels: int, hidden: int, width: int = 32) -> None:
        super().__init__()
        self.encoder = ConvEncoder(in_channels, hidden, width)

    def forward(self, region_pixels: torch.Tensor) -> torch.Tensor:
        b, r = region_pixels.shape[:2]
        return self.encoder(region_pixels.flatten(0, 1)).reshape(b, r, -1)


class TinyRegionClassifier(nn.Module):
    """A small region-feature classifier: each region crop is encoded on its own, then the
    region features are concatenated and mixed, so context regions can sway the prediction
    (the object-in-context setting of :class:`~causalvl.datasets.ContextShift`).

    Args:
        num_classes: number of output classes.
        num_regions: regions per example ``R`` (region 0 is usually the target).
        channels: image channels.
        hidden: region feature width ``D``.
        width: convolution channels of the region encoder.

    Inputs: ``region_pixels`` ``(B, R, channels, h, w)``. Returns logits ``(B, num_classes)``.

    Roles: ``vision_features`` (``region_encoder``) ``(B, R, hidden)``; ``fused`` (``mixer``)
    ``(B, hidden)``.

    Example:
        >>> import torch
        >>> net = TinyRegionClassifier(num_classes=10)
        >>> net(torch.rand(4, 2, 3, 16, 16)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        num_classes: int,
        num_regions: int = 2,
        channels: int = 3,
        hidden: int = 32,
        width: int = 32,
    ) -> None:
        super().__init__()
        _check_dims(
            num_classes=num_classes,
            num_regions=num_regions,
            channels=channels,
            hidden=hidden,
            width=width,
        )
        self.num_regions = num_regions
        self.region_encoder = RegionEncoder(channels, hidden, width)
        self.mixer = nn.Sequential(nn.Linear(num_regions * hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, region_pixels: torch.Tensor) -> torch.Tensor:
        if region_pixels.dim() != 5 or region_pixels.shape[1] != self.num_regions:
            raise InputError(
                f"region_pixels has shape {tuple(region_pixels.shape)}; expected "
                f"(batch, {self.num_regions}, channels, h, w)."
            )
        regions = self.region_encoder(region_pixels)
        return self.classifier(self.mixer(regions.flatten(1)))


@register_adapter("TinyRegionClassifier")
class TinyRegionClassifierAdapter(ModelAdapter):
    """Adapter of :class:`TinyRegionClassifier` (vision only: no language input)."""

    family = "tiny_region"
    vision_keys = ("region_pixels",)
    required_keys = ("region_pixels",)
    float_keys = ("region_pixels",)
    roles = {"vision_features": "region_encoder", "fused": "mixer"}
