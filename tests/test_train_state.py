"""What training keeps: the EMA weights it samples from, and files that store only what trains."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

from kind_bench.checkpoint import LoopState, load_checkpoint, save_checkpoint
from kind_bench.config import TrainConfig
from kind_bench.errors import UserError
from kind_bench.io import load_module, save_module
from kind_bench.methods import Phase
from kind_bench.train import train


def test_the_ema_is_what_snapshots_and_the_final_model_hold_and_training_continues_on_the_live_weights():
    model = nn.Linear(2, 1, bias=False)
    seen = []  # the weights each step's loss is computed with: w_0 .. w_{T-1}, then w_T (the FLOP count)

    def objective(m, images, labels, generator):
        seen.append(m.weight.detach().clone())
        return ((m(images).squeeze(1) - labels) ** 2).mean()

    snapshots = {}
    images, labels = torch.randn(16, 2), torch.randn(16)
    train(model, [Phase(1.0, [model.weight])], images, labels,
          TrainConfig(steps=4, batch_size=4, lr=0.1, warmup_steps=0, ema=0.75, snapshots=[0.5, 1.0]),
          objective, seed=0, on_snapshot=lambda step, m: snapshots.update({step: m.weight.detach().clone()}))
    shadow, averages = seen[0], {}
    for step in range(1, 5):
        shadow = 0.75 * shadow + 0.25 * seen[step]  # decay x shadow + (1 - decay) x the weights after the step
        averages[step] = shadow
    assert not torch.allclose(averages[4], seen[4])  # the average is not the live weights
    torch.testing.assert_close(snapshots[2], averages[2])
    torch.testing.assert_close(snapshots[4], averages[4])
    torch.testing.assert_close(model.weight.detach(), averages[4])  # what is sampled after training
    assert not torch.allclose(seen[2], averages[2])  # step 3 trained on the live weights, not the snapshot's


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trained, self.frozen, self.norm = nn.Linear(3, 3), nn.Linear(3, 3), nn.BatchNorm1d(3)


def test_a_descendants_file_stores_what_trains_and_the_buffers_and_refuses_another_frozen_rest(tmp_path):
    torch.manual_seed(0)
    net, path = Net(), tmp_path / "snapshot.safetensors"
    save_module(path, net, params=list(net.trained.parameters()))
    with safe_open(str(path), "pt") as stored:
        assert set(stored.keys()) == {"trained.weight", "trained.bias", "norm.running_mean", "norm.running_var",
                                      "norm.num_batches_tracked"}
        assert "frozen_sha256" in stored.metadata()
    rebuilt = Net()
    rebuilt.frozen.load_state_dict(net.frozen.state_dict())  # the same frozen rest, rebuilt
    load_module(path, rebuilt)
    torch.testing.assert_close(rebuilt.trained.weight, net.trained.weight)
    with torch.no_grad():
        rebuilt.frozen.weight[0, 0] += 1
    with pytest.raises(UserError, match="stores trained parameters only, and the rest of the model rebuilt"):
        load_module(path, rebuilt)


def test_a_resume_file_keeps_the_trained_parameters_and_their_optimizer_state_only(tmp_path):
    torch.manual_seed(0)
    net, path = Net(), tmp_path / "resume.safetensors"
    optimizer = torch.optim.AdamW(net.trained.parameters())
    net.trained(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(path, net, optimizer, schedule, torch.Generator(), LoopState(step=1), tag="run")
    with safe_open(str(path), "pt") as stored:
        keys = set(stored.keys())
    assert {k for k in keys if k.startswith("model.")} == {"model.trained.weight", "model.trained.bias",
                                                           "model.norm.running_mean", "model.norm.running_var",
                                                           "model.norm.num_batches_tracked"}
    assert {k.split(".")[1] for k in keys if k.startswith("optim.")} == {"0", "1"}  # two trained tensors
    other = Net()
    with pytest.raises(UserError, match="does not fit the model rebuilt from the ancestry"):
        load_checkpoint(path, other, torch.optim.AdamW(other.trained.parameters()), schedule, torch.Generator(),
                        tag="run")


def test_the_loop_reads_the_loss_back_only_at_its_logging_points(monkeypatch):
    """No per-step host sync (on a GPU each read waits for the step): 200 steps log every 4th."""
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name, **k:
                            reads.append(_name) or _real(self, *a, **k))
    model = nn.Linear(2, 1)
    train(model, [Phase(1.0, list(model.parameters()))], torch.randn(16, 2), torch.randn(16),
          TrainConfig(steps=200, batch_size=4, grad_clip=1.0, ema=0.9),
          lambda m, images, labels, generator: ((m(images).squeeze(1) - labels) ** 2).mean(), seed=0)
    assert reads.count("tolist") == 50 and len(reads) <= 55, reads[:60]
