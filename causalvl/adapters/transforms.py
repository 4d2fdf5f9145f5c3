"""The one registry of named input transforms: every way causalvl edits a model's inputs.

An adapter *describes* a model (its :class:`~causalvl.adapters.spec.AdapterSpec`); an input
transform *acts* on inputs: it removes or replaces the image, the text or the context region and
returns a new dict (the inputs it was given are never modified). Each transform is an
:class:`InputTransform` with a name and capability flags, so callers ask what a transform needs
instead of guessing from an adapter's methods::

    >>> from causalvl.adapters.transforms import get_transform, transform_names
    >>> t = get_transform("vision_shuffle")
    >>> t.removes, t.needs_generator, t.keeps_shapes
    ('vision', True, True)
    >>> "diffusion_noise" in transform_names()
    True

Transforms (``removes``: the part they replace):

=========================== ========= ===========================================================
name                        removes   what it does
=========================== ========= ===========================================================
``vision_zeros``            vision    floating vision inputs become zeros
``vision_mean``             vision    the fitted vision mean (``adapter.fit_vision_mean``), else
                                      the batch mean
``vision_fitted_mean``      vision    the fitted vision mean; raises when none was fitted
``vision_noise_image``      vision    a Gaussian *noise image* with the batch's mean and std
``vision_shuffle``          vision    another example's image (a derangement of the batch)
``vision_attention_mask``   vision    the model's vision mask zeroed (pixels zeroed too)
``language_pad``            language  content tokens become the pad token (special tokens kept)
``language_attention_mask`` language  content tokens masked out of attention
``language_shuffle``        language  another example's text (a derangement)
``diffusion_noise``         vision    VCD's forward *diffusion* at step ``noise_step`` on the
                                      processed pixels (generative models; not a noise image)
``blank_image``             vision    the pixels filled with the family's blank value
                                      (generative models)
``drop_image_tokens``       vision    the image tokens, their markers and the pixel inputs are
                                      dropped (generative models; the sequence gets shorter)
``instruction_disturbance`` language  a disturbance prefix (ICD) inserted after the image block
                                      (generative models; text-only counterfactual)
``context_swap``            context   another example's context region (``region_pixels[:, 1]``
                                      and its pixels in the composite)
``context_zeros``           context   the context region becomes zeros
=========================== ========= ===========================================================

``adapter.supports(name)`` says whether a bound adapter can run a transform;
``adapter.transform(name, inputs, ...)`` runs it. The older spellings delegate here:
``adapter.counterfactual_inputs(inputs, remove=..., mode=...)`` (:data:`COUNTERFACTUAL_MODES`),
``adapter.decoding_counterfactual(inputs, mode)`` (:data:`DECODING_MODES`) and
``causalvl.diagnostics.reliance.replace_context(batch, mode=...)`` (:data:`CONTEXT_MODES`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError, InterventionStateError, UnsupportedModelError

Removes = Literal["vision", "language", "context"]

#: ``(remove, mode)`` of ``ModelAdapter.counterfactual_inputs`` -> transform name
COUNTERFACTUAL_MODES: Mapping[tuple[str, str], str] = {
    ("vision", "zeros"): "vision_zeros",
    ("vision", "mean"): "vision_mean",
    ("vision", "shuffle"): "vision_shuffle",
    ("vision", "noise"): "vision_noise_image",
    ("vision", "mask"): "vision_attention_mask",
    ("language", "zeros"): "language_pad",
    ("language", "mask"): "language_attention_mask",
    ("language", "shuffle"): "language_shuffle",
}
#: ``mode`` of ``GenerativeAdapter.decoding_counterfactual`` -> transform name
DECODING_MODES: Mapping[str, str] = {
    "noise": "diffusion_noise",
    "blank": "blank_image",
    "no_image": "drop_image_tokens",
    "instruction": "instruction_disturbance",
}
#: ``mode`` of ``causalvl.diagnostics.reliance.replace_context`` -> transform name
CONTEXT_MODES: Mapping[str, str] = {"swap": "context_swap", "zeros": "context_zeros"}

#: length of the DDPM-style schedule used by :func:`diffusion_noise`
NOISE_STEPS = 1000


@dataclass(frozen=True)
class InputTransform:
    """One named input transform and what it needs.

    Attributes:
        name: registry key.
        removes: the part of the inputs it replaces (``"vision"``, ``"language"``, ``"context"``).
        summary: one line for listings and error messages.
        needs_generator: it draws random numbers (pass ``generator=`` to reproduce a draw).
        uses_fitted_state: it reads the adapter's fitted vision mean.
        needs_fitted_state: it cannot run without a fitted vision mean.
        keeps_shapes: every output tensor has the shape of the input it replaces (no key is
            dropped, no sequence gets longer or shorter).
        generative: it works on generative models (``...ForConditionalGeneration``).
        discriminative: it works on classifier / contrastive models.
        needs_adapter: it reads the adapter (every transform but the context ones).
        options: keyword options it takes besides ``generator``.
    """

    name: str
    removes: Removes
    summary: str
    fn: Callable[..., dict[str, Any]]
    needs_generator: bool = False
    uses_fitted_state: bool = False
    needs_fitted_state: bool = False
    keeps_shapes: bool = True
    generative: bool = True
    discriminative: bool = True
    needs_adapter: bool = True
    options: tuple[str, ...] = ()
    requirement: Callable[[Any], str | None] | None = None

    def unsupported_reason(self, adapter: Any) -> str | None:
        """Why ``adapter`` cannot run this transform, or ``None`` when it can."""
        if adapter is None:
            return None if not self.needs_adapter else f"{self.name!r} needs an adapter"
        spec = adapter.spec
        family = spec.family or "generic"
        if self.name in spec.unsupported_transforms:
            return f"the {family} adapter does not support {self.name!r}"
        if spec.generative and not self.generative:
            return f"{self.name!r} does not work on generative models"
        if not spec.generative and not self.discriminative:
            return f"{self.name!r} works only on generative models (the {family} adapter is not)"
        if self.needs_fitted_state and not adapter.vision_mean:
            return (
                f"{self.name!r} needs a fitted vision mean; call adapter.fit_vision_mean(batches)"
            )
        return self.requirement(adapter) if self.requirement is not None else None

    def supported(self, adapter: Any) -> bool:
        """Whether ``adapter`` (bound to its model) can run this transform."""
        return self.unsupported_reason(adapter) is None

    def __call__(
        self,
        adapter: Any,
        inputs: Mapping[str, Any],
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Apply the transform: a new dict; ``inputs`` is not modified."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(
                f"transform {self.name!r} takes no option(s) {unknown}; drop them (its "
                f"options: {list(self.options) or '(none)'})."
            )
        if not isinstance(inputs, Mapping):
            raise InputError(
                f"inputs must be a mapping of input names to tensors, got "
                f"{type(inputs).__name__}; pass the model's keyword inputs as a dict, e.g. "
                "adapter.model_inputs(batch)."
            )
        return self.fn(adapter, inputs, generator, **options)


_TRANSFORMS: dict[str, InputTransform] = {}


def _register(transform: InputTransform) -> InputTransform:
    _TRANSFORMS[transform.name] = transform
    return transform


def transform_names() -> list[str]:
    """The names of every registered input transform."""
    return sorted(_TRANSFORMS)


def get_transform(name: str) -> InputTransform:
    """The transform called ``name``.

    Raises:
        ConfigError: unknown name; the message suggests the closest names.
    """
    if isinstance(name, str) and name in _TRANSFORMS:
        return _TRANSFORMS[name]
    close = difflib.get_close_matches(str(name), list(_TRANSFORMS), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"unknown input transform {name!r}.{hint} Known transforms: {', '.join(transform_names())}."
    )


def apply_transform(
    name: str,
    adapter: Any,
    inputs: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run transform ``name`` on ``inputs`` with ``adapter``; a new dict, ``inputs`` untouched."""
    return get_transform(name)(adapter, inputs, generator=generator, **options)


# -- shared helpers ------------------------------------------------------------------------------
def derangement(
    n: int, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A random permutation of ``range(n)`` with no fixed point (``n >= 2``; identity for 1)."""
    if n < 2:
        return torch.zeros(n, dtype=torch.long, device=device)
    perm = torch.randperm(n, generator=generator)
    # rotate by a random non-zero shift over a random order: perm[i] -> perm[(i+s) % n]
    shift = int(torch.randint(1, n, (1,), generator=generator))
    out = torch.empty(n, dtype=torch.long)
    out[perm] = perm.roll(-shift)
    return out.to(device)


def noise_schedule(steps: int = NOISE_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """VCD's diffusion schedule: ``(sqrt(abar_t), sqrt(1 - abar_t))`` for ``t = 0 .. steps-1``.

    ``beta_t = sigmoid(linspace(-6, 6, steps)) * (5e-3 - 1e-5) + 1e-5`` and
    ``abar_t = prod_{s <= t} (1 - beta_s)``; at ``t = 500``: ``0.8630, 0.5052``.

    Returns:
        two float32 tensors of shape ``(steps,)``.

    Example:
        >>> a, b = noise_schedule()
        >>> round(float(a[500]), 4), round(float(b[500]), 4)
        (0.863, 0.5052)
    """
    betas = torch.sigmoid(torch.linspace(-6, 6, steps)) * (5e-3 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, dim=0)
    return abar.sqrt(), (1 - abar).sqrt()


def diffusion_noise(
    pixel_values: torch.Tensor, step: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Forward-diffuse processed pixel values to step ``t``: ``sqrt(abar_t) v + sqrt(1-abar_t) eps``.

    Applied to the processor's output (normalised pixels, any shape), as VCD does, so the
    counterfactual image has the same geometry and image-token layout as the real one.

    Args:
        pixel_values: processed pixel tensor of any shape (floating).
        step: ``t`` in ``[0, 999]`` (VCD's default 500).
        generator: CPU generator for ``eps ~ N(0, 1)`` (one draw of ``pixel_values``' shape).

    Returns:
        a new tensor, same shape, dtype and device as ``pixel_values``.

    Example:
        >>> v = torch.zeros(2, 3); g = torch.Generator().manual_seed(0)
        >>> diffusion_noise(v, 999, g).shape
        torch.Size([2, 3])
    """
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < NOISE_STEPS:
        raise ConfigError(
            f"noise step = {step!r} is invalid; pass an integer in [0, {NOISE_STEPS - 1}] (VCD uses 500)."
        )
    if not pixel_values.is_floating_point():
        raise InputError(
            f"diffusion_noise needs floating pixel values, got dtype {pixel_values.dtype}."
        )
    signal, noise_w = noise_schedule()
    eps = torch.randn(pixel_values.shape, generator=generator, dtype=torch.float32)
    eps = eps.to(device=pixel_values.device)
    out = float(signal[step]) * pixel_values.float() + float(noise_w[step]) * eps
    return out.to(pixel_values.dtype)


def _present(inputs: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if isinstance(inputs.get(k), torch.Tensor)]


def _name(adapter: Any) -> str:
    return adapter.spec.family or "generic"


# -- vision ---------------------------------------------------------------------------------------
def _vision_keys(adapter: Any, inputs: Mapping[str, Any]) -> list[str]:
    spec = adapter.spec
    keys = [k for k in _present(inputs, spec.vision_keys) if k != spec.vision_mask_key]
    if not keys:
        raise InputError(
            f"no vision input among {sorted(inputs)}; the adapter's vision keys are "
            f"{list(spec.vision_keys)}."
        )
    return keys


def _keep_images_nonzero(
    adapter: Any, before: Mapping[str, Any], out: dict[str, Any]
) -> dict[str, Any]:
    """For a family that skips an all-zero image as padding (Idefics3 / SmolVLM): crops that held
    an image and are now all zero get the blank value (crops that were padding stay padding)."""
    spec = adapter.spec
    if not spec.zero_image_is_padding:
        return out
    prev, after = before.get("pixel_values"), out.get("pixel_values")
    if (
        isinstance(prev, torch.Tensor)
        and isinstance(after, torch.Tensor)
        and after.is_floating_point()
        and prev.shape == after.shape
        and prev.dim() >= 3
    ):
        flat = prev.dim() - 3  # the leading (batch, crops) dims of (..., 3, H, W)
        was_image = (prev != 0).flatten(flat).any(-1)
        now_blank = (after == 0).flatten(flat).all(-1)
        fix = was_image & now_blank
        if bool(fix.any()):
            after = after.clone()
            after[fix] = spec.blank_value
            out["pixel_values"] = after
    return out


def _null_vision(mode: str) -> Callable[..., dict[str, Any]]:
    def fn(
        adapter: Any, inputs: Mapping[str, Any], generator: torch.Generator | None
    ) -> dict[str, Any]:
        out = dict(inputs)
        keys = _vision_keys(adapter, out)
        if mode == "fitted_mean" and not adapter.vision_mean:
            raise InterventionStateError(
                f"transform 'vision_fitted_mean' needs a fitted vision mean and the "
                f"{_name(adapter)} adapter has none; call adapter.fit_vision_mean(batches) "
                "first (or use 'vision_mean', which falls back to the batch mean)."
            )
        for k in keys:
            x = out[k]
            if not x.is_floating_point():
                continue  # integer vision inputs (e.g. masks) are kept
            if mode == "zeros":
                out[k] = torch.zeros_like(x)
            elif mode in ("mean", "fitted_mean"):
                mean = adapter.vision_mean.get(k)
                if mean is None and mode == "fitted_mean":
                    raise InterventionStateError(
                        f"the fitted vision mean has no entry for input {k!r} (it holds "
                        f"{sorted(adapter.vision_mean)}); refit with adapter.fit_vision_mean."
                    )
                mean = x.mean(0, keepdim=True) if mean is None else mean.to(x.device, x.dtype)
                out[k] = mean.expand_as(x).clone()
            else:  # noise image
                noise = torch.randn(x.shape, generator=generator, device="cpu", dtype=torch.float32)
                noise = noise.to(device=x.device, dtype=x.dtype)
                out[k] = noise * x.std() + x.mean()
        return _keep_images_nonzero(adapter, inputs, out)

    return fn


def _shuffle_grid_images(
    adapter: Any, inputs: dict[str, Any], generator: torch.Generator | None
) -> dict[str, Any]:
    # pixel_values holds the patches of every image one after another, not one row per
    # example: shuffle whole images (image_grid_thw rows), and only between images of the
    # same grid, which have the same number of image tokens in input_ids
    family = _name(adapter)
    pixels, grid = inputs.get("pixel_values"), inputs.get("image_grid_thw")
    ids = inputs.get("input_ids")
    if not isinstance(pixels, torch.Tensor) or not isinstance(grid, torch.Tensor):
        raise InputError(
            f"the {family} 'shuffle' counterfactual needs pixel_values and image_grid_thw; "
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
        per_row = adapter.image_token_mask(ids).any(1)
        if int(per_row.sum()) != len(sizes) or len(sizes) != ids.shape[0]:
            raise InputError(
                f"the {family} 'shuffle' counterfactual swaps images between examples and "
                f"needs exactly one image per example; got {len(sizes)} images for "
                f"{ids.shape[0]} examples. Use mode 'zeros', 'mean' or 'noise'."
            )
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(grid.tolist()):
        groups.setdefault(tuple(int(v) for v in row), []).append(i)
    lonely = [g for g, members in groups.items() if len(members) < 2]
    if len(sizes) >= 2 and lonely:
        raise InputError(
            f"the {family} 'shuffle' counterfactual swaps images only between examples of "
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


def _vision_shuffle(
    adapter: Any, inputs: Mapping[str, Any], generator: torch.Generator | None
) -> dict[str, Any]:
    out = dict(inputs)
    keys = _vision_keys(adapter, out)
    if adapter.spec.image_layout == "grid_patches":
        out = _shuffle_grid_images(adapter, out, generator)
    else:
        perm = derangement(adapter.batch_size(out), generator, device=out[keys[0]].device)
        for k in _present(out, adapter.spec.vision_keys):
            out[k] = out[k][perm]
    return _keep_images_nonzero(adapter, inputs, out)


def mask_vision(adapter: Any, inputs: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Zero the adapter's vision mask (and the floating vision inputs) in ``inputs`` (edited in
    place: pass a copy). A family whose spec sets ``mask_keeps_one_patch`` keeps one blank patch
    valid."""
    spec = adapter.spec
    if spec.vision_mask_key is None:
        raise ConfigError(
            f"the {_name(adapter)} adapter has no vision mask; use mode 'zeros', "
            "'mean', 'shuffle' or 'noise'."
        )
    ref = inputs[keys[0]]
    mask = inputs.get(spec.vision_mask_key)
    if spec.mask_keeps_one_patch:  # e.g. ViLT cannot run with no valid patch
        if not isinstance(mask, torch.Tensor):
            mask = torch.ones(ref.shape[0], *ref.shape[2:], dtype=torch.long, device=ref.device)
        cfg = getattr(adapter.model, "config", None)
        patch = int(getattr(cfg, "patch_size", 32)) if adapter.model is not None else 32
        new_mask = torch.zeros_like(mask)
        new_mask[:, :patch, :patch] = 1
        inputs[spec.vision_mask_key] = new_mask
    else:
        if not isinstance(mask, torch.Tensor):
            mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        inputs[spec.vision_mask_key] = torch.zeros_like(mask)
    for k in keys:
        if inputs[k].is_floating_point():
            inputs[k] = torch.zeros_like(inputs[k])
    return inputs


def _vision_attention_mask(
    adapter: Any, inputs: Mapping[str, Any], generator: torch.Generator | None
) -> dict[str, Any]:
    out = dict(inputs)
    keys = _vision_keys(adapter, out)
    # ``_mask_vision`` is the adapter's hook (a subclass written before the spec may override it)
    out = adapter._mask_vision(out, keys)
    return _keep_images_nonzero(adapter, inputs, out)


def _needs_vision_mask(adapter: Any) -> str | None:
    if adapter.spec.vision_mask_key is not None or getattr(adapter, "_custom_vision_mask", False):
        return None
    return f"the {_name(adapter)} adapter has no vision mask (vision_mask_key is None)"


# -- language -------------------------------------------------------------------------------------
def _language_keys(adapter: Any, inputs: Mapping[str, Any]) -> list[str]:
    keys = _present(inputs, adapter.spec.language_keys)
    if not keys:
        raise InputError(
            f"no language input among {sorted(inputs)}; the adapter's language keys are "
            f"{list(adapter.spec.language_keys)}."
        )
    return keys


def _language_shuffle(
    adapter: Any, inputs: Mapping[str, Any], generator: torch.Generator | None
) -> dict[str, Any]:
    out = dict(inputs)
    keys = _language_keys(adapter, out)
    n = int(out[keys[0]].shape[0])
    perm = derangement(n, generator, device=out[keys[0]].device)
    for k in keys:
        out[k] = out[k][perm]
    return out


def _null_language(mode: str) -> Callable[..., dict[str, Any]]:
    def fn(
        adapter: Any, inputs: Mapping[str, Any], generator: torch.Generator | None
    ) -> dict[str, Any]:
        out = dict(inputs)
        keys = _language_keys(adapter, out)
        ids_key = next((k for k in keys if k.endswith("input_ids")), None)
        if ids_key is None:  # continuous language input (e.g. a generic model's embeddings)
            for k in keys:
                if out[k].is_floating_point():
                    out[k] = torch.zeros_like(out[k])
            return out
        ids = out[ids_key]
        content = torch.ones_like(ids, dtype=torch.bool)
        for tok in adapter.special_token_ids:
            content &= ids != tok
        if mode == "pad":
            out[ids_key] = torch.where(content, torch.full_like(ids, adapter.pad_token_id), ids)
            return out
        if "attention_mask" not in adapter.spec.language_keys:
            raise ConfigError(
                f"the {_name(adapter)} adapter has no attention mask among its "
                "language keys; use language mode 'zeros' or 'shuffle'."
            )
        am = out.get("attention_mask")
        if not isinstance(am, torch.Tensor):
            am = torch.ones_like(ids)
        out["attention_mask"] = torch.where(content, torch.zeros_like(am), am)
        return out

    return fn


def _needs_attention_mask(adapter: Any) -> str | None:
    if "attention_mask" in adapter.spec.language_keys:
        return None
    return f"the {_name(adapter)} adapter has no attention mask among its language keys"


# -- generative (contrastive decoding) ------------------------------------------------------------
def _decoding_copy(inputs: Mapping[str, Any]) -> dict[str, Any]:
    ids = inputs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise InputError(
            "contrastive decoding needs input_ids of shape (batch, length) with the image "
            f"tokens expanded; got {type(ids).__name__}."
        )
    # every tensor is a fresh tensor (no storage shared with ``inputs``)
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def _pixel_edit(mode: str) -> Callable[..., dict[str, Any]]:
    legacy = "noise" if mode == "diffusion" else "blank"

    def fn(
        adapter: Any,
        inputs: Mapping[str, Any],
        generator: torch.Generator | None,
        noise_step: int = 500,
    ) -> dict[str, Any]:
        out = _decoding_copy(inputs)
        pixel_keys = adapter.spec.pixel_keys
        present = [k for k in pixel_keys if isinstance(out.get(k), torch.Tensor)]
        floating = [k for k in present if out[k].is_floating_point()]
        if not floating:
            raise InputError(
                f"mode {legacy!r} distorts the pixel inputs, but none of {list(pixel_keys)} "
                f"is among the inputs {sorted(inputs)}."
            )
        for k in floating:
            if mode == "blank":
                out[k] = torch.full_like(out[k], adapter.spec.blank_value)
            else:
                out[k] = diffusion_noise(out[k], noise_step, generator)
        return out

    return fn


def _drop_image_tokens(
    adapter: Any, inputs: Mapping[str, Any], generator: torch.Generator | None
) -> dict[str, Any]:
    out = _decoding_copy(inputs)
    spec = adapter.spec
    if not spec.allows_no_image:
        raise UnsupportedModelError(
            f"the {spec.family} model cannot run without an image (its forward needs "
            "pixel_values for every prompt); use counterfactual='blank' or 'noise' instead."
        )
    ids = out["input_ids"]
    keep = ~adapter.image_block_mask(ids)
    if "attention_mask" in out and isinstance(out["attention_mask"], torch.Tensor):
        keep_valid = keep & out["attention_mask"].bool()
    else:
        keep_valid = keep
    counts = keep_valid.sum(1)
    new_len = int(counts.max())
    rows = ids.shape[0]
    token_keys = [
        "input_ids",
        *[k for k in spec.per_token_keys if isinstance(out.get(k), torch.Tensor)],
    ]
    new: dict[str, torch.Tensor] = {}
    for k in token_keys:
        src = out[k]
        pad_value = adapter.pad_token_id if k == "input_ids" else 0
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
    for k in spec.pixel_keys:
        out.pop(k, None)
    return out


def _instruction_disturbance(
    adapter: Any,
    inputs: Mapping[str, Any],
    generator: torch.Generator | None,
    disturbance_ids: Sequence[int] | torch.Tensor | None = None,
) -> dict[str, Any]:
    out = _decoding_copy(inputs)
    if disturbance_ids is None or len(disturbance_ids) == 0:
        raise ConfigError(
            "the 'instruction' counterfactual needs the disturbance token ids: set "
            "CounterfactualDecodingConfig(disturbance_ids=[...]) or pass tokenizer=... to "
            "generate so the disturbance text can be encoded."
        )
    ids = out["input_ids"]
    prefix = torch.as_tensor(list(disturbance_ids), dtype=ids.dtype).to(ids.device)
    pos = adapter.text_insert_position(ids)
    n = prefix.numel()
    rows, length = ids.shape
    token_keys = [
        "input_ids",
        *[k for k in adapter.spec.per_token_keys if isinstance(out.get(k), torch.Tensor)],
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


def _needs_image_without_pixels(adapter: Any) -> str | None:
    if adapter.spec.allows_no_image:
        return None
    return f"the {_name(adapter)} model cannot run without an image"


# -- context (region_pixels) ----------------------------------------------------------------------
def locate_region(
    composite: torch.Tensor,
    patch: torch.Tensor,
    *,
    atol: float = 1e-5,
    exclude: tuple[int, int] | None = None,
) -> tuple[int, int] | None:
    """Top-left ``(y, x)`` where ``patch`` ``(C, h, w)`` sits in ``composite`` ``(C, H, W)``.

    Returns the first exact match (up to ``atol``) in row-major order other than ``exclude``
    (used to skip the target's position when target and context look alike), or ``None``.
    """
    c, h, w = patch.shape
    if (
        composite.dim() != 3
        or composite.shape[0] != c
        or h > composite.shape[1]
        or w > composite.shape[2]
    ):
        return None
    windows = composite.unfold(1, h, 1).unfold(2, w, 1)  # (C, H-h+1, W-w+1, h, w)
    diff = (windows - patch[:, None, None]).abs().amax(dim=(0, 3, 4))
    for y, x in (diff <= atol).nonzero().tolist():
        if (y, x) != exclude:
            return int(y), int(x)
    return None


def context_boxes(batch: Mapping[str, Any]) -> torch.Tensor:
    """Where each example's context region sits in ``pixel_values``: ``(B, 4)`` long
    ``(y0, x0, y1, x1)`` (row/column slices).

    Uses the batch key ``boxes`` ``(B, 2, 4)`` in ``(x0, y0, x1, y1)`` pixel coordinates when
    present (region 1 is the context, as in :class:`~causalvl.datasets.context_shift.ContextShift`);
    otherwise finds ``region_pixels[:, 1]`` in the composite by exact match.

    Raises:
        InputError: when the batch has no region data or a context region cannot be found.
    """
    regions = batch.get("region_pixels")
    if not isinstance(regions, torch.Tensor) or regions.dim() != 5 or regions.shape[1] < 2:
        raise InputError(
            "context reliance needs 'region_pixels' of shape (B, 2, C, h, w) (region 0 target, "
            f"1 context); got {None if regions is None else tuple(regions.shape)}."
        )
    boxes = batch.get("boxes")
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 3 or boxes.shape[1] < 2 or boxes.shape[2] != 4:
            raise InputError(
                f"'boxes' must be (B, 2, 4) (x0, y0, x1, y1) per region, got {tuple(boxes.shape)}."
            )
        x0, y0, x1, y1 = boxes[:, 1].round().long().cpu().unbind(-1)
        return torch.stack([y0, x0, y1, x1], dim=1)
    composite = batch.get("pixel_values")
    if not isinstance(composite, torch.Tensor) or composite.dim() != 4:
        raise InputError("context reliance needs the composite image 'pixel_values' (B, C, H, W).")
    h, w = regions.shape[-2:]
    out = []
    for i in range(regions.shape[0]):
        image = composite[i].detach().cpu().float()
        target = locate_region(image, regions[i, 0].detach().cpu().float())
        loc = locate_region(image, regions[i, 1].detach().cpu().float(), exclude=target)
        if loc is None:
            raise InputError(
                f"example {i}: the context region region_pixels[{i}, 1] does not appear in "
                "pixel_values; add a 'boxes' key (B, 2, 4) with (x0, y0, x1, y1) per region "
                "so the context can be replaced."
            )
        out.append((loc[0], loc[1], loc[0] + h, loc[1] + w))
    return torch.tensor(out, dtype=torch.long)


def _replace_context(mode: str) -> Callable[..., dict[str, Any]]:
    def fn(
        adapter: Any, batch: Mapping[str, Any], generator: torch.Generator | None
    ) -> dict[str, Any]:
        boxes = context_boxes(batch)  # also checks region_pixels
        regions = batch["region_pixels"]
        b = regions.shape[0]
        if mode == "swap":
            perm = derangement(b, generator).to(regions.device)
            new_ctx = regions[perm, 1]
        else:
            new_ctx = torch.zeros_like(regions[:, 1])
        out = dict(batch)
        regions = regions.clone()
        regions[:, 1] = new_ctx
        out["region_pixels"] = regions
        composite = batch.get("pixel_values")
        if isinstance(composite, torch.Tensor) and composite.dim() == 4:
            composite = composite.clone()
            for i in range(b):
                y0, x0, y1, x1 = (int(v) for v in boxes[i])
                patch = new_ctx[i]
                if patch.shape[-2:] != (y1 - y0, x1 - x0):
                    patch = F.interpolate(
                        patch[None].float(),
                        size=(y1 - y0, x1 - x0),
                        mode="bilinear",
                        align_corners=False,
                    )[0].to(composite.dtype)
                composite[i, :, y0:y1, x0:x1] = patch
            out["pixel_values"] = composite
        return out

    return fn


# -- the registry ---------------------------------------------------------------------------------
_register(
    InputTransform(
        "vision_zeros", "vision", "floating vision inputs become zeros", _null_vision("zeros")
    )
)
_register(
    InputTransform(
        "vision_mean",
        "vision",
        "the fitted vision mean, else the batch mean",
        _null_vision("mean"),
        uses_fitted_state=True,
    )
)
_register(
    InputTransform(
        "vision_fitted_mean",
        "vision",
        "the fitted vision mean (adapter.fit_vision_mean)",
        _null_vision("fitted_mean"),
        uses_fitted_state=True,
        needs_fitted_state=True,
    )
)
_register(
    InputTransform(
        "vision_noise_image",
        "vision",
        "a Gaussian noise image with the batch's mean and std",
        _null_vision("noise"),
        needs_generator=True,
    )
)
_register(
    InputTransform(
        "vision_shuffle",
        "vision",
        "another example's image (a derangement of the batch)",
        _vision_shuffle,
        needs_generator=True,
    )
)
_register(
    InputTransform(
        "vision_attention_mask",
        "vision",
        "the model's vision mask zeroed (the image attention-masked out)",
        _vision_attention_mask,
        requirement=_needs_vision_mask,
    )
)
_register(
    InputTransform(
        "language_pad",
        "language",
        "content tokens become the pad token (special tokens kept)",
        _null_language("pad"),
    )
)
_register(
    InputTransform(
        "language_attention_mask",
        "language",
        "content tokens masked out of attention",
        _null_language("mask"),
        requirement=_needs_attention_mask,
    )
)
_register(
    InputTransform(
        "language_shuffle",
        "language",
        "another example's text (a derangement of the batch)",
        _language_shuffle,
        needs_generator=True,
    )
)
_register(
    InputTransform(
        "diffusion_noise",
        "vision",
        "VCD forward diffusion of the processed pixels at step noise_step",
        _pixel_edit("diffusion"),
        needs_generator=True,
        discriminative=False,
        options=("noise_step",),
    )
)
_register(
    InputTransform(
        "blank_image",
        "vision",
        "the pixels filled with the family's blank value",
        _pixel_edit("blank"),
        discriminative=False,
    )
)
_register(
    InputTransform(
        "drop_image_tokens",
        "vision",
        "image tokens, their markers and the pixel inputs dropped",
        _drop_image_tokens,
        keeps_shapes=False,
        discriminative=False,
        requirement=_needs_image_without_pixels,
    )
)
_register(
    InputTransform(
        "instruction_disturbance",
        "language",
        "a disturbance prefix (ICD) inserted after the image block",
        _instruction_disturbance,
        keeps_shapes=False,
        discriminative=False,
        options=("disturbance_ids",),
    )
)
for _mode, _name_ in CONTEXT_MODES.items():
    _register(
        InputTransform(
            _name_,
            "context",
            "another example's context region"
            if _mode == "swap"
            else "the context region becomes zeros",
            _replace_context(_mode),
            needs_generator=_mode == "swap",
            needs_adapter=False,
        )
    )
del _mode, _name_

__all__ = [
    "CONTEXT_MODES",
    "COUNTERFACTUAL_MODES",
    "DECODING_MODES",
    "NOISE_STEPS",
    "InputTransform",
    "apply_transform",
    "context_boxes",
    "derangement",
    "diffusion_noise",
    "get_transform",
    "locate_region",
    "mask_vision",
    "noise_schedule",
    "transform_names",
]
