"""SGD, momentum, RMSProp and Adam written from their update rules.

With the gradient ``g = grad_w L`` (plus ``weight_decay * w``, the L2 term, when set) and
the learning rate ``eta``:

    SGD        w <- w - eta g
    Momentum   v <- mu v + g,                 w <- w - eta v           (PyTorch; the default)
               v <- mu v + eta g,             w <- w - v               (lecture, lr_in_velocity=True)
    Nesterov   w <- w - eta (g + mu v)        (after the velocity update; PyTorch's form of Nesterov, 1983)
    RMSProp    E <- rho E + (1 - rho) g^2,    w <- w - eta g / (sqrt(E) + eps)          (default)
                                              w <- w - eta g / sqrt(E + eps)            (eps_inside_sqrt)
    Adam       m <- b1 m + (1 - b1) g,        v <- b2 v + (1 - b2) g^2
               m_hat = m / (1 - b1^t),        v_hat = v / (1 - b2^t)
               w <- w - eta m_hat / (sqrt(v_hat) + eps)                                 (default)
               w <- w - eta m_hat / sqrt(v_hat + eps)                                   (eps_inside_sqrt)

References: Polyak, 1964 (momentum); Tieleman & Hinton, COURSERA lecture 6.5, 2012
(RMSProp); Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
arXiv:1412.6980 (Algorithm 1).

The defaults give the same parameters as ``torch.optim.SGD``, ``SGD(momentum=...)``,
``RMSprop`` and ``Adam`` (tested to 1e-6 over 100 steps). Where the lecture's slides differ:

- Momentum: the lecture's ``v <- gamma v + eta g; w <- w - v`` (Sutskever et al.'s form with
  the sign of ``v`` flipped) keeps ``eta`` inside the velocity, PyTorch applies it outside.
  The two agree while ``eta`` is constant (``v_lecture = eta v_torch``) and differ once a
  schedule changes ``eta``: PyTorch rescales the whole accumulated velocity at once, the
  lecture's form only the new gradients. ``lr_in_velocity=True`` selects the lecture's form.
- RMSProp: the slide's ``w <- w - eta / sqrt(E[g^2] + eps)`` lacks the factor ``g`` (without
  it the step would not even depend on the gradient's sign); the code always has it.
  The slide puts ``eps`` inside the square root, PyTorch outside: ``eps_inside_sqrt``.
  ``rho`` is called ``alpha`` here, as in PyTorch, so configs carry over.
- Adam: the slide's ``sqrt(v_hat + eps)`` versus the paper's and PyTorch's
  ``sqrt(v_hat) + eps``: ``eps_inside_sqrt=True``. The two only differ where ``v_hat`` is
  not much larger than ``eps`` (tiny gradients), where the inside form takes smaller steps.
- ``weight_decay`` adds ``weight_decay * w`` to the gradient (an L2 penalty, as PyTorch's
  SGD/RMSprop/Adam do), not AdamW's decoupled decay.

Registered (by :mod:`zoo.optim.factory`) in :data:`zoo.optim.OPTIMIZERS` as ``sgd_ref``, ``momentum_ref``, ``rmsprop_ref``
and ``adam_ref`` (``optim=adam_ref`` on the command line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


Params = Iterable[Tensor] | Iterable[dict[str, Any]]


def _check(name: str, value: float, low: float, high: float = float("inf"), high_open: bool = False) -> None:
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name} must be in {bound}, got {value}")


def _gradient(p: Tensor, weight_decay: float) -> Tensor:
    """``grad_w L + weight_decay * w``: the gradient of the loss plus an L2 penalty."""
    return p.grad + weight_decay * p if weight_decay else p.grad


class _ReferenceOptimizer(Optimizer):
    """Shared ``step``: evaluate the closure, then :meth:`update` every parameter with a gradient."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                self.update(p, _gradient(p, group["weight_decay"]), self.state[p], group)
        return loss

    def update(self, p: Tensor, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Change ``p`` in place by the update rule, given its gradient ``g``, state and group options."""
        raise NotImplementedError


class SGD(_ReferenceOptimizer):
    """Stochastic gradient descent ``w <- w - eta g``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate ``eta``.
        weight_decay: L2 coefficient added to the gradient as ``weight_decay * w``.
    """

    def __init__(self, params: Params, lr: float = 1e-3, weight_decay: float = 0.0):
        _check("lr", lr, 0.0)
        _check("weight_decay", weight_decay, 0.0)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    def update(self, p: Tensor, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        p.sub_(group["lr"] * g)


class Momentum(_ReferenceOptimizer):
    """SGD with (heavy-ball or Nesterov) momentum.

    Args:
        params: parameters or parameter groups.
        lr: learning rate ``eta``.
        momentum: ``mu`` (the lecture's ``gamma``), the fraction of the velocity kept per step.
        nesterov: step with ``g + mu v`` (Nesterov) instead of ``v``.
        weight_decay: L2 coefficient added to the gradient.
        lr_in_velocity: ``False`` (PyTorch): ``v <- mu v + g; w <- w - eta v``.
            ``True`` (lecture): ``v <- mu v + eta g; w <- w - v``. Equal for a constant ``eta``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        lr_in_velocity: bool = False,
    ):
        _check("lr", lr, 0.0)
        _check("momentum", momentum, 0.0, 1.0, high_open=True)
        _check("weight_decay", weight_decay, 0.0)
        defaults = {
            "lr": lr, "momentum": momentum, "nesterov": nesterov,
            "weight_decay": weight_decay, "lr_in_velocity": lr_in_velocity,
        }  # fmt: skip
        super().__init__(params, defaults)

    def update(self, p: Tensor, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, mu = group["lr"], group["momentum"]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p)  # v_0 = 0, so v_1 = g (or eta g)
        v = state["velocity"]
        if group["lr_in_velocity"]:
            v.mul_(mu).add_(lr * g)  # v <- mu v + eta g
            p.sub_(lr * g + mu * v if group["nesterov"] else v)
        else:
            v.mul_(mu).add_(g)  # v <- mu v + g
            p.sub_(lr * (g + mu * v if group["nesterov"] else v))


class RMSProp(_ReferenceOptimizer):
    """RMSProp: divide the gradient by a running root mean square of recent gradients.

    Args:
        params: parameters or parameter groups.
        lr: learning rate ``eta``.
        alpha: decay ``rho`` of the running mean ``E[g^2]``.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 coefficient added to the gradient.
        eps_inside_sqrt: ``False`` (PyTorch): ``g / (sqrt(E) + eps)``; ``True`` (lecture): ``g / sqrt(E + eps)``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        eps_inside_sqrt: bool = False,
    ):
        _check("lr", lr, 0.0)
        _check("alpha", alpha, 0.0, 1.0)
        _check("eps", eps, 0.0)
        _check("weight_decay", weight_decay, 0.0)
        defaults = {
            "lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "eps_inside_sqrt": eps_inside_sqrt,
        }  # fmt: skip
        super().__init__(params, defaults)

    def update(self, p: Tensor, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        rho, eps = group["alpha"], group["eps"]
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p)
        mean_sq = state["square_avg"]
        mean_sq.mul_(rho).add_((1 - rho) * (g * g))  # E[g^2] <- rho E[g^2] + (1 - rho) g^2
        denom = torch.sqrt(mean_sq + eps) if group["eps_inside_sqrt"] else torch.sqrt(mean_sq) + eps
        p.sub_(group["lr"] * g / denom)


class Adam(_ReferenceOptimizer):
    """Adam: momentum on the gradient, RMSProp-style scaling, both bias-corrected.

    Args:
        params: parameters or parameter groups.
        lr: learning rate ``eta``.
        betas: ``(b1, b2)``, decays of the first and second moment estimates.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 coefficient added to the gradient (Adam's, not AdamW's, decay).
        eps_inside_sqrt: ``False`` (paper, PyTorch): ``sqrt(v_hat) + eps``; ``True`` (lecture): ``sqrt(v_hat + eps)``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        eps_inside_sqrt: bool = False,
    ):
        _check("lr", lr, 0.0)
        _check("betas[0]", betas[0], 0.0, 1.0, high_open=True)
        _check("betas[1]", betas[1], 0.0, 1.0, high_open=True)
        _check("eps", eps, 0.0)
        _check("weight_decay", weight_decay, 0.0)
        defaults = {
            "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
            "eps_inside_sqrt": eps_inside_sqrt,
        }  # fmt: skip
        super().__init__(params, defaults)

    def update(self, p: Tensor, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        (b1, b2), eps = group["betas"], group["eps"]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)  # m
            state["exp_avg_sq"] = torch.zeros_like(p)  # v
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m.mul_(b1).add_((1 - b1) * g)  # m <- b1 m + (1 - b1) g
        v.mul_(b2).add_((1 - b2) * g * g)  # v <- b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        denom = torch.sqrt(v_hat + eps) if group["eps_inside_sqrt"] else torch.sqrt(v_hat) + eps
        p.sub_(group["lr"] * m_hat / denom)
