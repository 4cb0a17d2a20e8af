"""Embeddings from the towers of an image-text model (CLIP, SigLIP, ALIGN: any model with
`get_image_features` / `get_text_features`) or from a plain vision encoder (ViT, DINOv2,
ResNet...), so that `embed-image` reads any of them and `embed` reads a CLIP directory's text
tower: texts and images then land in one space."""

from typing import Any

import torch
import torch.nn.functional as F


def projected(output: Any) -> torch.Tensor:
    """What `get_image_features` / `get_text_features` return: a tensor (transformers 4) or
    an output whose `pooler_output` is the projection (transformers 5)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output  # type: ignore[no-any-return]


def has_text_tower(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "get_text_features", None))


def image_vectors(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(B, D) L2-normalised, in float32: the image tower's projection for an image-text model;
    for a vision encoder its pooled output (its pooler, a ResNet's (B, C, 1, 1) flattened), or
    the mean of its last hidden states where it has no pooler."""
    if callable(getattr(model, "get_image_features", None)):
        vectors = projected(model.get_image_features(pixel_values=pixels))  # type: ignore[operator]
    else:
        out = model(pixel_values=pixels)
        pooled = getattr(out, "image_embeds", None)
        if pooled is None:
            pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden.mean(dim=1) if hidden.dim() == 3 else hidden.mean(dim=(2, 3))
        vectors = pooled.flatten(1)
    return F.normalize(vectors.float(), p=2, dim=-1)


def text_vectors(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, D) L2-normalised text-tower projections, in float32."""
    out = model.get_text_features(input_ids=ids, attention_mask=mask)  # type: ignore[operator]
    return F.normalize(projected(out).float(), p=2, dim=-1)
