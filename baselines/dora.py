"""DoRA (Liu et al., ICML 2024): weight-decomposed low-rank adaptation.

What the paper does: split each weight into a magnitude vector m and a direction V/||V||, learn m and a
LoRA update of the direction; at the start the model is the pre-trained one.

What we do: ``peft`` LoRA with ``use_dora=True``, otherwise as :mod:`baselines.lora` (same targets, rank
and alpha; class embeddings train). The magnitude vectors are part of the trained adapter.
"""

from __future__ import annotations

from baselines.lora import Lora
from kind_bench.methods import Target


class Dora(Lora):
    """LoRA with DoRA's magnitude/direction decomposition."""

    name = "dora"
    description = "DoRA: magnitude + low-rank direction adapters (peft), + label parameters"
    paper = "Liu et al., ICML 2024 (arXiv 2402.09353)"

    def peft_config(self, target: Target):
        config = super().peft_config(target)
        config.use_dora = True
        return config
