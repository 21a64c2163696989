"""Model presets: the DiT paper's S/2, B/2, L/2 instantiate with the paper's widths and depths."""

from __future__ import annotations

import pytest
import torch

from kind_bench.config import compose
from kind_bench.models import build_dit, null_label

#: (width, depth, heads, parameters in the DiT paper at 256x256 with a 4-channel latent)
PAPER = {"dit_s2": (384, 12, 6, 33e6), "dit_b2": (768, 12, 12, 130e6), "dit_l2": (1024, 24, 16, 458e6)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_instantiate(name):
    width, depth, heads, params = PAPER[name]
    cfg = compose([f"model={name}"])
    model = cfg.model
    assert (model.hidden_size, model.depth, model.num_heads, model.patch_size) == (width, depth, heads, 2)
    with torch.device("meta"):
        dit = build_dit(cfg.model, num_classes=1000, in_channels=4, sample_size=32)
    count = sum(p.numel() for p in dit.parameters())
    # diffusers' DiT gives every block its own timestep and label embedder; the paper shares one
    per_block = sum(p.numel() for p in dit.transformer_blocks[0].norm1.emb.parameters())
    assert abs(count - (depth - 1) * per_block - params) < 0.02 * params


def test_tiny_default_runs_forward_and_has_a_null_label():
    cfg = compose([])
    dit = build_dit(cfg.model, num_classes=5, in_channels=1, sample_size=8)
    assert null_label(dit) == 5
    out = dit(torch.randn(3, 1, 8, 8), timestep=torch.tensor([1, 500, 999]), class_labels=torch.tensor([0, 4, 5]))
    assert out.sample.shape == (3, 1, 8, 8)


def test_dit_initialisation_zeroes_the_output_and_adaln():
    dit = build_dit(compose([]).model, num_classes=5, in_channels=1, sample_size=8)
    assert dit.proj_out_2.weight.abs().sum() == 0
    assert all(b.norm1.linear.weight.abs().sum() == 0 for b in dit.transformer_blocks)
    out = dit(torch.randn(2, 1, 8, 8), timestep=torch.tensor([3, 4]), class_labels=torch.tensor([0, 1])).sample
    assert out.abs().max() == 0
