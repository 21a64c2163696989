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


@pytest.mark.parametrize(("name", "fraction", "inherited"), [("heur_lg", 0.25, {3: 3}), ("auto_lg", 0.5, {0: 0, 1: 1})])
def test_block_learngenes_inherit_exactly_their_blocks(vanilla, name, fraction, inherited):
    model = method(name, fraction=fraction).build(vanilla, TARGET).model
    for index, block in enumerate(model.transformer_blocks):
        mine = block_state(block)
        if index in inherited:
            theirs = block_state(vanilla.transformer_blocks[inherited[index]])
            assert all(torch.equal(mine[key], theirs[key]) for key in mine)
        else:
            assert not any(torch.equal(mine[key], block_state(vanilla.transformer_blocks[index])[key])
                           for key in mine if mine[key].abs().sum() > 0)
    small = Target(num_classes=3, depth=2, model=MODEL, in_channels=1, sample_size=8)
    child = method(name, fraction=0.25).build(vanilla, small).model
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
                torch.testing.assert_close(module.weight, pair.a["weight"] + c * pair.b["weight"])
                torch.testing.assert_close(module.bias, pair.a["bias"] + c * pair.b["bias"])


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


def test_fine_trains_sigma_alone_first_then_every_parameter_within_one_budget():
    from kind_bench.config import DiffusionConfig, TrainConfig
    from kind_bench.diffusion import DiffusionObjective
    from kind_bench.methods import training_phases
    from kind_bench.train import train

    torch.manual_seed(0)
    ancestry = randomised(method_class("fine").ancestry(NoOptions()).build(TARGET))
    m = method("fine", sigma_fraction=0.5)
    model = m.build(ancestry, TARGET).model
    phases = training_phases(m, model, final_layer=True)
    assert [p.until for p in phases] == [0.5, 1.0]
    first = {id(p) for p in phases[0].params}
    assert {id(model.fine_bases["q"].U), id(model.fine_bases["q"].V)}.isdisjoint(first)
    assert len(phases[1].params) == len(list(model.parameters()))
    q = model.transformer_blocks[0].attn1.to_q
    basis, sigma = model.fine_bases["q"].U.detach().clone(), q.sigma.detach().clone()
    seen = []
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-2, snapshots=[0.5, 1.0])
    train(model, phases, images, labels, cfg, DiffusionObjective(DiffusionConfig(), 3), seed=0,
          on_snapshot=lambda step, mod: seen.append((mod.fine_bases["q"].U.detach().clone(),
                                                     mod.transformer_blocks[0].attn1.to_q.sigma.detach().clone())))
    assert torch.equal(seen[0][0], basis) and not torch.equal(seen[0][1], sigma)  # Sigma phase: U frozen
    assert not torch.equal(seen[1][0], basis)  # then everything trains


def test_the_final_layer_option_is_one_rule_for_every_parameter_efficient_method(vanilla):
    from kind_bench.methods import training_phases
    from kind_bench.models import final_layer_parameters

    for name in ("lora", "svdiff", "difffit", "head_only", "kind"):
        m = method(name)
        ancestry = vanilla if name != "kind" else randomised(m.ancestry(m.ancestry.Options(n_tailors=4,
                                                                                          tailors_per_class=2)).build(TARGET))
        model = m.build(copy.deepcopy(ancestry), TARGET).model
        head = {id(p) for p in final_layer_parameters(model)}
        on = {id(p) for p in training_phases(m, model, final_layer=True)[-1].params}
        off = {id(p) for p in training_phases(m, model, final_layer=False)[-1].params}
        assert head <= on and head.isdisjoint(off), name
    full = method("full_finetune")
    model = full.build(copy.deepcopy(vanilla), TARGET).model
    assert len(training_phases(full, model, final_layer=False)[-1].params) == len(list(model.parameters()))


def test_head_only_trains_class_embeddings_and_the_final_layer_and_starts_as_the_ancestry(vanilla):
    from kind_bench.methods import training_phases

    m = method("head_only")
    torch.manual_seed(7)
    model = m.build(vanilla, TARGET).model
    names = {n for n, p in model.named_parameters()
             if id(p) in {id(q) for q in training_phases(m, model, final_layer=True)[-1].params}}
    assert names == {n for n, _ in model.named_parameters() if "class_embedder" in n or n.startswith("proj_out")}
    with torch.no_grad():
        torch.testing.assert_close(model(**batch()).sample, reference(vanilla, 7)(**batch()).sample)


def test_a_parameter_listed_twice_trains_and_counts_once(vanilla):
    from kind_bench.config import DiffusionConfig, TrainConfig
    from kind_bench.diffusion import DiffusionObjective
    from kind_bench.methods import Phase
    from kind_bench.train import train

    model = copy.deepcopy(vanilla)
    table = class_embedders(model)[0].embedding_table.weight
    result = train(model, [Phase(1.0, [table, table])], torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)),
                   TrainConfig(steps=1, batch_size=4), DiffusionObjective(DiffusionConfig(), 3), seed=0)
    assert result.trainable_params == table.numel()


def test_a_peft_tuner_with_shared_state_works_through_the_peft_base_class(vanilla):
    from peft import VeraConfig

    from kind_bench.peft_method import PeftMethod, target_modules

    class Vera(PeftMethod):
        name = "vera"
        description = "test"

        def peft_config(self, target):
            return VeraConfig(r=4, target_modules=target_modules(["q", "v"], target))

    m = Vera(NoOptions())
    torch.manual_seed(7)
    model = m.build(vanilla, TARGET).model
    names = trainable_names(m, model)
    assert names and all("vera_lambda" in n or "class_embedder" in n for n in names)
    with torch.no_grad():  # VeRA's lambda_b starts at 0: the model starts as the ancestry
        torch.testing.assert_close(model(**batch()).sample, reference(vanilla, 7)(**batch()).sample)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_runs_its_steps_in_the_configured_precision(vanilla, precision):
    from kind_bench.config import DiffusionConfig, TrainConfig
    from kind_bench.diffusion import DiffusionObjective
    from kind_bench.methods import Phase
    from kind_bench.train import train

    model = copy.deepcopy(vanilla)
    table = class_embedders(model)[0].embedding_table.weight
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))
    train(model, [Phase(1.0, [table])], torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)),
          TrainConfig(steps=2, batch_size=4, precision=precision), DiffusionObjective(DiffusionConfig(), 3), seed=0)
    steps = seen[:2]  # the two training steps (a FLOP count after training runs outside autocast)
    assert steps == [precision == "bf16"] * 2
