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

from dataclasses import dataclass, field

from torch import nn

from kind_bench.errors import UserError, choices_error
from kind_bench.inherit import block_renamer, copy_parameters
from kind_bench.kind.decompose import decompose, kind_layers
from kind_bench.kind.gate import ASSIGNMENTS, NULL_TAILORS, ClassGate
from kind_bench.methods import Ancestry, Descendant, Method, Target
from kind_bench.models import LINEAR_ROLES, build_dit, class_embedders

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
    for role in options.layers:
        if role not in LINEAR_ROLES:
            raise choices_error("ancestry.layers", role, tuple(LINEAR_ROLES))
    if options.assignment not in ASSIGNMENTS:
        raise choices_error("ancestry.assignment", options.assignment, ASSIGNMENTS)
    if options.null_tailors not in NULL_TAILORS:
        raise choices_error("ancestry.null_tailors", options.null_tailors, NULL_TAILORS)
    if not 0 < options.n_tailors < model_rank:
        raise UserError(f"ancestry.n_tailors={options.n_tailors} must be in [1, {model_rank}): the decomposed "
                        f"layers have rank {model_rank} (model.hidden_size) and need at least one learngene")
    if not 0 < options.tailors_per_class <= options.n_tailors:
        raise UserError(f"ancestry.tailors_per_class={options.tailors_per_class} must be in "
                        f"[1, ancestry.n_tailors={options.n_tailors}]")


def build_kind_model(options: KindAncestryOptions, target: Target) -> nn.Module:
    """A fresh decomposed DiT with a class gate for ``target.num_classes`` classes."""
    _check(options, target.model.hidden_size)
    dit = build_dit(target.model, target.num_classes, target.in_channels, target.sample_size, target.depth)
    slots = target.num_classes + (options.null_tailors == "own")
    if options.assignment == "disjoint" and options.n_tailors < slots:
        raise UserError(f"ancestry.assignment=disjoint needs ancestry.n_tailors >= {slots} (one per class), "
                        f"not {options.n_tailors}")
    gate = ClassGate(target.num_classes, options.n_tailors, options.tailors_per_class, options.assignment,
                     options.gate_seed, options.null_tailors)
    model = decompose(dit, list(options.layers), options.n_tailors, gate)
    model.kind_options = options  # how it was built, so a descendant can be built the same way
    return model


class KindAncestry(Ancestry):
    """A DiT whose block linears are learngene + tailor components, pre-trained with the class gate."""

    name = "kind"
    description = "decomposed DiT (learngenes + gated tailors) pre-trained on the ancestry classes"
    Options = KindAncestryOptions

    def build(self, target: Target) -> nn.Module:
        return build_kind_model(self.options, target)


@dataclass
class KindOptions:
    """What trains when KIND transfers."""

    freeze_learngenes: bool = True
    train_adaln: bool = False


class Kind(Method):
    """Inherit the learngenes; fresh tailors, gate and class embeddings; train a small part."""

    name = "kind"
    description = "KIND: inherit learngenes, train fresh class-gated tailors + class embeddings"
    paper = "Xie et al., ICML 2025 (arXiv 2408.07337)"
    family = "kind"
    ancestry = KindAncestry
    Options = KindOptions

    def unsupported(self, target: Target, ancestry_depth: int) -> str | None:
        return None  # a shallower descendant recombines the components of evenly spaced blocks

    def build(self, ancestry: nn.Module | None, target: Target) -> Descendant:
        model = build_kind_model(ancestry.kind_options, target)
        transferred = copy_parameters(
            ancestry, model, rename=block_renamer(len(ancestry.transformer_blocks), target.depth),
            skip=lambda name: name.endswith(TAILOR_PARAMS) or "class_embedder" in name,
        )
        return Descendant(model, transferred)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for _, layer in kind_layers(model):
            params += [layer.U_T, layer.sigma_T, layer.V_T]
            if not self.options.freeze_learngenes:
                params += [layer.U_G, layer.sigma_G, layer.V_G]
        params += [emb.embedding_table.weight for emb in class_embedders(model)]
        if self.options.train_adaln:
            params += [p for block in model.transformer_blocks for p in block.norm1.linear.parameters()]
        return params
