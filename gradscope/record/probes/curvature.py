"""Opt-in curvature: the top Hessian eigenvalue and the Hessian trace of the step's loss.

The loss is recomputed on the step's recorded batch, never through the user's graph (that
would need ``create_graph=True`` in the user's own backward, which changes it): the
outermost module call that produced the cross-entropy / MSE input is re-run with
``torch.func.functional_call`` on detached views of the trained parameters (new autograd
leaves: no hook of the user's fires, .grad is never written), on clones of every buffer
(a train-mode BatchNorm updates its clones, not the model's running statistics), with the
random state the user's forward started from (dropout draws the same masks) inside
``torch.random.fork_rng`` (the global streams are left exactly as they were), under the
autocast state of that forward. Hessian-vector products come from double backward
through that one graph.

- lambda_max: Lanczos with full reorthogonalisation (``LANCZOS_STEPS`` products), largest
  algebraic eigenvalue of the tridiagonal matrix (Ghorbani et al. 2019; PyHessian).
- trace: Hutchinson's estimator mean_j v_j^T H v_j over ``HUTCHINSON_PROBES`` Rademacher
  vectors, with its standard error std / sqrt(m) (Hutchinson 1990; Avron & Toledo 2011).
- edge: the sharpness gradient descent can sustain (Cohen et al. 2021): 2 / eta for SGD,
  (2 + 2 beta) / eta with heavy-ball momentum beta, (2 + 2 beta) / (eta (1 + 2 beta)) with
  Nesterov; SGD's coupled weight decay wd adds wd to lambda_max. Adam / AdamW (Cohen et
  al. 2022, "Adaptive Gradient Methods at the Edge of Stability"): lambda_max of the
  preconditioned Hessian P^-1/2 H P^-1/2, P = diag(sqrt(v_hat) + eps) with this step's
  v_hat, against (2 + 2 beta1) / ((1 - beta1) eta). Other optimizers: no edge (NaN).
Random vectors come from a private generator seeded per step, never torch's global one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

LANCZOS_STEPS = 20
HUTCHINSON_PROBES = 10
Operator = Callable[[Tensor], Tensor]


def lanczos_top(operator: Operator, size: int, steps: int, generator: torch.Generator,
                like: Tensor) -> tuple[float, int]:
    """Largest algebraic eigenvalue of a symmetric operator on R^size, and the steps used."""
    v = torch.randn(size, generator=generator, device=like.device, dtype=like.dtype)
    basis = [v / v.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    w = operator(basis[0])
    for j in range(min(steps, size)):
        alpha = float(w @ basis[j])
        alphas.append(alpha)
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j else 0)
        stack = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice is enough (Parlett)
            w = w - stack.T @ (stack @ w)
        beta = float(w.norm())
        if j + 1 == min(steps, size) or beta <= 1e-10 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        basis.append(w / beta)
        w = operator(basis[-1])
    tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        tri += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(tri).max()), len(alphas)


def hutchinson(operator: Operator, size: int, probes: int, generator: torch.Generator,
               like: Tensor) -> tuple[float, float]:
    """(trace estimate, its standard error) from ``probes`` Rademacher vectors."""
    values = []
    for _ in range(probes):
        v = torch.randint(0, 2, (size,), generator=generator, device=like.device).to(like.dtype) * 2 - 1
        values.append(float(v @ operator(v)))
    data = torch.tensor(values, dtype=torch.float64)
    se = float(data.std(unbiased=True) / math.sqrt(probes)) if probes > 1 else math.nan
    return float(data.mean()), se


def hvp_operator(loss: Tensor, params: list[Tensor]) -> Operator:
    """v -> H v on flat vectors, by double backward through ``loss``'s graph."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])

    def apply(v: Tensor) -> Tensor:
        out = torch.autograd.grad(flat, params, grad_outputs=v.to(flat.dtype), retain_graph=True,
                                  allow_unused=True)
        return torch.cat([(o if o is not None else torch.zeros_like(p)).reshape(-1)
                          for o, p in zip(out, params)]).to(v.dtype)

    return apply


def _same(groups: list[dict], key: str) -> float | None:
    values = {float(g[key]) if not isinstance(g[key], tuple) else g[key] for g in groups}
    return values.pop() if len(values) == 1 else None


def edge(
    optimizer: torch.optim.Optimizer | None, params: list[Tensor]
) -> tuple[float, str, Tensor | None, float]:
    """(edge, rule, preconditioner diagonal P^-1/2 on flat params or None, weight decay added
    to lambda_max) for the optimizer's step about to run."""
    groups = [] if optimizer is None else [g for g in optimizer.param_groups if g["params"]]
    name = type(optimizer).__name__ if optimizer is not None else ""
    lr = _same(groups, "lr") if groups and "lr" in groups[0] else None
    if not lr or lr <= 0:
        return math.nan, f"no edge known for {name or 'no optimizer'}", None, 0.0
    if name == "SGD":
        beta, decay = _same(groups, "momentum"), _same(groups, "weight_decay")
        if beta is None or decay is None:
            return math.nan, "SGD groups differ", None, 0.0
        if groups[0].get("nesterov") and beta:
            return (2 + 2 * beta) / (lr * (1 + 2 * beta)), "SGD Nesterov (2+2b)/(eta(1+2b))", None, decay
        return (2 + 2 * beta) / lr, "SGD (2+2b)/eta" if beta else "SGD 2/eta", None, decay
    if name in ("Adam", "AdamW"):
        betas = _same(groups, "betas")
        if betas is None or any(g.get("amsgrad") for g in groups):
            return math.nan, f"{name}: groups differ or amsgrad", None, 0.0
        beta1, beta2 = betas
        eps = float(groups[0]["eps"])
        scale = _adam_preconditioner(optimizer, params, beta2, eps)
        return (2 + 2 * beta1) / ((1 - beta1) * lr), f"{name} (2+2b1)/((1-b1)eta), preconditioned", scale, 0.0
    return math.nan, f"no edge known for {name}", None, 0.0


def _adam_preconditioner(optimizer: torch.optim.Optimizer, params: list[Tensor], beta2: float,
                         eps: float) -> Tensor:
    """P^-1/2 on flat params, P = sqrt(v_hat) + eps with this step's second moment:
    v = beta2 v_prev + (1 - beta2) g^2, bias-corrected by 1 - beta2^(t+1)."""
    parts = []
    for p in params:
        state = optimizer.state.get(p, {})
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        g2 = grad.detach().float().square()
        previous = state.get("exp_avg_sq")
        step = float(state.get("step", 0))
        v = (1 - beta2) * g2 if previous is None else beta2 * previous.float() + (1 - beta2) * g2
        v_hat = v / (1 - beta2 ** (step + 1))
        parts.append((v_hat.sqrt() + eps).rsqrt().reshape(-1))
    return torch.cat(parts)
