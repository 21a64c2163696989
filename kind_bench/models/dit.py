"""DiT factory on top of diffusers' ``DiTTransformer2DModel``.

Size presets live in ``benchmarks/model/*.yaml`` (``dit_tiny`` for CPU, and the DiT paper's S/2, B/2,
L/2 widths and depths). Two things diffusers does not do for a from-scratch model, done here:

* the DiT paper's initialisation (Xavier linears, zero-initialised adaLN modulation and output layer,
  N(0, 0.02) label and timestep embeddings), since diffusers' defaults are meant for loading weights;
* classifier-free-guidance label dropout is taken out of the per-block label embedders (diffusers would
  drop labels independently in every block) and done once per sample by the training loop, so that
  every block and the KIND class gate see the same, possibly null, label.
"""

from __future__ import annotations

import torch
from torch import nn

from kind_bench.config import ModelConfig


def build_dit(
    model: ModelConfig, num_classes: int, in_channels: int, sample_size: int, depth: int | None = None
) -> nn.Module:
    """A freshly initialised class-conditional DiT for ``num_classes`` classes (plus a null label)."""
    from diffusers import DiTTransformer2DModel

    if model.hidden_size % model.num_heads:
        raise ValueError(f"model.hidden_size={model.hidden_size} is not divisible by num_heads={model.num_heads}")
    dit = DiTTransformer2DModel(
        num_attention_heads=model.num_heads,
        attention_head_dim=model.hidden_size // model.num_heads,
        in_channels=in_channels,
        num_layers=depth or model.depth,
        sample_size=sample_size,
        patch_size=model.patch_size,
        activation_fn=model.activation,
        num_embeds_ada_norm=num_classes,
    )
    for embedder in class_embedders(dit):
        embedder.dropout_prob = 0.0  # the null row stays; the training loop does the dropout
    initialize_dit_weights(dit)
    return dit


@torch.no_grad()
def initialize_dit_weights(dit: nn.Module) -> None:
    """The DiT paper's initialisation, applied to diffusers' module layout."""
    for module in dit.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    proj = dit.pos_embed.proj
    nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    nn.init.zeros_(proj.bias)
    for block in dit.transformer_blocks:
        emb = block.norm1.emb
        nn.init.normal_(emb.class_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(emb.timestep_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(emb.timestep_embedder.linear_2.weight, std=0.02)
        nn.init.zeros_(block.norm1.linear.weight)
        nn.init.zeros_(block.norm1.linear.bias)
    for layer in (dit.proj_out_1, dit.proj_out_2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def class_embedders(dit: nn.Module) -> list[nn.Module]:
    """diffusers' DiT has one label embedder per block; all of them."""
    return [block.norm1.emb.class_embedder for block in dit.transformer_blocks]


def null_label(dit: nn.Module) -> int:
    """The label index that means 'no class' (classifier-free guidance)."""
    return int(class_embedders(dit)[0].num_classes)
