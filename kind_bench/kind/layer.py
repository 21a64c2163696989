"""The KIND decomposed linear layer, W = U diag(sigma) V^T, and its dense merges.

Components ``[0, N_G)`` are learngenes (open for every sample) and ``[N_G, r)`` are tailors (opened per
sample by the class gate). For a batch with labels ``y`` the layer computes, with no per-sample weight::

    y = ((x V_G) * sigma_G) U_G^T + ((x V_T) * (sigma_T * m_y)) U_T^T + b

The learngene term is evaluated as one dense product ``x W_G^T`` with ``W_G = U_G diag(sigma_G) V_G^T``
(the same for every sample; algebraically identical, and a single GEMM). While the learngenes train, each
forward pass forms ``W_G`` in the graph; while they are frozen, it is cached until a learngene tensor
changes.

The tailor term's products have an inner or outer size of N_T (8 by default). On CPU a GEMM whose output
has N_T columns is 2.5-4x slower than the same product laid out with N_T rows (measured at 1024 x 128 x 8
on 2 threads), so :class:`GatedLinearFunction` keeps the tailor activations transposed, (N_T, tokens),
and writes the backward pass by hand in that layout. Its gradients equal autograd's on the formula
above (tested in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kind_bench.kind.gate import ClassGate


class GatedLinearFunction(torch.autograd.Function):
    """``y = x W^T + b + ((x V) * s) U^T`` for rows ``x`` (M, in), with per-row tailor scales ``s`` (M, N_T)
    given transposed as ``sigma[:, None] * columns`` (``columns``: the gate's (N_T, M) masks, or None when
    every tailor is open).

    The tailor activations are kept as (N_T, M) (see the module docstring); ``W`` is the learngene
    weight (its gradient, ``gy^T x``, is computed only when it is asked for: learngenes that train).
    Under autocast the products run in autocast's dtype, as ``F.linear`` would.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, V, U, sigma, columns):  # noqa: N803 - the paper's names
        device = x.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight, V, U, sigma = (t.to(dtype) for t in (x, weight, V, U, sigma))
            bias = None if bias is None else bias.to(dtype)
            columns = None if columns is None else columns.to(dtype)
            with torch.autocast(device, enabled=False):
                return GatedLinearFunction.forward(ctx, x, weight, bias, V, U, sigma, columns)
        xv_t = V.T @ x.T  # (N_T, M)
        gated_t = xv_t if columns is None else xv_t * columns
        h_t = gated_t * sigma[:, None]
        y = x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)
        y.addmm_(h_t.T, U.T)
        ctx.save_for_backward(x, weight, V, U, sigma, columns, gated_t, h_t)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight, V, U, sigma, columns, gated_t, h_t = ctx.saved_tensors  # noqa: N806
        need_x, need_w, need_b, need_v, need_u, need_sigma, _ = ctx.needs_input_grad
        grad_y = grad_y.to(x.dtype)
        grad_x = grad_w = grad_b = grad_v = grad_u = grad_sigma = None
        grad_h_t = U.T @ grad_y.T  # (N_T, M)
        grad_xv_t = grad_h_t * sigma[:, None]
        if columns is not None:
            grad_xv_t = grad_xv_t * columns
        if need_x:
            grad_x = (grad_y @ weight).addmm_(grad_xv_t.T, V.T)
        if need_w:
            grad_w = grad_y.T @ x
        if need_b and ctx.has_bias:
            grad_b = grad_y.sum(0)
        if need_v:
            grad_v = (grad_xv_t @ x).T
        if need_u:
            grad_u = (h_t @ grad_y).T
        if need_sigma:
            grad_sigma = (grad_h_t * gated_t).sum(1)
        return grad_x, grad_w, grad_b, grad_v, grad_u, grad_sigma, None


class KindLinear(nn.Module):
    """A linear layer stored as learngene and tailor rank-1 components."""

    def __init__(self, in_features: int, out_features: int, n_tailors: int, gate: ClassGate, bias: bool = True,
                 n_learngenes: int | None = None):
        super().__init__()
        rank = min(in_features, out_features)
        if not 0 <= n_tailors < rank:
            raise ValueError(f"n_tailors={n_tailors} must be in [0, {rank}) for a {out_features}x{in_features} layer")
        n_genes = rank - n_tailors if n_learngenes is None else n_learngenes  # fewer: a descendant's own N_T
        if not 1 <= n_genes <= rank - n_tailors:
            raise ValueError(f"n_learngenes={n_genes} must be in [1, {rank - n_tailors}] with {n_tailors} tailors")
        self.in_features, self.out_features = in_features, out_features
        self.U_G = nn.Parameter(torch.empty(out_features, n_genes))
        self.sigma_G = nn.Parameter(torch.empty(n_genes))
        self.V_G = nn.Parameter(torch.empty(in_features, n_genes))
        self.U_T = nn.Parameter(torch.empty(out_features, n_tailors))
        self.sigma_T = nn.Parameter(torch.empty(n_tailors))
        self.V_T = nn.Parameter(torch.empty(in_features, n_tailors))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.__dict__["gate"] = gate  # shared, registered once on the model (not a child of each layer)
        self._cache: tuple[tuple[int, ...], torch.Tensor] | None = None  # frozen W_G: (learngene_key, W_G)

    @property
    def n_learngenes(self) -> int:
        """N_G, the number of learngene components."""
        return self.sigma_G.numel()

    @property
    def n_tailors(self) -> int:
        """N_T, the number of tailor components."""
        return self.sigma_T.numel()

    @property
    def U(self) -> torch.Tensor:  # noqa: N802 - the paper's name
        """All left singular vectors, (out, r)."""
        return torch.cat([self.U_G, self.U_T], dim=1)

    @property
    def sigma(self) -> torch.Tensor:
        """All component scales, (r,)."""
        return torch.cat([self.sigma_G, self.sigma_T])

    @property
    def V(self) -> torch.Tensor:  # noqa: N802 - the paper's name
        """All right singular vectors, (in, r)."""
        return torch.cat([self.V_G, self.V_T], dim=1)

    @torch.no_grad()
    def set_components(self, U: torch.Tensor, sigma: torch.Tensor, V: torch.Tensor) -> None:  # noqa: N803
        """Overwrite all components from full (out, r), (r,), (in, r) tensors."""
        g = self.n_learngenes
        self.U_G.copy_(U[:, :g]), self.U_T.copy_(U[:, g:])
        self.sigma_G.copy_(sigma[:g]), self.sigma_T.copy_(sigma[g:])
        self.V_G.copy_(V[:, :g]), self.V_T.copy_(V[:, g:])

    @classmethod
    def from_linear(cls, linear: nn.Linear, n_tailors: int, gate: ClassGate,
                    n_learngenes: int | None = None) -> KindLinear:
        """Decompose a dense layer by SVD: with every component open it is the same function (with
        ``n_learngenes`` below the full rank, its leading components)."""
        from kind_bench.models import weights_will_load

        layer = cls(linear.in_features, linear.out_features, n_tailors, gate, bias=linear.bias is not None,
                    n_learngenes=n_learngenes)
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        if weights_will_load():  # saved components follow: no SVD (zeros until they are loaded)
            for p in layer.parameters():
                torch.nn.init.zeros_(p)
            return layer
        U, sigma, Vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)  # noqa: N806
        k, dtype = layer.n_learngenes + layer.n_tailors, linear.weight.dtype
        layer.set_components(U[:, :k].to(dtype), sigma[:k].to(dtype), Vh[:k].T.to(dtype))
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer

    def learngene_key(self) -> tuple[int, ...]:
        """Identifies the learngenes' current values (their tensors' versions and storage)."""
        return (self.U_G._version, self.sigma_G._version, self.V_G._version, self.U_G.data_ptr())

    def learngenes_train(self) -> bool:
        """Whether any learngene tensor is trainable (then W_G is formed in the graph on every forward)."""
        return self.U_G.requires_grad or self.sigma_G.requires_grad or self.V_G.requires_grad

    def learngene_weight(self) -> torch.Tensor:
        """W_G = U_G diag(sigma_G) V_G^T. While the learngenes train (or inside a compiled graph): formed here,
        in the graph, and not kept (an optimiser may update them in place without bumping their versions, as
        fused AdamW does). While they are frozen: cached, in the parameters' dtype whatever autocast is on,
        until a learngene tensor changes."""
        if self.learngenes_train() or torch.compiler.is_compiling():
            return self._formed()
        key = self.learngene_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad(), torch.autocast(self.U_G.device.type, enabled=False):
                self._cache = (key, self._formed())
        return self._cache[1]

    def _formed(self) -> torch.Tensor:
        return (self.U_G * self.sigma_G) @ self.V_G.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Learngenes for everyone, plus each sample's own tailors (``gate.active``)."""
        if self.n_tailors == 0:
            return F.linear(x, self.learngene_weight(), self.bias)
        columns = None  # every tailor open
        if not self.gate.open_all:
            active = self.gate.active
            if active is None or active.shape[0] != x.shape[0]:
                raise RuntimeError("KindLinear needs the batch's class labels: call it through the model's forward")
            columns = self.gate.columns(x[0].numel() // x.shape[-1])  # (N_T, B * tokens per sample)
        rows = x.reshape(-1, x.shape[-1])
        y = GatedLinearFunction.apply(rows, self.learngene_weight(), self.bias, self.V_T, self.U_T, self.sigma_T,
                                      columns)
        return y.reshape(*x.shape[:-1], self.out_features)

    @torch.no_grad()
    def merged_weight(self, class_id: int) -> torch.Tensor:
        """The dense weight a sample of ``class_id`` sees: W_G + U_T diag(sigma_T * m_c) V_T^T."""
        mask = self.gate.mask[class_id]
        return self._formed() + (self.U_T * (self.sigma_T * mask)) @ self.V_T.T

    @torch.no_grad()
    def merge(self, class_id: int) -> nn.Linear:
        """A dense ``nn.Linear`` equal to this layer for samples of ``class_id`` (null label included)."""
        dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        dense.to(device=self.U_G.device, dtype=self.U_G.dtype)
        dense.weight.copy_(self.merged_weight(class_id))
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        return dense

    def extra_repr(self) -> str:
        sizes = f"in={self.in_features}, out={self.out_features}"
        return f"{sizes}, learngenes={self.n_learngenes}, tailors={self.n_tailors}"


class GuidedPairLinear(nn.Module):
    """Two dense weights for one classifier-free-guidance batch laid out as [conditional; unconditional].

    The first half of the batch uses the class's merged weight and the second half the null label's, in
    one batched GEMM. This is the contract of :func:`kind_bench.diffusion.sample` with guidance on.
    """

    def __init__(self, cond: nn.Linear, uncond: nn.Linear) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(torch.stack([cond.weight.T, uncond.weight.T]).contiguous(), requires_grad=False)
        bias_c = cond.bias if cond.bias is not None else torch.zeros(cond.out_features, device=cond.weight.device)
        bias_u = uncond.bias if uncond.bias is not None else torch.zeros_like(bias_c)
        self.bias = nn.Parameter(torch.stack([bias_c, bias_u]).unsqueeze(1).contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (2B, ..., in) with the conditional half first."""
        shape = x.shape
        pair = x.reshape(2, -1, shape[-1])
        return torch.baddbmm(self.bias, pair, self.weight_t).reshape(*shape[:-1], self.weight_t.shape[-1])
