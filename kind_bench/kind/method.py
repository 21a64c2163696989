"""KIND (Xie et al., arXiv 2408.07337, ICML 2025): learngenes and tailors in a decomposed DiT.

From the paper:
  * every decomposed weight is W = U diag(sigma) V^T, a sum of rank-1 "basic components", and the
    components (not the dense matrices) are what trains during pre-training;
  * components are split by index: learngenes [0, N_G) are class-agnostic and updated by every class,
    tailors [N_G, N_G + N_T) are class-specific;
  * the class gate is binary, fixed by the class label and not learned;
  * at transfer the learngenes are inherited and the tailors are fresh (under large domain shift,
    "transfer only the learngenes, with randomly initialised tailors").

Our assumptions (the paper does not pin these down; each is a config value):
  * rank r = min(in, out); N_T = ``ancestry.n_tailors`` (default 8 of r = 32 on ``dit_tiny``, 25%), with
    ``ancestry.tailors_per_class`` (default 4, half of them) open per class, in evenly spaced blocks
    (``ancestry.assignment=block``) or a seeded random subset (``random``);
  * decomposed layers: attention q/k/v/out and MLP fc1/fc2 of every block (``ancestry.layers``);
  * initialisation: the SVD of the DiT paper's dense initialisation, so that with every component open
    the layer is the dense layer; the null (guidance) label opens no tailor;
  * transfer: learngenes, and everything that is neither a tailor nor a class embedding, are copied
    (a shallower descendant, task ``small``, takes its blocks' components from evenly spaced ancestry
    blocks: KIND's "recombination" into a smaller model);
    the tailors are re-drawn (the tail of the SVD of a fresh dense initialisation) and every block's
    class-embedding table is re-initialised; the tailors, the class embeddings and the final layer
    train; the adaLN modulation is frozen (``method.train_adaln``; the paper's 45.4M trainable
    parameters on DiT-L/2 imply it is) and the learngenes are frozen (``method.freeze_learngenes``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, field

from torch import nn

from kind_bench.errors import UserError, choices_error
from kind_bench.inherit import block_renamer, copy_parameters
from kind_bench.kind.decompose import decompose, kind_layers
from kind_bench.kind.gate import ASSIGNMENTS, GATE_MODES, NULL_TAILORS, ClassGate
from kind_bench.methods import Ancestry, Descendant, Method, Target
from kind_bench.models import arch_of, blocks, build_backbone, check_roles, is_label_parameter, label_parameters

TAILOR_PARAMS = ("U_T", "sigma_T", "V_T")
LEARNGENE_PARAMS = ("U_G", "sigma_G", "V_G")


@dataclass
class KindAncestryOptions:
    """How the KIND ancestry is decomposed and gated."""

    n_tailors: int = 8
    tailors_per_class: int = 4
    assignment: str = "block"
    null_tailors: str = "none"
    gate_seed: int = 0
    layers: list[str] = field(default_factory=lambda: ["q", "k", "v", "out", "fc1", "fc2"])


def _check(options: KindAncestryOptions, model_rank: int) -> None:
    check_roles(options.layers, "ancestry.layers")
    if options.assignment not in ASSIGNMENTS:
        raise choices_error("ancestry.assignment", options.assignment, ASSIGNMENTS)
    if options.null_tailors not in NULL_TAILORS:
        raise choices_error("ancestry.null_tailors", options.null_tailors, NULL_TAILORS)
    if not 0 <= options.n_tailors < model_rank:  # 0: a learngenes-only descendant (the ancestry needs >= 1)
        raise UserError(f"ancestry.n_tailors={options.n_tailors} must be in [1, {model_rank}): the decomposed "
                        f"layers have rank {model_rank} (model.hidden_size) and need at least one learngene")
    if options.n_tailors and not 0 < options.tailors_per_class <= options.n_tailors:
        raise UserError(f"ancestry.tailors_per_class={options.tailors_per_class} must be in "
                        f"[1, ancestry.n_tailors={options.n_tailors}]")


@functools.cache
def _warn_once(message: str) -> None:
    print(f"kind-bench: warning: {message}", file=sys.stderr)


def build_kind_model(options: KindAncestryOptions, target: Target, gate_mode: str = "label",
                     n_learngenes: int | None = None) -> nn.Module:
    """A fresh decomposed backbone with a class gate for ``target.num_classes`` classes (``n_learngenes``:
    the ancestry's N_G, for a descendant whose N_T differs from the ancestry's).

    ``gate_mode``: ``label`` (each sample opens its class's tailors: the paper's gate), ``open`` (every
    tailor open, no label needed: the classification descendant) or ``predicted`` (the class a first,
    learngenes-only pass predicts opens its tailors, in training as at test time).
    """
    _check(options, target.model.hidden_size)
    backbone = build_backbone(target)
    slots = target.num_classes + (options.null_tailors == "own")
    if options.assignment == "disjoint" and options.n_tailors < slots:
        raise UserError(f"ancestry.assignment=disjoint needs ancestry.n_tailors >= {slots} (one per class), "
                        f"not {options.n_tailors}")
    gate = ClassGate(target.num_classes, options.n_tailors, max(1, options.tailors_per_class), options.assignment,
                     options.gate_seed, options.null_tailors, mode=gate_mode)
    distinct = len({tuple(row.tolist()) for row in gate.mask[:slots]})
    if options.n_tailors and gate_mode != "open" and distinct < slots:  # said, not silent: tailors are shared
        _warn_once(f"ancestry.n_tailors={options.n_tailors} with ancestry.tailors_per_class="
                   f"{options.tailors_per_class} gives {distinct} distinct gates for {slots} classes: classes share "
                   "their tailors (raise ancestry.n_tailors to give each its own)")
    model = decompose(backbone, list(options.layers), options.n_tailors, gate, n_learngenes)
    model.kind_options = options  # how it was built, so a descendant can be built the same way
    return model


class KindAncestry(Ancestry):
    """A backbone whose block linears are learngene + tailor components, pre-trained with the class gate."""

    name = "kind"
    description = "decomposed backbone (learngenes + gated tailors) pre-trained on the ancestry classes"
    Options = KindAncestryOptions

    def build(self, target: Target) -> nn.Module:
        if self.options.n_tailors < 1:
            raise UserError(f"ancestry.n_tailors={self.options.n_tailors} must be in [1, {target.model.hidden_size})")
        return build_kind_model(self.options, target)


@dataclass
class KindOptions:
    """What the descendant inherits, how its gate opens, and what trains when KIND transfers."""

    freeze_learngenes: bool = True
    train_adaln: bool = False  # the DiT's adaLN modulation (the ViT has none)
    gate: str = "auto"  # auto (generation: label; classification: open) | label | open | predicted
    inherit_tailors: bool = False  # keep the ancestry's tailors (then they train) instead of fresh ones
    tailors: int | None = None  # the descendant's N_T (None: the ancestry's; 0: learngenes only)

    def __post_init__(self) -> None:
        if self.gate not in ("auto", *GATE_MODES):
            raise ValueError(f"gate={self.gate!r} is not one of: auto, {', '.join(GATE_MODES)}")
        if self.tailors is not None and self.tailors < 0:
            raise ValueError(f"tailors={self.tailors} must be >= 0")
        if self.inherit_tailors and self.tailors is not None:
            raise ValueError("inherit_tailors keeps the ancestry's tailors: leave tailors unset")


class Kind(Method):
    """Inherit the learngenes; fresh tailors, gate and label parameters; train a small part."""

    name = "kind"
    description = "KIND: inherit learngenes, train fresh class-gated tailors + label parameters"
    paper = "Xie et al., ICML 2025 (arXiv 2408.07337)"
    family = "kind"
    ancestry = KindAncestry
    Options = KindOptions
    tracks = ("generation", "classification")

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # a shallower descendant recombines the components of evenly spaced blocks

    def gate_mode(self, target: Target) -> str:
        """The descendant's gate: the label on the DiT (guidance needs it), ``open`` by default on the ViT."""
        mode = self.options.gate
        if target.model.arch == "dit":
            if mode not in ("auto", "label"):
                raise UserError(f"method.gate={mode}: the generation track's gate is opened by the class label")
            return "label"
        return "open" if mode == "auto" else mode

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        options, n_learngenes = ancestry.kind_options, None
        if self.options.tailors is not None:  # the ancestry's learngenes, a tailor count of our own
            options = dataclasses.replace(options, n_tailors=self.options.tailors,
                                          tailors_per_class=min(options.tailors_per_class, self.options.tailors))
            n_learngenes = kind_layers(ancestry)[0][1].n_learngenes
        model = build_kind_model(options, target, self.gate_mode(target), n_learngenes)
        fresh = () if self.options.inherit_tailors else TAILOR_PARAMS
        transferred = copy_parameters(
            ancestry, model, rename=block_renamer(len(blocks(ancestry)), target.depth),
            skip=lambda name: is_label_parameter(name) or (bool(fresh) and name.endswith(fresh)),
        )
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for _, layer in kind_layers(model):
            params += [layer.U_T, layer.sigma_T, layer.V_T]
            if not self.options.freeze_learngenes:
                params += [layer.U_G, layer.sigma_G, layer.V_G]
        params += label_parameters(model)
        if self.options.train_adaln and arch_of(model).name == "dit":
            params += [p for block in blocks(model) for p in block.norm1.linear.parameters()]
        return params
