"""Backbones: diffusers' DiT (and, for latent-space data, a local diffusers VAE)."""

from kind_bench.models.dit import (
    LINEAR_ROLES,
    block_linears,
    build_dit,
    class_embedders,
    final_layer_parameters,
    initialize_dit_weights,
    null_label,
    reset_class_embeddings,
)

__all__ = [
    "LINEAR_ROLES",
    "block_linears",
    "build_dit",
    "class_embedders",
    "final_layer_parameters",
    "initialize_dit_weights",
    "null_label",
    "reset_class_embeddings",
]
