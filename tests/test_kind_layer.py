"""The defining properties of the KIND decomposed layer and class gate."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from kind_bench.kind.gate import ClassGate, gate_masks
from kind_bench.kind.layer import GuidedPairLinear, KindLinear

IN, OUT, TAILORS, PER_CLASS, CLASSES = 12, 20, 6, 3, 4


def make_layer(per_class: int = PER_CLASS, seed: int = 0) -> tuple[nn.Linear, KindLinear, ClassGate]:
    torch.manual_seed(seed)
    dense = nn.Linear(IN, OUT)
    gate = ClassGate(CLASSES, TAILORS, per_class, "block", seed=0)
    return dense, KindLinear.from_linear(dense, TAILORS, gate), gate


def test_equals_dense_layer_at_initialisation_with_every_component_open():
    dense, layer, gate = make_layer(per_class=TAILORS)
    x = torch.randn(5, 7, IN)
    gate.set_labels(torch.tensor([0, 1, 2, 3, 0]))
    torch.testing.assert_close(layer(x), dense(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((layer.U * layer.sigma) @ layer.V.T, dense.weight, atol=1e-5, rtol=1e-5)


def test_learngenes_are_the_leading_components():
    _, layer, _ = make_layer()
    assert layer.n_learngenes + layer.n_tailors == min(IN, OUT)
    assert layer.sigma_G.min() >= layer.sigma_T.max()  # SVD order: learngenes hold the largest components


def test_sample_output_does_not_depend_on_other_classes_tailors():
    _, layer, gate = make_layer()
    x = torch.randn(4, 3, IN)
    labels = torch.tensor([0, 1, 2, 3])
    gate.set_labels(labels)
    before = layer(x)
    closed_for_0 = gate.mask[0] == 0
    assert closed_for_0.any()
    with torch.no_grad():
        layer.U_T[:, closed_for_0] += torch.randn_like(layer.U_T[:, closed_for_0])
        layer.sigma_T[closed_for_0] *= 5
    after = layer(x)
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1:], before[1:])


def test_mixed_batch_equals_one_sample_at_a_time():
    _, layer, gate = make_layer()
    x = torch.randn(4, 3, IN)
    labels = torch.tensor([2, 0, 3, 1])
    gate.set_labels(labels)
    mixed = layer(x)
    for i, label in enumerate(labels):
        gate.set_labels(label.view(1))
        torch.testing.assert_close(mixed[i : i + 1], layer(x[i : i + 1]))


def test_gradients_reach_only_own_tailors_and_all_learngenes():
    _, layer, gate = make_layer()
    x = torch.randn(1, 3, IN)
    gate.set_labels(torch.tensor([1]))
    layer(x).square().sum().backward()
    own = gate.mask[1].bool()
    for name in ("U_G", "sigma_G", "V_G"):
        grad = getattr(layer, name).grad
        assert grad is not None and (grad.abs().reshape(-1, grad.shape[-1]).sum(0) > 0).all(), name
    for name in ("U_T", "V_T"):
        per_component = getattr(layer, name).grad.abs().sum(0)
        assert (per_component[own] > 0).all() and (per_component[~own] == 0).all(), name
    assert (layer.sigma_T.grad[own] != 0).all() and (layer.sigma_T.grad[~own] == 0).all()


@pytest.mark.parametrize("class_id", range(CLASSES + 1))
def test_merge_equals_gated_layer(class_id):
    _, layer, gate = make_layer()
    with torch.no_grad():
        layer.sigma_T.mul_(3)  # make tailors matter
    x = torch.randn(6, 5, IN)
    gate.set_labels(torch.full((6,), class_id))
    merged = layer.merge(class_id)
    assert isinstance(merged, nn.Linear)
    assert (merged(x) - layer(x)).abs().max() < 1e-5


def test_null_label_opens_no_tailor_and_masks_are_deterministic():
    masks = gate_masks(5, 16, 8, "random", seed=3)
    assert torch.equal(masks, gate_masks(5, 16, 8, "random", seed=3))
    assert not torch.equal(masks, gate_masks(5, 16, 8, "random", seed=4))
    assert masks[-1].sum() == 0 and (masks[:-1].sum(1) == 8).all()
    block = gate_masks(5, 16, 8, "block", seed=0)
    assert len({tuple(row.tolist()) for row in block[:-1]}) == 5  # every class has its own mask


def test_guided_pair_applies_each_weight_to_its_half():
    torch.manual_seed(0)
    a, b = nn.Linear(IN, OUT), nn.Linear(IN, OUT)
    pair = GuidedPairLinear(a, b)
    x = torch.randn(6, 4, IN)
    torch.testing.assert_close(pair(x), torch.cat([a(x[:3]), b(x[3:])]))


def test_frozen_learngene_product_is_cached_and_refreshed_on_change():
    _, layer, _ = make_layer()
    layer.requires_grad_(False)
    first = layer.learngene_weight()
    assert layer.learngene_weight() is first
    for name in ("sigma_G", "U_G", "V_G"):  # an in-place change of any learngene tensor refreshes it
        before = layer.learngene_weight()
        with torch.no_grad():
            getattr(layer, name).mul_(2)
        torch.testing.assert_close(layer.learngene_weight(), 2 * before)


def test_gate_assignments_and_what_the_null_label_opens():
    from kind_bench.kind.gate import gate_masks

    block = gate_masks(5, 8, 4, "block", 0)
    assert (block[:5].sum(1) == 4).all() and (block[:5] @ block[:5].T).triu(1).sum() > 0  # neighbours overlap
    assert block[5].sum() == 0  # null opens nothing (the default)
    disjoint = gate_masks(5, 8, 4, "disjoint", 0)
    assert torch.equal(disjoint[:5].sum(0), torch.ones(8))  # every tailor belongs to exactly one class
    assert (disjoint[:5] @ disjoint[:5].T).triu(1).sum() == 0
    assert (gate_masks(5, 8, 4, "block", 0, null_tailors="all")[5] == 1).all()
    own = gate_masks(5, 8, 4, "disjoint", 0, null_tailors="own")
    assert own[5].sum() > 0 and (own[:5] * own[5]).sum() == 0  # its own tailors, shared with no class
    with pytest.raises(ValueError, match="disjoint windows need n_tailors >= 6"):
        gate_masks(5, 5, 1, "disjoint", 0, null_tailors="own")


def test_more_classes_than_windows_get_distinct_random_gates():
    from kind_bench.kind.gate import gate_masks

    masks = gate_masks(150, 32, 16, "block", 0)[:150]
    assert len({tuple(row.tolist()) for row in masks}) == 150  # block windows would give only 32
    assert (masks.sum(1) == 16).all()
    tight = gate_masks(20, 6, 3, "random", 0)[:20]  # all C(6, 3) = 20 gates: a repeat is redrawn
    assert len({tuple(row.tolist()) for row in tight}) == 20
    few = gate_masks(5, 3, 2, "block", 0)[:5]  # C(3, 2) = 3 gates for 5 classes: each used before any twice
    assert len({tuple(row.tolist()) for row in few[:3]}) == 3 and len({tuple(row.tolist()) for row in few[3:]}) == 2


def test_an_ancestry_whose_classes_must_share_gates_says_so(capsys):
    from kind_bench.config import compose
    from kind_bench.methods import Target, make_ancestry

    cfg = compose(["ancestry=kind", "ancestry.n_tailors=4", "ancestry.tailors_per_class=2", "model.hidden_size=8",
                   "model.num_heads=1", "model.depth=1"])
    target = Target(6, cfg.model.depth, cfg.model, cfg.data.channels, cfg.data.image_size)
    make_ancestry(cfg, "kind").build(target)  # C(4, 2) = 6: one gate each
    assert "warning" not in capsys.readouterr().err
    model = make_ancestry(cfg, "kind").build(dataclasses.replace(target, num_classes=7))
    assert ("ancestry.n_tailors=4 with ancestry.tailors_per_class=2 gives 6 distinct gates for 7 classes: "
            "classes share their tailors") in capsys.readouterr().err
    assert len({tuple(row.tolist()) for row in model.kind_gate.mask[:7]}) == 6


def test_inheriting_a_parameter_of_another_shape_is_refused():
    from kind_bench.inherit import copy_parameters

    source, target = nn.Linear(4, 3), nn.Linear(4, 2)
    with pytest.raises(ValueError, match="cannot inherit weight of shape \\(2, 4\\) from weight of shape \\(3, 4\\)"):
        copy_parameters(source, target)
    assert copy_parameters(source, target, skip=lambda name: True) == 0


def reference_forward(layer: KindLinear, x: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    """The module docstring's formula in plain autograd ops (no hand-written backward)."""
    weight = (layer.U_G * layer.sigma_G) @ layer.V_G.T
    scale = layer.sigma_T if active is None else layer.sigma_T * (active.unsqueeze(1) if x.dim() == 3 else active)
    return nn.functional.linear(x, weight, layer.bias) + ((x @ layer.V_T) * scale) @ layer.U_T.T


@pytest.mark.parametrize("shape", [(5, 7, IN), (5, IN)])
@pytest.mark.parametrize("mode", ["label", "open"])
@pytest.mark.parametrize("learngenes_train", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_hand_written_backward_equals_autograd(shape, mode, learngenes_train, bias):
    torch.manual_seed(0)
    gate = ClassGate(CLASSES, TAILORS, PER_CLASS, "block", seed=0, mode=mode)
    layer = KindLinear.from_linear(nn.Linear(IN, OUT, bias=bias), TAILORS, gate).double()
    for name in ("U_G", "sigma_G", "V_G"):
        getattr(layer, name).requires_grad_(learngenes_train)
    with torch.no_grad():
        layer.sigma_T.mul_(torch.linspace(0.5, 2.0, TAILORS, dtype=torch.float64))
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    gate.set_labels(torch.tensor([0, 1, 2, 3, 4]))  # 4: the null label
    upstream = torch.randn(*shape[:-1], OUT, dtype=torch.float64)
    results = []
    for forward in (layer, lambda inputs: reference_forward(layer, inputs, None if mode == "open" else gate.active)):
        for tensor in [x, *layer.parameters()]:
            tensor.grad = None
        y = forward(x)
        y.backward(upstream)
        results.append([y.detach(), x.grad] + [p.grad for p in layer.parameters()])
    for fast, reference in zip(*results, strict=True):
        if reference is None:
            assert fast is None
        else:
            torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-12)
    assert (layer.sigma_T.grad != 0).any() and (layer.U_T.grad != 0).any()


def test_bf16_autocast_runs_the_products_in_bf16_and_returns_parameter_dtype_gradients():
    _, layer, gate = make_layer()
    x = torch.randn(4, 3, IN)
    gate.set_labels(torch.tensor([0, 1, 2, 3]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in layer.parameters())
    torch.testing.assert_close(y.float(), reference_forward(layer, x, gate.active).detach(), rtol=0.05, atol=0.05)


def test_flop_count_includes_the_in_place_tailor_products():
    from kind_bench.metrics.cost import count_flops

    _, layer, gate = make_layer()
    layer.requires_grad_(False)
    layer.U_T.requires_grad_(True), layer.V_T.requires_grad_(True), layer.sigma_T.requires_grad_(True)
    x = torch.randn(4, 3, IN, requires_grad=True)
    gate.set_labels(torch.tensor([0, 1, 2, 3]))
    layer.learngene_weight()  # the frozen learngenes' product is cached (formed once, outside the step)
    rows = 4 * 3
    # forward: dense + two tailor products; backward: input gradient (dense + tailor), the tailor
    # activations' gradient, and the two tailor weight gradients
    expected = 2 * rows * (2 * IN * OUT + 3 * TAILORS * (IN + OUT))
    assert count_flops(lambda: layer(x).sum().backward()) == expected


def _kind_dit(dtype: torch.dtype = torch.float64) -> nn.Module:
    from kind_bench.config import compose
    from kind_bench.methods import Target, make_ancestry

    cfg = compose(["ancestry=kind", "model.hidden_size=32", "model.depth=2"])
    target = Target(len(cfg.task.target_classes), cfg.model.depth, cfg.model, cfg.data.channels, cfg.data.image_size)
    torch.manual_seed(0)
    return make_ancestry(cfg, "kind").build(target).to(dtype)


def _learngene_grads(model: nn.Module) -> list[torch.Tensor]:
    from kind_bench.kind.decompose import kind_layers

    model.zero_grad(set_to_none=True)
    x, t, y = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 5, 9, 20]), torch.tensor([0, 1, 2, 0])
    out = model(x, t, class_labels=y).sample
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return [p.grad.clone() for _, layer in kind_layers(model) for p in (layer.U_G, layer.sigma_G, layer.V_G, layer.U_T)]


def test_a_training_forward_keeps_no_learngene_weight_past_itself():
    _, layer, gate = make_layer()
    gate.set_labels(torch.tensor([0, 1]))
    layer(torch.randn(2, 3, IN)).sum().backward()
    assert layer._cache is None  # a kept W_G would hold its graph past the step (and go stale after it)


def test_a_weight_cached_while_frozen_is_not_used_once_the_learngenes_train():
    _, layer, gate = make_layer()
    layer.requires_grad_(False)
    layer.learngene_weight()  # cached without a graph
    layer.requires_grad_(True)
    gate.set_labels(torch.tensor([0, 1]))
    layer(torch.randn(2, 3, IN)).sum().backward()
    assert layer.U_G.grad is not None and layer.U_G.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_gradients_of_a_plain_backward():
    from kind_bench.train import enable_grad_checkpointing

    model = _kind_dit()
    plain = _learngene_grads(model)
    model.train()
    enable_grad_checkpointing(model)  # blocks rerun in the backward pass, forming W_G again
    checkpointed = _learngene_grads(model)
    for a, b in zip(checkpointed, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_model_trained_with_gradient_checkpointing_deploys_to_the_same_function():
    from kind_bench.kind.decompose import deploy
    from kind_bench.train import enable_grad_checkpointing

    model = _kind_dit()
    model.train()
    enable_grad_checkpointing(model)
    _learngene_grads(model)
    model.requires_grad_(False)
    model.eval()
    dense = deploy(model, 0, guidance=False)  # a copy: it must hold no W_G with autograd history
    x, t, y = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 7]), torch.tensor([0, 0])
    torch.testing.assert_close(dense(x, t, class_labels=y).sample, model(x, t, class_labels=y).sample)


def test_a_weight_cached_under_bf16_autocast_serves_a_full_precision_call():
    _, layer, gate = make_layer()
    layer.requires_grad_(False)  # frozen learngenes: W_G is cached
    x = torch.randn(4, 3, IN)
    gate.set_labels(torch.tensor([0, 1, 2, 3]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)  # sampling in bf16 forms the cache
    y = layer(x)  # then a full-precision call (e.g. the FLOP count) reuses it
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, reference_forward(layer, x, gate.active))


def test_gradient_checkpointing_is_refused_for_a_label_gated_kind_vit():
    from kind_bench.config import compose
    from kind_bench.errors import UserError
    from kind_bench.methods import Target, make_ancestry
    from kind_bench.train import enable_grad_checkpointing

    cfg = compose(["suite=digits_cls", "ancestry=kind"])
    target = Target(4, cfg.model.depth, cfg.model, cfg.data.channels, cfg.data.image_size)
    vit = make_ancestry(cfg, "kind").build(target)
    assert not vit.kind_gate.open_all  # routed by its own prediction: two passes with different labels
    with pytest.raises(UserError, match="runtime.grad_checkpointing=true cannot train a label-gated KIND ViT"):
        enable_grad_checkpointing(vit)
    vit.kind_gate.mode = "open"  # every tailor open: no labels to lose
    enable_grad_checkpointing(vit)
    assert vit.grad_checkpointing


def test_torch_compile_traces_the_layer_without_graph_breaks_or_a_recompile_per_step():
    from torch._dynamo.utils import counters

    _, layer, gate = make_layer()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(layer, backend="eager")  # Dynamo's tracing only: what breaks graphs, no codegen
    x = torch.randn(4, 3, IN)
    for step in range(6):
        layer.requires_grad_(step >= 3)  # transfer (frozen learngenes), then pre-training
        gate.set_labels(torch.randint(0, CLASSES + 1, (4,), generator=torch.Generator().manual_seed(step)))
        y = compiled(x)
        torch.testing.assert_close(y, reference_forward(layer, x, gate.active))
        if step >= 3:
            y.sum().backward()
        with torch.no_grad():
            layer.sigma_G.mul_(1.1)  # an optimiser step changes the learngenes
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 2  # one per requires_grad state, not one per step
    torch._dynamo.reset()


def test_torch_compile_traces_a_pretraining_kind_dit_without_graph_breaks_or_a_recompile_per_step():
    from torch._dynamo.utils import counters

    model = _kind_dit(torch.float32)
    model.train()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="eager")  # the forward pre-hooks that form W_G are traced too
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 5, 9, 20])
    for step in range(4):
        y = torch.randint(0, 5, (4,), generator=torch.Generator().manual_seed(step))
        compiled(x, t, class_labels=y).sample.pow(2).mean().backward()
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] <= 2  # the first call's, and at most one recompile, not one per step
    torch._dynamo.reset()


def test_training_learngenes_are_never_served_a_weight_from_before_a_fused_adamw_step():
    _, layer, gate = make_layer()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)  # updates in place, versions unchanged
    compiled = torch.compile(layer, backend="eager")  # a compiled step forms its own W_G, in the graph
    x = torch.randn(4, 3, IN)
    gate.set_labels(torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():
        layer(x)  # an evaluation pass while the learngenes train
    for _ in range(2):
        optimizer.zero_grad()
        compiled(x).pow(2).sum().backward()
        optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference_forward(layer, x, gate.active))
    torch._dynamo.reset()


def test_frozen_after_a_checkpointed_training_step_the_model_uses_the_updated_learngenes():
    from kind_bench.kind.decompose import deploy
    from kind_bench.train import enable_grad_checkpointing

    model = _kind_dit()
    model.train()
    enable_grad_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    x, t, y = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 5, 9, 20]), torch.zeros(4, dtype=int)
    model(x, t, class_labels=y).sample.pow(2).mean().backward()
    optimizer.step()
    model.requires_grad_(False)  # the next phase (or evaluation) freezes the learngenes
    with torch.no_grad():
        frozen = model(x, t, class_labels=y).sample
        merged = deploy(model, 0, guidance=False)  # dense weights formed from the parameters themselves
        torch.testing.assert_close(frozen, merged(x, t, class_labels=y).sample)
