"""PiSSA (Meng et al., NeurIPS 2024): LoRA initialised from the principal singular components.

What the paper does: A and B start as the top-r singular components of W (B A = U_r S_r V_r^T) and the
frozen base weight becomes the residual W - B A, so the model starts as the pre-trained one while the
adapter holds its principal directions.

What we do: exactly that through ``peft`` (``LoraConfig(init_lora_weights="pissa")``), otherwise as
:mod:`baselines.lora` (same targets, rank and alpha; class embeddings train). With alpha = rank the
adapter scale is 1, as PiSSA assumes.
"""

from __future__ import annotations

from baselines.lora import Lora
from kind_bench.methods import Target


class Pissa(Lora):
    """LoRA with PiSSA initialisation (residual base weight + principal adapter)."""

    name = "pissa"
    description = "PiSSA: LoRA initialised from the top singular components (peft), + label parameters"
    paper = "Meng et al., NeurIPS 2024 (arXiv 2404.02948)"

    def peft_config(self, target: Target):
        config = super().peft_config(target)
        config.init_lora_weights = "pissa"
        return config
