"""Adam and gradient-norm clipping for a group of R runs trained side by side.

Each run is an independent optimisation problem: its own learning rate, gradient-norm limit,
step count and Adam moments, and a run that is not `active` in a step (stopped early by
target_kl, finished, failed) does not move at all, nor do its moments. The arithmetic per run
is `torch.optim.Adam`'s (bias-corrected moments, eps added outside the square root) and
`torch.nn.utils.clip_grad_norm_`'s; tests/test_optim.py checks every run of a group against
torch's, run by run.

Why not torch's own: neither takes per-run learning rates, clipping or masks, and a loop of R
optimizers would cost R times the fixed per-call cost that batching the runs removes. Here
the parameters of a module live in one (R, P) tensor (a `ParameterBank`) that they are views
of, so a step is a few whole-tensor operations whatever R and the number of layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ParameterBank:
    """The parameters of `module`, each of shape (R, ...), moved into one (R, P) tensor,
    `data`, that they are views of: updating `data` updates the module."""

    def __init__(self, module: nn.Module):
        named = [(name, param) for name, param in module.named_parameters() if param.requires_grad]
        self.num_runs = named[0][1].shape[0]
        self.data = torch.cat([param.detach().reshape(self.num_runs, -1) for _, param in named], dim=1)
        self.params: list[nn.Parameter] = []
        offset = 0
        for name, param in named:
            size = param[0].numel()
            view = nn.Parameter(self.data[:, offset:offset + size].view(param.shape))
            owner_name, _, attribute = name.rpartition(".")
            setattr(module.get_submodule(owner_name), attribute, view)
            self.params.append(view)
            offset += size

    def grads(self) -> torch.Tensor | None:
        """The gradients as one (R, P) tensor (zeros where a parameter has none), or None when no
        parameter of the bank has a gradient (it took no part in the loss)."""
        if all(param.grad is None for param in self.params):
            return None
        return torch.cat([
            (param.grad if param.grad is not None else torch.zeros_like(param)).reshape(self.num_runs, -1)
            for param in self.params
        ], dim=1)

    def split(self, flat: torch.Tensor, run: int) -> list[torch.Tensor]:
        """Row `run` of an (R, P) tensor, cut into the bank's parameters' shapes."""
        sizes = [param[0].numel() for param in self.params]
        return [part.view(param.shape[1:]).clone() for part, param in zip(flat[run].split(sizes), self.params)]


class Adam:
    """Adam (Kingma & Ba, 2015) on the parameters of `modules`, R runs side by side.

    Each module's parameters become one `ParameterBank`; a bank whose parameters got no
    gradient (the critic during a policy-only step) is left as it is, moments and step count
    too, as torch.optim leaves a parameter without a gradient.
    """

    def __init__(self, modules: list[nn.Module], lr: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.banks = [ParameterBank(module) for module in modules]
        self.lr = lr  # (R,)
        self.betas, self.eps = betas, eps
        num_runs = self.banks[0].num_runs
        self.steps = [np.zeros((num_runs, 1)) for _ in self.banks]  # float64, as torch's bias corrections
        self.exp_avgs = [torch.zeros_like(bank.data) for bank in self.banks]
        self.exp_avg_sqs = [torch.zeros_like(bank.data) for bank in self.banks]

    @property
    def params(self) -> list[nn.Parameter]:
        return [param for bank in self.banks for param in bank.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self, max_norm: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Clip each run's gradient to its global L2 norm `max_norm[r]` (inf: never) and take
        one Adam step for the runs where `active` (bool, (R,)); return each run's gradient norm
        before clipping, (R,)."""
        grads = [bank.grads() for bank in self.banks]
        stepped = [i for i, grad in enumerate(grads) if grad is not None]
        if not stepped:
            return torch.zeros(len(active))
        norms = torch.stack([grads[i].pow(2).sum(1) for i in stepped]).sum(0).sqrt()
        clip = (max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)
        moving = active.numpy()[:, None]
        for i in stepped:
            self._adam(i, grads[i].mul_(clip), moving)
        return norms

    def _adam(self, i: int, grad: torch.Tensor, moving: np.ndarray) -> None:
        """One step of bank `i` for the runs where `moving` ((R, 1) bool); the others stay as
        they are, bit for bit (their updates are scaled by 0)."""
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq, steps = self.exp_avgs[i], self.exp_avg_sqs[i], self.steps[i]
        steps += moving
        if moving.all():
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        else:
            moves = torch.from_numpy(moving.astype(np.float32))
            grad = torch.where(moves > 0, grad, 0.0)  # scaled by 0 below, it must be finite
            exp_avg.lerp_(grad, (1 - beta1) * moves)
            exp_avg_sq.mul_(1 + (beta2 - 1) * moves).addcmul_(grad, grad * moves, value=1 - beta2)
        # Per-run scalars in float64 numpy, as torch computes them in Python floats (0.999 ** t
        # in float32 is off by 1e-5 relative), and at a fraction of a torch call's cost. A run
        # that never stepped: the corrections of step 1, times 0.
        counted = np.maximum(steps, 1)
        step_size = torch.from_numpy((self.lr.numpy()[:, None] * moving / (1 - beta1**counted)).astype(np.float32))
        bias_correction2_sqrt = torch.from_numpy(np.sqrt(1 - beta2**counted).astype(np.float32))
        denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(self.eps)
        self.banks[i].data.sub_(exp_avg / denom * step_size)

    def run_state_dict(self, run: int) -> dict[str, Any]:
        """Run `run`'s state, per parameter, in the parameters' own shapes."""
        return {
            "steps": [int(steps[run, 0]) for steps, bank in zip(self.steps, self.banks) for _ in bank.params],
            "exp_avgs": [part for avgs, bank in zip(self.exp_avgs, self.banks) for part in bank.split(avgs, run)],
            "exp_avg_sqs": [part for sqs, bank in zip(self.exp_avg_sqs, self.banks) for part in bank.split(sqs, run)],
        }

    def load_run_state_dict(self, run: int, state: dict[str, Any]) -> None:
        count = sum(len(bank.params) for bank in self.banks)
        if not len(state["steps"]) == len(state["exp_avgs"]) == len(state["exp_avg_sqs"]) == count:
            raise ValueError(f"Adam state for {len(state['steps'])} parameters, this optimizer has {count}")
        first = 0
        for bank, steps, avgs, sqs in zip(self.banks, self.steps, self.exp_avgs, self.exp_avg_sqs):
            last = first + len(bank.params)
            steps[run] = state["steps"][first]
            avgs[run] = torch.cat([tensor.reshape(-1) for tensor in state["exp_avgs"][first:last]])
            sqs[run] = torch.cat([tensor.reshape(-1) for tensor in state["exp_avg_sqs"][first:last]])
            first = last
