"""Embeddings from the towers of an image-text model (CLIP, SigLIP, ALIGN: any model with
`get_image_features` / `get_text_features`) or from a plain vision encoder (ViT, DINOv2,
ResNet...), so that `embed-image` reads any of them and `embed` reads a CLIP directory's text
tower: texts and images then land in one space."""

from typing import Any

import torch
import torch.nn.functional as F

from schemas.errors import ModelError


def projected(output: Any) -> torch.Tensor:
    """What `get_image_features` / `get_text_features` return: a tensor (transformers 4) or
    an output whose `pooler_output` is the projection (transformers 5)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output  # type: ignore[no-any-return]


def has_text_tower(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "get_text_features", None))


def untrained_pooler(missing_keys: list[str]) -> bool:
    """Whether loading left the pooler's weights out (a ViT classifier's checkpoint read as a
    ViTModel: its pooler would be random at every load). Any other missing weight means the
    directory is not the model it claims to be: refused."""
    rest = [k for k in missing_keys if "pooler" not in k]
    if rest:
        raise ModelError(
            f"the model directory lacks weights for {rest[:5]} ({len(rest)} in all): they "
            "would be random; give a complete image encoder (or a CLIP directory)"
        )
    return bool(missing_keys)


def image_vectors(
    model: torch.nn.Module, pixels: torch.Tensor, use_pooler: bool = True
) -> torch.Tensor:
    """(B, D) L2-normalised, in float32: the image tower's projection for an image-text model;
    for a vision encoder its pooled output (its pooler; a ResNet's (B, C, 1, 1) flattened),
    or where it has no trained pooler its first token (a ViT's CLS) or its features' mean."""
    if callable(getattr(model, "get_image_features", None)):
        vectors = projected(model.get_image_features(pixel_values=pixels))  # type: ignore[operator]
    else:
        out = model(pixel_values=pixels)
        pooled = getattr(out, "image_embeds", None)
        if pooled is None and use_pooler:
            pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden[:, 0] if hidden.dim() == 3 else hidden.mean(dim=(2, 3))
        vectors = pooled.flatten(1)
    return F.normalize(vectors.float(), p=2, dim=-1)


def text_vectors(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, D) L2-normalised text-tower projections, in float32."""
    out = model.get_text_features(input_ids=ids, attention_mask=mask)  # type: ignore[operator]
    return F.normalize(projected(out).float(), p=2, dim=-1)
