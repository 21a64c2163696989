"""How stable the evaluator's Frechet distance is at a given sample count (and why it is 16-wide).

A Frechet distance needs covariance estimates; with n samples in d dimensions its bias grows roughly
with d / n. This measures FD(real, real) - two disjoint real sets that should score 0 - at several sample
counts, for the evaluator's 16-dimensional bottleneck and, for contrast, for the 64 channel means of its
last convolution. Both are standardised per dimension (with the reference's statistics), so that the
two widths are on one scale. Statistics and distances are torch-fidelity's own functions.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from kind_bench.metrics.evaluator import DigitsCNN


@torch.no_grad()
def feature_sets(cnn: DigitsCNN, images: torch.Tensor) -> dict[int, torch.Tensor]:
    """{dimension: features} for the bottleneck and the last convolution's channel means."""
    bottleneck, _ = cnn(images)
    conv = cnn.body[:4](images).mean(dim=(2, 3))
    return {bottleneck.shape[1]: bottleneck, conv.shape[1]: conv}


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """torch-fidelity's Frechet distance between two feature sets."""
    stats = [fid_features_to_statistics(x.double()) for x in (a, b)]
    return float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"])


def fd_stability(cnn: DigitsCNN, pool: torch.Tensor, reference: torch.Tensor, counts: list[int],
                 repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """FD of ``n`` images drawn from ``pool`` against ``reference`` (disjoint real images), per n and d."""
    generator = torch.Generator().manual_seed(seed)
    pool_features, reference_features = feature_sets(cnn, pool), feature_sets(cnn, reference)
    for dim, ref in reference_features.items():
        mean, std = ref.mean(0), ref.std(0).clamp_min(1e-6)
        reference_features[dim] = (ref - mean) / std
        pool_features[dim] = (pool_features[dim] - mean) / std
    rows = []
    for n in counts:
        for dim, features in pool_features.items():
            values = torch.tensor([frechet(features[torch.randperm(len(pool), generator=generator)[:n]],
                                           reference_features[dim]) for _ in range(repeats)])
            rows.append({"n": n, "dim": dim, "fd_mean": float(values.mean()), "fd_std": float(values.std())})
    return pd.DataFrame(rows)
