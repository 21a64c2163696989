"""Each baseline's defining property, on a micro DiT whose ancestry has non-trivial weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kind_bench.config import ModelConfig
from kind_bench.inherit import dense_descendant
from kind_bench.methods import NoOptions, Target, Vanilla, method_class
from kind_bench.models import block_linears, class_embedders

MODEL = ModelConfig(hidden_size=16, num_heads=2, depth=4)
TARGET = Target(num_classes=3, depth=4, model=MODEL, in_channels=1, sample_size=8)
ROLES = ("q", "k", "v", "out", "fc1", "fc2")


def randomised(model: nn.Module, seed: int = 1) -> nn.Module:
    """Move every parameter off its (partly zero) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def vanilla() -> nn.Module:
    torch.manual_seed(0)
    return randomised(Vanilla(NoOptions()).build(TARGET))


def method(name: str, **options):
    cls = method_class(name)
    return cls(cls.Options(**options))


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(4, 1, 8, 8, generator=g), timestep=torch.tensor([5, 300, 700, 999]),
                class_labels=torch.tensor([0, 1, 2, 3]))


def weights_by_position(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{role}": getattr(parent, attr).weight for i, role, parent, attr in block_linears(model, ROLES)}


def trainable_names(m, model: nn.Module) -> set[str]:
    chosen = {id(p) for p in m.trainable_parameters(model)}
    return {name for name, p in model.named_parameters() if id(p) in chosen}


def reference(vanilla: nn.Module, seed: int) -> nn.Module:
    """The ancestry with the descendant's fresh class embeddings (same seed, same draw order)."""
    torch.manual_seed(seed)
    return dense_descendant(vanilla, TARGET)[0]


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_lora_and_dora_train_only_adapters_and_embeddings_and_start_as_the_ancestry(vanilla, name):
    m = method(name)
    torch.manual_seed(7)
    model = m.build(vanilla, TARGET).model
    names = trainable_names(m, model)
    assert names and all("lora_" in n or "class_embedder" in n for n in names)
    assert any("lora_A" in n for n in names) and any("class_embedder" in n for n in names)
    if name == "dora":
        assert any("lora_magnitude" in n for n in names)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch()).sample, reference(vanilla, 7)(**batch()).sample)


def test_pissa_residual_plus_adapter_reconstructs_the_pretrained_weight(vanilla):
    m = method("pissa")
    model = m.build(vanilla, TARGET).model
    layers = [mod for mod in model.modules() if hasattr(mod, "lora_A") and hasattr(mod, "base_layer")]
    assert len(layers) == 4 * len(ROLES)
    pretrained = weights_by_position(vanilla)
    for (i, role, parent, attr) in block_linears(model, ROLES):
        layer = getattr(parent, attr)
        scale = layer.scaling["default"]
        adapter = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * scale
        assert adapter.abs().max() > 1e-3  # the adapter holds the principal components
        torch.testing.assert_close(layer.base_layer.weight + adapter, pretrained[f"{i}.{role}"], atol=1e-5, rtol=1e-5)


def test_svdiff_with_zero_shift_is_exactly_the_pretrained_weights(vanilla):
    m = method("svdiff")
    model = m.build(vanilla, TARGET).model
    pretrained = weights_by_position(vanilla)
    for i, role, parent, attr in block_linears(model, ROLES):
        layer = getattr(parent, attr)
        assert torch.equal(layer.delta, torch.zeros_like(layer.delta))
        torch.testing.assert_close(layer.weight(), pretrained[f"{i}.{role}"], atol=1e-5, rtol=1e-5)
    names = trainable_names(m, model)
    assert all(n.endswith(".delta") or "class_embedder" in n for n in names)


def test_difffit_with_unit_gamma_equals_the_ancestry_and_trains_biases_gammas_embeddings(vanilla):
    m = method("difffit")
    torch.manual_seed(3)
    model = m.build(vanilla, TARGET).model
    gammas = [p for n, p in model.named_parameters() if n.endswith(".gamma")]
    assert len(gammas) == 2 * 4 and all(g.item() == 1.0 for g in gammas)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch()).sample, reference(vanilla, 3)(**batch()).sample)
        gammas[0].fill_(0.5)
        assert not torch.allclose(model(**batch()).sample, reference(vanilla, 3)(**batch()).sample)
    names = trainable_names(m, model)
    assert all(n.endswith((".bias", ".gamma")) or "class_embedder" in n for n in names)
    assert not any(n.endswith(".weight") and "class_embedder" not in n for n in names)


def block_state(block: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in block.state_dict().items() if "class_embedder" not in k}


@pytest.mark.parametrize(("name", "k", "inherited"), [("heur_lg", 1, {3: 3}), ("auto_lg", 2, {0: 0, 1: 1})])
def test_block_learngenes_inherit_exactly_their_blocks(vanilla, name, k, inherited):
    model = method(name, blocks=k).build(vanilla, TARGET).model
    for index, block in enumerate(model.transformer_blocks):
        mine = block_state(block)
        if index in inherited:
            theirs = block_state(vanilla.transformer_blocks[inherited[index]])
            assert all(torch.equal(mine[key], theirs[key]) for key in mine)
        else:
            assert not any(torch.equal(mine[key], block_state(vanilla.transformer_blocks[index])[key])
                           for key in mine if mine[key].abs().sum() > 0)
    small = Target(num_classes=3, depth=2, model=MODEL, in_channels=1, sample_size=8)
    child = method(name, blocks=1).build(vanilla, small).model
    expected = {"heur_lg": (1, 3), "auto_lg": (0, 0)}[name]
    mine = block_state(child.transformer_blocks[expected[0]])
    theirs = block_state(vanilla.transformer_blocks[expected[1]])
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)


@pytest.fixture(scope="module")
def tleg_ancestry() -> nn.Module:
    torch.manual_seed(0)
    return randomised(method_class("tleg").ancestry(NoOptions()).build(TARGET))


def test_tleg_ancestry_layers_lie_on_the_shared_line(tleg_ancestry):
    for index, block in enumerate(tleg_ancestry.transformer_blocks):
        layer = block.attn1.to_q
        assert layer.pair is tleg_ancestry.tleg_pairs["attn1__to_q"] and layer.c == index / 4


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_tleg_descendant_of_any_depth_takes_theta_a_plus_i_over_depth_theta_b(tleg_ancestry, depth):
    target = Target(num_classes=3, depth=depth, model=MODEL, in_channels=1, sample_size=8)
    model = method("tleg").build(tleg_ancestry, target).model
    assert len(model.transformer_blocks) == depth
    for index, block in enumerate(model.transformer_blocks):
        for path, module in block.named_modules():
            if isinstance(module, nn.Linear):
                pair = tleg_ancestry.tleg_pairs[path.replace(".", "__")]
                c = index / depth
                torch.testing.assert_close(module.weight, pair.weight_a + c * pair.weight_b)
                torch.testing.assert_close(module.bias, pair.bias_a + c * pair.bias_b)


def test_fine_shares_u_and_v_across_blocks_and_only_sigma_differs():
    torch.manual_seed(0)
    ancestry = randomised(method_class("fine").ancestry(NoOptions()).build(TARGET))
    for depth in (4, 2, 6):
        target = Target(num_classes=3, depth=depth, model=MODEL, in_channels=1, sample_size=8)
        m = method("fine")
        model = m.build(ancestry, target).model
        for role in ROLES:
            layers = [getattr(parent, attr) for _, r, parent, attr in block_linears(model, ROLES) if r == role]
            assert len(layers) == depth
            assert all(layer.basis is model.fine_bases[role] for layer in layers)
            assert torch.equal(model.fine_bases[role].U, ancestry.fine_bases[role].U)
            assert torch.equal(model.fine_bases[role].V, ancestry.fine_bases[role].V)
            assert len({tuple(layer.sigma.tolist()) for layer in layers}) == depth  # fresh, per block
        names = trainable_names(m, model)
        assert all(n.endswith(".sigma") or "class_embedder" in n for n in names)
        assert not any("fine_bases" in n for n in names)


def test_every_method_trains_its_class_embeddings_and_builds_a_working_model(vanilla):
    for name in ("lora", "pissa", "dora", "svdiff", "difffit", "heur_lg", "auto_lg", "full_finetune"):
        m = method(name)
        model = m.build(copy.deepcopy(vanilla), TARGET).model
        tables = {id(e.embedding_table.weight) for e in class_embedders(model)}
        assert tables <= {id(p) for p in m.trainable_parameters(model)}, name
        assert model(**batch()).sample.shape == (4, 1, 8, 8)
