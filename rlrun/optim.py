"""Adam and gradient-norm clipping, computed as `torch.optim.Adam` and
`torch.nn.utils.clip_grad_norm_` compute them.

Why not torch's own: the first use of any `torch.optim` optimizer imports `torch._dynamo`
(its methods are wrapped in `torch._disable_dynamo`), a large share of a short CartPole run's
start-up; and torch's clipping sorts the gradients by device and dtype on every call, which
for a small network costs as much as the clipping itself.

Two paths, chosen once at import (`FAST_KERNELS`):
- fast: torch's private kernels, `torch._fused_adam_` (every parameter in one call) and the
  `torch._foreach_*` ops, as `torch.optim.Adam(fused=True)` and torch's clipping call them;
- fallback, where this torch lacks those kernels or calls them differently: public ops one
  parameter at a time, with the arithmetic of `torch.optim.Adam(foreach=False)` and of
  `clip_grad_norm_(foreach=False)`.
The private kernels are not public API; torch only promises the optimizer built on them, so
they are tried on a tiny tensor here, and anything other than the expected result selects the
fallback. This module imports nothing beyond torch; tests/test_optim.py checks both paths bit
for bit against torch's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def _fast_kernels_work() -> bool:
    """Whether the private kernels exist, take the arguments used below and compute one Adam
    step as expected (first step, gradient 1, lr 1: the parameter moves by -1/(1 + eps))."""
    try:
        param, grad, steps = [torch.zeros(1)], [torch.ones(1)], [torch.zeros(())]
        torch._foreach_add_(steps, 1)
        torch._foreach_mul_(grad, torch.ones(()))
        norms = torch._foreach_norm(grad)
        torch._fused_adam_(
            param, grad, [torch.zeros(1)], [torch.zeros(1)], [], steps,
            lr=1.0, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
        )
        return abs(param[0].item() + 1.0) < 1e-6 and norms[0].item() == 1.0 and steps[0].item() == 1.0
    except (AttributeError, TypeError, RuntimeError, NotImplementedError, IndexError):
        return False


FAST_KERNELS = _fast_kernels_work()


class Adam:
    """Adam (Kingma & Ba, 2015) with bias-corrected moments and eps added outside the square
    root, on one group of parameters. With `fused` (the default where `FAST_KERNELS`) it is
    `torch.optim.Adam(fused=True)`: one call for every parameter, where torch's default
    foreach path takes seven (and rounds differently in the last bit); without, it is
    `torch.optim.Adam(foreach=False)`. As in torch.optim, a parameter with no gradient (the
    critic during a policy-only step, say) is left as it is, its moments and step count too."""

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        fused: bool | None = None,
    ):
        self.params = [param for param in params if param.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.fused = FAST_KERNELS if fused is None else fused
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]  # as torch keeps them
        self.exp_avgs = [torch.zeros_like(param) for param in self.params]
        self.exp_avg_sqs = [torch.zeros_like(param) for param in self.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        active = [i for i, param in enumerate(self.params) if param.grad is not None]
        if not active:
            return
        beta1, beta2 = self.betas
        if self.fused:
            steps = [self.steps[i] for i in active]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                [self.params[i] for i in active], [self.params[i].grad for i in active],
                [self.exp_avgs[i] for i in active], [self.exp_avg_sqs[i] for i in active], [], steps,
                lr=self.lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False,
            )
            return
        # torch.optim.adam._single_tensor_adam, operation for operation.
        for i in active:
            param, grad, exp_avg, exp_avg_sq, step_t = (
                self.params[i], self.params[i].grad, self.exp_avgs[i], self.exp_avg_sqs[i], self.steps[i])
            step_t += 1
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = step_t.item()
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-(self.lr / bias_correction1))

    def state_dict(self) -> dict[str, Any]:
        return {"steps": [int(step) for step in self.steps], "exp_avgs": self.exp_avgs, "exp_avg_sqs": self.exp_avg_sqs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not len(state["steps"]) == len(state["exp_avgs"]) == len(state["exp_avg_sqs"]) == len(self.params):
            raise ValueError(f"Adam state for {len(state['steps'])} parameters, this optimizer has {len(self.params)}")
        for step, saved_step in zip(self.steps, state["steps"]):
            step.fill_(saved_step)
        for mine, saved in zip(self.exp_avgs + self.exp_avg_sqs, state["exp_avgs"] + state["exp_avg_sqs"], strict=True):
            mine.copy_(saved)


@torch.no_grad()
def clip_grad_norm_(params: list[torch.Tensor], max_norm: float, foreach: bool | None = None) -> torch.Tensor:
    """Scale the gradients of `params` so that their global L2 norm is at most `max_norm`;
    return the norm before scaling. Parameters without a gradient are skipped. `foreach`
    (default: `FAST_KERNELS`) uses torch's foreach kernels, else one call per gradient."""
    grads = [param.grad for param in params if param.grad is not None]
    if not grads:
        return torch.zeros(())
    foreach = FAST_KERNELS if foreach is None else foreach
    norms = torch._foreach_norm(grads) if foreach else [torch.linalg.vector_norm(grad) for grad in grads]
    total_norm = torch.linalg.vector_norm(torch.stack(norms))
    clip_coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
    if foreach:
        torch._foreach_mul_(grads, clip_coef)
    else:
        for grad in grads:
            grad.mul_(clip_coef)
    return total_norm
