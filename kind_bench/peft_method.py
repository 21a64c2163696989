"""Methods that adapt the vanilla ancestry with a ``peft`` tuner: LoRA, PiSSA, DoRA here, VeRA and the
rest of peft from a plugin. A subclass only says which peft config it wants.

The tuner is applied with ``peft.get_peft_model``, the general entry point (``inject_adapter_in_model``
refuses tuners with shared state, such as VeRA). What trains is exactly the tuner's adapter parameters
(each tuner layer names them in ``adapter_layer_names``, e.g. LoRA's A, B and DoRA's magnitudes, VeRA's
scaling vectors), plus the fresh label-specific parameters (the DiT's class embeddings, the ViT's head)
and, by the suite's option, the final layer. Plugins default to the generation track; a subclass may
declare ``tracks`` as this base class does.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from kind_bench.inherit import dense_descendant
from kind_bench.methods import Descendant, Method, Target, Vanilla
from kind_bench.models import ARCHS, check_roles, label_parameters, role_paths


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every adapter parameter of every peft tuner layer in ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            for name in module.adapter_layer_names:
                part = getattr(module, name, None)
                if isinstance(part, nn.Module):
                    found += list(part.parameters())
    return found


class PeftMethod(Method):
    """Base of the peft family: the vanilla ancestry with fresh class embeddings, wrapped by a peft tuner."""

    ancestry: ClassVar = Vanilla
    family: ClassVar[str] = "peft"
    tracks: ClassVar[tuple[str, ...]] = ("generation", "classification")

    def peft_config(self, target: Target) -> Any:  # -> peft.PeftConfig
        """The tuner's config (its target modules should be among :func:`target_modules`)."""
        raise NotImplementedError

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        from peft import get_peft_model

        model, transferred = dense_descendant(ancestry, target)
        return Descendant(get_peft_model(model, self.peft_config(target)), transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return adapter_parameters(model) + label_parameters(model)


def target_modules(roles: list[str], target: Target, key: str = "method.targets") -> list[str]:
    """peft ``target_modules`` for the block projections named by ``roles`` (q, k, v, out, fc1, fc2) on the
    target's backbone (on the ViT, q, k and v are its one fused qkv projection)."""
    check_roles(roles, key)
    return [path for _, path in role_paths(ARCHS[target.model.arch], roles)]
