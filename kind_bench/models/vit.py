"""ViT factory for the classification track: timm's ``VisionTransformer``, built through ``timm.create_model``.

The size comes from the model config (``model.timm_name`` names the timm architecture whose defaults the
config's width, depth, heads and patch size override): the embedded default is an 8x8, 1-channel ViT
(patch 2, a class token, width 32, depth 6) and ``model=deit_tiny|deit_small|deit_base`` are DeiT-Ti/S/B
at 224x224 (``deit_*_patch16_224``) for ImageFolder data on a GPU. Nothing is downloaded:
``pretrained=False`` always; a method's ancestry is what this suite pre-trains.
"""

from __future__ import annotations

from torch import nn

from kind_bench.config import ModelConfig


def build_vit(model: ModelConfig, num_classes: int, in_channels: int, image_size: int, depth: int | None = None
              ) -> nn.Module:
    """A freshly initialised timm VisionTransformer classifying ``num_classes`` classes."""
    import timm

    return timm.create_model(
        model.timm_name or "vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=image_size,
        in_chans=in_channels, patch_size=model.patch_size, embed_dim=model.hidden_size, depth=depth or model.depth,
        num_heads=model.num_heads, mlp_ratio=model.mlp_ratio, class_token=True, global_pool="token",
    )
