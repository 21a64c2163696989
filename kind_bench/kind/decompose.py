"""Turn a DiT into a KIND model (decompose its block linears) and back into dense per-class models."""

from __future__ import annotations

import copy

from torch import nn

from kind_bench.kind.gate import ClassGate
from kind_bench.kind.layer import GuidedPairLinear, KindLinear
from kind_bench.models import DIT, arch_of, block_linears, null_label


def decompose(model: nn.Module, roles: list[str], n_tailors: int, gate: ClassGate,
              n_learngenes: int | None = None) -> nn.Module:
    """Replace the ``roles`` linears of every block by SVD-initialised KindLinears sharing ``gate``
    (``n_learngenes``: default, every component that is not a tailor).

    The gate is registered on the model as ``kind_gate``. On the DiT a forward pre-hook feeds it the
    ``class_labels`` of every call; on the ViT (whose forward takes no label) the caller opens it with
    ``model.kind_gate.labels(y)``, unless the gate is open for every sample.
    """
    for _, _, parent, attr in block_linears(model, roles):
        setattr(parent, attr, KindLinear.from_linear(getattr(parent, attr), n_tailors, gate, n_learngenes))
    model.kind_gate = gate.to(next(model.parameters()).device)
    if arch_of(model) is DIT:
        model.register_forward_pre_hook(gate.capture, with_kwargs=True)
    return model


def kind_layers(model: nn.Module) -> list[tuple[str, KindLinear]]:
    """Every decomposed layer of a model, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, KindLinear)]


def deploy(model: nn.Module, class_id: int, guidance: bool) -> nn.Module:
    """A copy of a KIND model with dense weights for one class (and the null label, with guidance).

    Without guidance every KindLinear becomes ``merge(class_id)``; with guidance it becomes a
    :class:`GuidedPairLinear` of ``merge(class_id)`` and ``merge(null)`` for the [cond; uncond] batch.
    """
    dense = copy.deepcopy(model)
    null = null_label(dense)
    for name, layer in kind_layers(dense):
        parent_name, _, attr = name.rpartition(".")
        parent = dense.get_submodule(parent_name)
        merged = layer.merge(class_id)
        setattr(parent, attr, GuidedPairLinear(merged, layer.merge(null)) if guidance else merged)
    dense._forward_pre_hooks.clear()
    del dense.kind_gate
    return dense
