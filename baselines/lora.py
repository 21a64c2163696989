"""LoRA (Hu et al., ICLR 2022) through the ``peft`` library.

What the paper does: freeze the pre-trained weights and learn a low-rank update W + (alpha/r) B A on
chosen projections, with B = 0 at the start, so the adapted model starts as the pre-trained one.

What we do: start from the vanilla ancestry (every weight copied except the per-block class-embedding
tables, which are fresh for the target classes), inject ``peft`` LoRA adapters into the projections
KIND decomposes (``method.targets``: q, k, v, out, fc1, fc2 of every block) with rank ``method.rank``
and ``method.alpha``, and train the adapters and the class embeddings. Deviations: the class embeddings
train (the target classes are new, so a frozen table would be meaningless); the default rank (8) is
chosen so that LoRA's trainable count is close to KIND's default, not tuned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from kind_bench.errors import choices_error
from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import LINEAR_ROLES, class_embedders


@dataclass
class LoraOptions:
    """LoRA hyperparameters (the same for every task)."""

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "k", "v", "out", "fc1", "fc2"])


class Lora(Method):
    """The vanilla ancestry with peft LoRA adapters; adapters and class embeddings train."""

    name = "lora"
    description = "LoRA adapters (peft) on q/k/v/out/fc1/fc2 + class embeddings train"
    paper = "Hu et al., ICLR 2022 (arXiv 2106.09685)"
    family = "peft"
    ancestry = Vanilla
    Options = LoraOptions

    def lora_config(self):  # -> peft.LoraConfig
        """The peft config; subclasses change the initialisation or the decomposition."""
        from peft import LoraConfig

        for role in self.options.targets:
            if role not in LINEAR_ROLES:
                raise choices_error("method.targets", role, tuple(LINEAR_ROLES))
        return LoraConfig(r=self.options.rank, lora_alpha=self.options.alpha, lora_dropout=self.options.dropout,
                          target_modules=[LINEAR_ROLES[role] for role in self.options.targets])

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        from peft import inject_adapter_in_model

        model, transferred = dense_descendant(ancestry, target)
        return Descendant(inject_adapter_in_model(self.lora_config(), model), transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        adapters = [p for name, p in model.named_parameters() if "lora_" in name]
        return adapters + [emb.embedding_table.weight for emb in class_embedders(model)]
