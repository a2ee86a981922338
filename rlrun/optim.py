"""Adam, computed as `torch.optim.Adam(foreach=True)` computes it.

Why not torch.optim itself: the first use of any `torch.optim` optimizer imports
`torch._dynamo` (its methods are wrapped in `torch._disable_dynamo`), which costs about 1.1 s
on a 2-core CPU, a third of the whole budget of a CartPole run. This module imports nothing
beyond torch; tests/test_optim.py checks it step by step against torch.optim.Adam.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


class Adam:
    """Adam (Kingma & Ba, 2015) with bias-corrected moments and eps added outside the square
    root, on one group of parameters that all receive a gradient at every step."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [param for param in params if param.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.steps = 0
        self.exp_avgs = [torch.zeros_like(param) for param in self.params]
        self.exp_avg_sqs = [torch.zeros_like(param) for param in self.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.steps)
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        grads = [param.grad for param in self.params]
        # One multi-tensor kernel per operation for all parameters, as torch.optim's foreach
        # path does: a small network's step is dominated by per-call overhead.
        torch._foreach_lerp_(self.exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sqs, beta2)
        torch._foreach_addcmul_(self.exp_avg_sqs, grads, grads, 1 - beta2)
        denoms = torch._foreach_sqrt(self.exp_avg_sqs)
        torch._foreach_div_(denoms, bias_correction2_sqrt)
        torch._foreach_add_(denoms, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avgs, denoms, -step_size)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "exp_avgs": self.exp_avgs, "exp_avg_sqs": self.exp_avg_sqs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        for mine, saved in zip(self.exp_avgs + self.exp_avg_sqs, state["exp_avgs"] + state["exp_avg_sqs"]):
            mine.copy_(saved)
