"""KIND at the model level: the decomposed DiT, its transfer, and dense per-class deployment."""

from __future__ import annotations

import copy

import pytest
import torch

from kind_bench.config import ModelConfig
from kind_bench.kind.decompose import deploy, kind_layers
from kind_bench.kind.layer import GuidedPairLinear, KindLinear
from kind_bench.kind.method import Kind, KindAncestryOptions, KindOptions, build_kind_model
from kind_bench.methods import Target, training_phases
from kind_bench.models import build_dit, class_embedders

MODEL = ModelConfig(hidden_size=16, num_heads=2, depth=2)
TARGET = Target(num_classes=3, depth=2, model=MODEL, in_channels=1, sample_size=8)


def inputs(labels: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 1000, (n,), generator=g), torch.tensor(labels)


def randomise(model: torch.nn.Module) -> None:
    """Leave the zero-initialised adaLN/output behind so that every component matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_every_decomposed_layer_starts_as_the_svd_of_the_dense_init():
    torch.manual_seed(0)
    dense = build_dit(MODEL, 3, 1, 8)
    torch.manual_seed(0)
    kind = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=4), TARGET)
    layers = kind_layers(kind)
    assert len(layers) == 2 * 6  # q, k, v, out, fc1, fc2 in each of 2 blocks
    dense_weights = dict(dense.named_parameters())
    for name, layer in layers:
        torch.testing.assert_close((layer.U * layer.sigma) @ layer.V.T, dense_weights[f"{name}.weight"],
                                   atol=1e-5, rtol=1e-5)


def test_with_every_tailor_open_the_kind_model_is_the_dense_model():
    torch.manual_seed(0)
    dense = build_dit(MODEL, 3, 1, 8)
    kind = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=4), TARGET)
    randomise(dense)
    state = {k: v for k, v in dense.state_dict().items()}
    for name, layer in kind_layers(kind):  # decompose the randomised dense weights
        fresh = KindLinear.from_linear(dense.get_submodule(name), 4, kind.kind_gate)
        layer.load_state_dict(fresh.state_dict())
    kind.load_state_dict({k: v for k, v in state.items() if k in kind.state_dict()}, strict=False)
    x, t, y = inputs([0, 1, 2, 1])
    torch.testing.assert_close(kind(x, timestep=t, class_labels=y).sample, dense(x, timestep=t, class_labels=y).sample,
                               atol=1e-4, rtol=1e-4)


def test_a_sample_does_not_depend_on_the_rest_of_the_batch():
    torch.manual_seed(0)
    kind = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=2), TARGET)
    randomise(kind)
    x, t, y = inputs([0, 1, 2, 3])  # 3 is the null label
    batch = kind(x, timestep=t, class_labels=y).sample
    for i in range(4):
        alone = kind(x[i : i + 1], timestep=t[i : i + 1], class_labels=y[i : i + 1]).sample
        torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("guidance", [False, True])
def test_deployed_dense_model_equals_the_gated_model(guidance):
    torch.manual_seed(0)
    kind = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=2), TARGET)
    randomise(kind)
    for c in range(3):
        dense = deploy(kind, c, guidance)
        assert not kind_layers(dense)
        assert all(isinstance(m, (GuidedPairLinear if guidance else torch.nn.Linear)) for m in
                   (dense.transformer_blocks[0].attn1.to_q, dense.transformer_blocks[1].ff.net[2]))
        labels = [c, c, 3, 3] if guidance else [c, c]
        x, t, y = inputs(labels, seed=c)
        expected = kind(x, timestep=t, class_labels=y).sample
        got = dense(x, timestep=t, class_labels=y).sample
        assert (got - expected).abs().max() < 1e-5


def test_transfer_copies_learngenes_and_redraws_tailors_and_class_embeddings():
    torch.manual_seed(0)
    ancestry = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=2), TARGET)
    randomise(ancestry)
    target = Target(num_classes=4, depth=2, model=MODEL, in_channels=1, sample_size=8)
    built = Kind(KindOptions()).build(copy.deepcopy(ancestry), target)
    model = built.model
    for (name, old), (_, new) in zip(kind_layers(ancestry), kind_layers(model), strict=True):
        assert torch.equal(old.U_G, new.U_G) and torch.equal(old.sigma_G, new.sigma_G) and torch.equal(old.V_G, new.V_G)
        assert not torch.equal(old.U_T, new.U_T), name
    assert model.kind_gate.num_classes == 4
    assert all(e.embedding_table.num_embeddings == 5 for e in class_embedders(model))
    adaln = model.transformer_blocks[0].norm1.linear.weight
    assert torch.equal(adaln, ancestry.transformer_blocks[0].norm1.linear.weight)
    assert 0 < built.transferred < sum(p.numel() for p in model.parameters())


def test_default_transfer_trains_tailors_class_embeddings_and_final_layer_only():
    torch.manual_seed(0)
    ancestry = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=2), TARGET)
    method = Kind(KindOptions())
    model = method.build(ancestry, TARGET).model
    trainable = {id(p) for p in training_phases(method, model, final_layer=True)[-1].params}
    names = {n for n, p in model.named_parameters() if id(p) in trainable}
    assert all(n.endswith(("U_T", "sigma_T", "V_T")) or "class_embedder" in n or n.startswith("proj_out")
               for n in names)
    assert any(n.startswith("proj_out") for n in names)
    assert any(n.endswith("U_T") for n in names) and any("class_embedder" in n for n in names)
    both = Kind(KindOptions(freeze_learngenes=False, train_adaln=True))
    more = {n for n, p in model.named_parameters() if id(p) in {id(q) for q in both.trainable_parameters(model)}}
    assert any(n.endswith("U_G") for n in more) and any("norm1.linear" in n for n in more)


def test_a_shallower_descendant_recombines_evenly_spaced_ancestry_blocks():
    torch.manual_seed(0)
    deep = Target(num_classes=3, depth=4, model=MODEL, in_channels=1, sample_size=8)
    ancestry = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=2), deep)
    randomise(ancestry)
    small = Kind(KindOptions()).build(ancestry, Target(num_classes=3, depth=2, model=MODEL, in_channels=1,
                                                       sample_size=8)).model
    assert len(small.transformer_blocks) == 2
    for index, source in enumerate([0, 3]):  # evenly spaced over 4 blocks
        new = small.transformer_blocks[index].attn1.to_q
        old = ancestry.transformer_blocks[source].attn1.to_q
        assert torch.equal(new.U_G, old.U_G) and torch.equal(new.sigma_G, old.sigma_G)


def test_recombined_model_keeps_only_the_classes_tailors_and_computes_the_same_function():
    from kind_bench.stages.recombine import recombine

    torch.manual_seed(0)
    kind = build_kind_model(KindAncestryOptions(n_tailors=6, tailors_per_class=2), TARGET)
    randomise(kind)
    small = recombine(kind, [0], guidance=True)
    kept = int(kind.kind_gate.mask[0].sum())
    assert all(layer.n_tailors == kept for _, layer in kind_layers(small))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in kind.parameters())
    x, t, y = inputs([0, 0, 3])  # class 0 and the null label
    torch.testing.assert_close(small(x, timestep=t, class_labels=y).sample, kind(x, timestep=t, class_labels=y).sample,
                               atol=1e-5, rtol=1e-5)
    own = build_kind_model(KindAncestryOptions(n_tailors=6, tailors_per_class=2, null_tailors="own"), TARGET)
    randomise(own)  # the null label opens tailors of its own: guided sampling needs them
    assert kind_layers(recombine(own, [0], guidance=False))[0][1].n_tailors == 2
    small = recombine(own, [0], guidance=True)
    assert kind_layers(small)[0][1].n_tailors == int(own.kind_gate.mask[[0, 3]].amax(0).sum()) > 2
    torch.testing.assert_close(small(x, timestep=t, class_labels=y).sample, own(x, timestep=t, class_labels=y).sample,
                               atol=1e-5, rtol=1e-5)


def _sampled(model: torch.nn.Module, monkeypatch, *overrides: str) -> tuple[torch.Tensor, list[list[int]], list[bool]]:
    """generate() on 3 classes x 4 samples; the labels of every denoising batch, and whether autocast was on."""
    from kind_bench.config import compose
    from kind_bench.models.vae import PixelCodec
    from kind_bench.stages import evaluate

    batches, autocast = [], []
    real = evaluate.sample

    def spy(net, labels, *args, **kwargs):
        batches.append(labels.tolist())
        autocast.append(torch.is_autocast_enabled("cpu"))
        return real(net, labels, *args, **kwargs)

    monkeypatch.setattr(evaluate, "sample", spy)
    cfg = compose(["sample.steps=2", "sample.batch_size=8", *overrides])
    images, labels = evaluate.generate(model, [0, 1, 2], 4, 0, cfg, PixelCodec(1, 8), torch.device("cpu"), False)
    assert images.shape == (12, 1, 8, 8) and sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    return images, batches, autocast


def test_sampling_batches_across_classes_unless_a_model_is_merged_per_class(monkeypatch):
    dense = build_dit(MODEL, 3, 1, 8)
    randomise(dense)
    by_class, batches, _ = _sampled(dense, monkeypatch)
    assert [sorted(set(b)) for b in batches] == [[0], [1], [2]]  # one class at a time (the default)
    mixed, batches, _ = _sampled(dense, monkeypatch, "sample.by_class=false")
    assert [len(b) for b in batches] == [8, 4] and set(batches[0]) == {0, 1, 2}  # full batches across classes
    torch.testing.assert_close(mixed, by_class, rtol=1e-4, atol=1e-5)  # the same starting noise, the same images
    stochastic = [_sampled(dense, monkeypatch, "sample.scheduler=ddpm", *o)[0]  # DDPM's step noise is per image
                  for o in ((), ("sample.by_class=false",), ("sample.by_class=false", "sample.batch_size=5"))]
    for other in stochastic[1:]:
        torch.testing.assert_close(other, stochastic[0], rtol=1e-4, atol=1e-5)
    assert (stochastic[0] - by_class).abs().max() > 0.1  # it is noise: DDPM's images are not the solver's
    kind = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=2), TARGET)
    _, batches, _ = _sampled(kind, monkeypatch, "sample.by_class=false")
    assert [sorted(set(b)) for b in batches] == [[0], [1], [2]]  # merged weights exist per class


def test_sampling_precision_bf16_denoises_under_autocast(monkeypatch):
    dense = build_dit(MODEL, 3, 1, 8)
    _, _, autocast = _sampled(dense, monkeypatch)
    assert not any(autocast)
    images, _, autocast = _sampled(dense, monkeypatch, "sample.precision=bf16")
    assert all(autocast) and images.dtype == torch.float32


def test_flops_per_sample_count_the_model_that_samples_over_the_whole_trajectory():
    import dataclasses
    from functools import partial

    from kind_bench.config import compose
    from kind_bench.diffusion import noise_scheduler, sample
    from kind_bench.metrics.cost import sampling_flops
    from kind_bench.models.vae import PixelCodec
    from kind_bench.tracks import flops_per_item

    cfg = compose(["sample.steps=3"])
    codec, cpu = PixelCodec(1, 8), torch.device("cpu")
    dense = build_dit(MODEL, 3, 1, 8)
    kind = build_kind_model(KindAncestryOptions(n_tailors=4, tailors_per_class=2), TARGET)
    draw = partial(sample, dense, train_scheduler=noise_scheduler(cfg.diffusion), cfg=cfg.sample, null=3,
                   generator=torch.Generator())
    trajectory = sampling_flops(lambda labels: draw(labels, torch.zeros(len(labels), 1, 8, 8)), 3, cpu)
    assert flops_per_item(cfg, dense, 3, cpu, codec) == trajectory  # one step's count x 3 steps
    assert flops_per_item(cfg, kind, 3, cpu, codec) == trajectory  # KIND samples through merged dense weights
    gated = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, merged=False))
    assert flops_per_item(gated, kind, 3, cpu, codec) > trajectory  # the gated path's tailor products
