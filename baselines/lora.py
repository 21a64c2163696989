"""LoRA (Hu et al., ICLR 2022) through the ``peft`` library.

What the paper does: freeze the pre-trained weights and learn a low-rank update W + (alpha/r) B A on
chosen projections, with B = 0 at the start, so the adapted model starts as the pre-trained one.

What we do: start from the vanilla ancestry (every weight copied except the per-block class-embedding
tables, which are fresh for the target classes), apply ``peft`` LoRA (:class:`kind_bench.peft_method.PeftMethod`)
to the projections KIND decomposes (``method.targets``: q, k, v, out, fc1, fc2 of every block) with rank
``method.rank`` and ``method.alpha``, and train the adapters, the class embeddings and (the suite's
option for every parameter-efficient method) the final layer. Deviations: the class embeddings train
(the target classes are new, so a frozen table would be meaningless); the default rank (8) is chosen so
that LoRA's trainable count is close to KIND's default, not tuned; the learning rate is tuned on
validation data like every method's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kind_bench.methods import Target
from kind_bench.peft_method import PeftMethod, target_modules


@dataclass
class LoraOptions:
    """LoRA hyperparameters (the same for every task)."""

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "k", "v", "out", "fc1", "fc2"])

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank={self.rank} must be >= 1")
        if not (self.alpha > 0 and 0 <= self.dropout < 1):
            raise ValueError(f"alpha={self.alpha} must be > 0 and dropout={self.dropout} in [0, 1)")
        if not self.targets:
            raise ValueError("targets=[] adapts nothing: list one or more of q, k, v, out, fc1, fc2")


class Lora(PeftMethod):
    """The vanilla ancestry with peft LoRA adapters; adapters and class embeddings train."""

    name = "lora"
    description = "LoRA adapters (peft) on q/k/v/out/fc1/fc2 + label parameters train"
    paper = "Hu et al., ICLR 2022 (arXiv 2106.09685)"
    Options = LoraOptions

    def peft_config(self, target: Target):  # -> peft.LoraConfig
        """The peft config; subclasses change the initialisation or the decomposition."""
        from peft import LoraConfig

        return LoraConfig(r=self.options.rank, lora_alpha=self.options.alpha, lora_dropout=self.options.dropout,
                          target_modules=target_modules(self.options.targets, target))
