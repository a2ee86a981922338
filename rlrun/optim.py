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
        step_sizes, bias_corrections2, moves = self.count_step(active, stepped)
        return adam_update(
            [self.banks[i].data for i in stepped], [grads[i] for i in stepped], [self.exp_avgs[i] for i in stepped],
            [self.exp_avg_sqs[i] for i in stepped], step_sizes, bias_corrections2, max_norm, moves, self.betas, self.eps,
        )

    def count_step(self, active: torch.Tensor, banks: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Count a step of `banks` for the `active` runs; return `adam_update`'s per-run inputs:
        for each bank the step sizes lr / (1 - beta1^t), 0 for a run that does not move, and
        sqrt(1 - beta2^t), each (R, 1); and `moves`, None when every run moves.

        In float64 numpy, as torch computes them in Python floats (0.999 ** t in float32 is off
        by 1e-5 relative), and at a fraction of a torch call's cost. A run that never stepped:
        the corrections of step 1, times 0."""
        beta1, beta2 = self.betas
        moving = active.numpy()[:, None]
        step_sizes, bias_corrections2 = [], []
        for i in banks:
            self.steps[i] += moving
            counted = np.maximum(self.steps[i], 1)
            step_sizes.append(torch.from_numpy((self.lr.numpy()[:, None] * moving / (1 - beta1**counted)).astype(np.float32)))
            bias_corrections2.append(torch.from_numpy(np.sqrt(1 - beta2**counted).astype(np.float32)))
        return step_sizes, bias_corrections2, None if moving.all() else torch.from_numpy(moving.astype(np.float32))

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


def adam_update(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
    step_sizes: list[torch.Tensor], bias_corrections2: list[torch.Tensor], max_norm: torch.Tensor,
    moves: torch.Tensor | None, betas: tuple[float, float], eps: float,
) -> torch.Tensor:
    """Clip the (R, P) `grads` of the banks together, per run, to `max_norm` and update the banks'
    `params` and moments in place; `moves` (R, 1) is 1 for the runs that move, None when all do
    (the others stay as they are, bit for bit: their updates are scaled by 0). Returns the
    gradient norms before clipping, (R,)."""
    beta1, beta2 = betas
    norms = torch.stack([grad.pow(2).sum(1) for grad in grads]).sum(0).sqrt()
    clip = (max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)
    for param, grad, exp_avg, exp_avg_sq, step_size, bias_correction2 in zip(params, grads, exp_avgs, exp_avg_sqs, step_sizes, bias_corrections2):
        grad = grad * clip
        if moves is None:
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        else:
            grad = torch.where(moves > 0, grad, 0.0)  # scaled by 0 below, it must be finite
            exp_avg.lerp_(grad, (1 - beta1) * moves)
            exp_avg_sq.mul_(1 + (beta2 - 1) * moves).addcmul_(grad, grad * moves, value=1 - beta2)
        denom = exp_avg_sq.sqrt().div_(bias_correction2).add_(eps)
        param.sub_(exp_avg / denom * step_size)
    return norms
