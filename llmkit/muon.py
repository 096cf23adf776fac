"""Muon: momentum orthogonalised by Newton–Schulz, for the transformer's weight matrices (Jordan et al. 2024,
"Muon: An optimizer for hidden layers in neural networks"; the default of nanochat and the nanoGPT speedruns).

    m ← μ·m + (1 − μ)·g                       momentum of the gradient
    u ← g + μ·(m − g)                         Nesterov's look-ahead
    O ← NewtonSchulz₅(u) ≈ U·Vᵀ  (u = U·S·Vᵀ)  every singular value pushed towards 1
    W ← W·(1 − lr·λ) − lr · 0.2·√max(rows, cols) · O

Orthogonalising makes every direction of a matrix move at the same rate, where AdamW lets a few dominant
directions take most of each step. The 0.2·√max(rows, cols) factor ("match_rms_adamw", Liu et al. 2025) gives
the update AdamW's typical RMS, so the same learning rate and schedule serve both optimizers. Embeddings, the
output layer and norms are not hidden matrices; they stay with AdamW.

Why not `torch.optim.Muon`: torch 2.13's runs Newton–Schulz in bfloat16 whatever the parameters are. That is
the fast choice on a GPU's tensor cores and a slow one on a CPU without bf16 matrix units: on this project's
2-core machine a step on the tiny preset's matrices took 8.8 s, 46× this module's 0.19 s
(`benchmarks/muon_step.py`). Here the iteration runs in the gradient's dtype, and the matrices of one shape
go through it stacked; the update is otherwise torch's (a test compares them).
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic's coefficients, from Keller Jordan's Muon


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Newton–Schulz iteration towards the nearest semi-orthogonal matrix (singular values end near 1, within
    about 0.7–1.2: the quintic trades exactness for speed, which does not hurt training). `g` is one matrix
    or a stack of them (..., rows, cols): one batched matmul for all the layers' matrices of a shape is
    faster on a CPU than one small matmul each."""
    if g.dim() == 2:
        return orthogonalize(g.unsqueeze(0), steps, eps)[0]
    a, b, c = NS_COEFFICIENTS
    tall = g.size(-2) > g.size(-1)
    x = g.mT if tall else g  # iterate on the smaller Gram matrix
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm ≤ Frobenius norm ≤ 1
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters. `lr` and `weight_decay` mean what they mean for AdamW (decoupled decay)."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps))
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon updates 2-D weight matrices only; got a parameter of shape "
                                     f"{tuple(p.shape)} (give vectors and embeddings to AdamW)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            by_shape: dict[tuple, list] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
            for shape, params in by_shape.items():
                updates = []
                for p in params:
                    state = self.state[p]
                    if "momentum_buffer" not in state:  # not setdefault: that would allocate zeros every step
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.lerp_(p.grad, 1 - mu)
                    updates.append(p.grad.lerp(buf, mu) if group["nesterov"] else buf)
                orthogonal = orthogonalize(torch.stack(updates), group["ns_steps"])
                for p, o in zip(params, orthogonal):
                    p.mul_(1 - lr * group["weight_decay"])
                    p.add_(o, alpha=-lr * 0.2 * max(shape) ** 0.5)
        return loss
