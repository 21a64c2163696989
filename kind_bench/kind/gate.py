"""The KIND class gate: a fixed binary mask over the tailors for every class.

From the paper: the gate is binary, fixed by the class label and not learned; learngenes are open for
every class. Our assumptions (the paper does not pin them down; each is an ancestry option):

* which tailors a class opens (``assignment``): ``block``, an evenly spaced contiguous window of
  ``per_class`` tailors (windows of neighbouring classes overlap when ``per_class`` exceeds the spacing;
  with more classes than tailors there are fewer distinct windows than classes, so ``block`` then falls
  back to seeded random subsets, e.g. 150 ImageNet classes);
  ``disjoint``, the tailors split into one contiguous group per class (``per_class`` is unused); or
  ``random``, a seeded random subset of ``per_class``, distinct for every class until all
  C(n_tailors, per_class) subsets are used (only then do classes share one; the build says so);
* what the null label of classifier-free guidance opens (``null_tailors``): ``none`` (the unconditional
  model is the learngenes alone), ``all`` (every tailor) or ``own`` (a window of its own, assigned as if
  it were one more class).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

ASSIGNMENTS = ("block", "disjoint", "random")
NULL_TAILORS = ("none", "all", "own")
#: how a model's gate opens: by each sample's label, every tailor always, or by the predicted class
GATE_MODES = ("label", "open", "predicted")


def gate_masks(num_classes: int, n_tailors: int, per_class: int, assignment: str, seed: int,
               null_tailors: str = "none") -> torch.Tensor:
    """Masks of shape (num_classes + 1, n_tailors); the last row is the null label's."""
    if not 0 < per_class <= n_tailors:
        raise ValueError(f"tailors_per_class={per_class} must be in [1, n_tailors={n_tailors}]")
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment={assignment!r} is not one of {ASSIGNMENTS}")
    if null_tailors not in NULL_TAILORS:
        raise ValueError(f"null_tailors={null_tailors!r} is not one of {NULL_TAILORS}")
    slots = num_classes + (null_tailors == "own")  # the null label takes a slot of its own
    if assignment == "block" and slots > n_tailors:  # only n_tailors distinct windows: classes would share gates
        assignment = "random"
    if assignment == "disjoint" and n_tailors < slots:
        raise ValueError(f"disjoint windows need n_tailors >= {slots} (one per class), not {n_tailors}")
    masks = torch.zeros(num_classes + 1, n_tailors)
    generator = torch.Generator().manual_seed(seed)
    for c in range(slots):
        if assignment == "block":
            start = round(c * n_tailors / slots)
            index = torch.arange(start, start + per_class) % n_tailors
        elif assignment == "disjoint":
            index = torch.arange(round(c * n_tailors / slots), round((c + 1) * n_tailors / slots))
        else:  # a gate no class of this round has: distinct until all C(n_tailors, per_class) are used
            first = c - c % math.comb(n_tailors, per_class)
            index = torch.randperm(n_tailors, generator=generator)[:per_class]
            while any(masks[first:c, index].sum(1) == per_class):
                index = torch.randperm(n_tailors, generator=generator)[:per_class]
        masks[c, index] = 1.0  # row num_classes is the null label's (only reached with null_tailors=own)
    if null_tailors == "all":
        masks[num_classes] = 1.0
    return masks


class ClassGate(nn.Module):
    """Holds the masks and, during a forward pass, the per-sample masks of the current batch.

    It is registered once on the DiT (``dit.kind_gate``) and installed as a forward pre-hook there, so
    labels reach every decomposed layer without touching diffusers' block signatures.
    """

    def __init__(self, num_classes: int, n_tailors: int, per_class: int, assignment: str, seed: int,
                 null_tailors: str = "none", mode: str = "label") -> None:
        super().__init__()
        if mode not in GATE_MODES:
            raise ValueError(f"mode={mode!r} is not one of {GATE_MODES}")
        if mode == "open" or not n_tailors:  # every tailor open for every class (or none to open)
            masks = torch.ones(num_classes + 1, n_tailors)
        else:
            masks = gate_masks(num_classes, n_tailors, per_class, assignment, seed, null_tailors)
        self.register_buffer("mask", masks)
        self.mode = mode
        self.active: torch.Tensor | None = None
        self._columns: tuple[torch.Tensor, int, torch.Tensor] | None = None  # (active, tokens, columns)

    @property
    def open_all(self) -> bool:
        """Every tailor is open for every sample (no label needed)."""
        return self.mode == "open"

    @property
    def num_classes(self) -> int:
        """Real classes (the null label is extra)."""
        return self.mask.shape[0] - 1

    def set_labels(self, labels: torch.Tensor) -> None:
        """Select the per-sample masks, shape (B, n_tailors), for the next forward pass."""
        self.active = self.mask[labels]

    def columns(self, tokens: int) -> torch.Tensor:
        """The active masks per token, transposed: (n_tailors, B * tokens), column ``b * tokens + t`` for
        token ``t`` of sample ``b`` (computed once per batch and token count, shared by every layer)."""
        if torch.compiler.is_compiling():  # traced into the graph: a Python-side cache would break it each batch
            return self.active.T.repeat_interleave(tokens, dim=1)
        if self._columns is None or self._columns[0] is not self.active or self._columns[1] != tokens:
            self._columns = (self.active, tokens, self.active.T.repeat_interleave(tokens, dim=1))
        return self._columns[2]

    @contextmanager
    def labels(self, labels: torch.Tensor) -> Iterator[None]:
        """Open each sample's tailors for the forward passes inside the block (a no-op for an open gate)."""
        if not self.open_all:
            self.set_labels(labels)
        try:
            yield
        finally:
            self.active = None

    def capture(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook for ``DiTTransformer2DModel.forward(hidden_states, timestep, class_labels)``."""
        labels = kwargs.get("class_labels", args[2] if len(args) > 2 else None)
        if labels is None:
            raise ValueError("a KIND model needs class_labels in every forward pass")
        self.set_labels(labels)
