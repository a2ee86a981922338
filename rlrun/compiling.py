"""torch.compile for the update's hot path, and when a run uses it.

Why: a PPO minibatch step of 64x64 networks on a CPU is mostly per-operation overhead (the
dispatcher and autograd's bookkeeping for about a hundred tiny kernels, forward, backward and
Adam), not arithmetic. `CompiledStep` makes the whole step one graph: the gradient of the
algorithm's own `minibatch_losses` by `torch.func.grad` (traced, so the graph holds the
backward pass and no autograd tape is kept) and the same `adam_update`, which inductor fuses
into a few generated C++ kernels. The arithmetic is the eager step's, rounded in another order.
Compiling costs seconds to tens of seconds once per process (a few seconds when inductor's
on-disk cache already holds the graphs), so it pays only for long runs: docs/benchmarks.md
has both figures.

`torch_compile` in the config: true or false force it; null (the default) compiles when a run
takes at least `AUTO_MIN_GRADIENT_STEPS` minibatch gradient steps and a C++ compiler is there.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from rlrun.errors import RLRunError
from rlrun.optim import adam_update
from rlrun.rollout import Batch

if TYPE_CHECKING:
    from rlrun.algos.base import Algorithm

# At about 2 ms saved per step, 20k steps save about 40 s: more than a cold compile costs.
AUTO_MIN_GRADIENT_STEPS = 20_000


class CompiledStep:
    """`Algorithm.minibatch_step` for `algorithm`, compiled: called as it is, same results up
    to rounding. Shapes are fixed for a run (minibatches are padded to one size), so the graph
    is static; it is traced twice at most, for a step where every run moves and one where some
    do not."""

    def __init__(self, algorithm: Algorithm):
        self.algorithm = algorithm
        self.losses = _Losses(algorithm)
        names = {param: name for name, param in self.losses.named_parameters()}
        optimizer = algorithm.optimizer
        # Each bank's parameters in the order of its (R, P) tensor.
        self.bank_names = [[names[param] for param in bank.params] for bank in optimizer.banks]
        # Detached aliases of the parameters: the step reads them as plain inputs, and Adam's
        # in-place updates of the banks show through them.
        self.params = {name: param.detach() for name, param in self.losses.named_parameters()}
        self.step = torch.compile(self._step, dynamic=False)

    def __call__(self, minibatch: Batch, moving: torch.Tensor) -> dict[str, torch.Tensor]:
        banks = range(len(self.bank_names))
        step_sizes, bias_corrections2, moves = self.algorithm.optimizer.count_step(moving, list(banks))
        with torch.no_grad():  # torch.func.grad differentiates inside it all the same
            return self.step(minibatch, self.params, step_sizes, bias_corrections2, moves)

    def _step(self, minibatch, params, step_sizes, bias_corrections2, moves):
        grads, (_, stats) = grad_and_value(self._total_loss, has_aux=True)(params, minibatch)
        flat_grads = [torch.cat([grads[name].flatten(1) for name in names], dim=1) for names in self.bank_names]
        optimizer = self.algorithm.optimizer
        stats["grad_norm"] = adam_update(
            [bank.data for bank in optimizer.banks], flat_grads, optimizer.exp_avgs, optimizer.exp_avg_sqs,
            step_sizes, bias_corrections2, self.algorithm.max_grad_norm, moves, optimizer.betas, optimizer.eps,
        )
        return stats

    def _total_loss(self, params, minibatch):
        losses, stats = functional_call(self.losses, params, (minibatch,))
        return losses.sum(), stats  # runs share no parameter: each gets its own loss's gradient


class _Losses(nn.Module):
    """The algorithm's `minibatch_losses` as a module over the policy's parameters, so that
    `functional_call` can evaluate it at given parameters."""

    def __init__(self, algorithm: Algorithm):
        super().__init__()
        self.policy = algorithm.policy
        self.minibatch_losses = algorithm.minibatch_losses

    def forward(self, minibatch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.minibatch_losses(minibatch)


def has_cpp_compiler() -> bool:
    """Inductor generates C++ for the CPU and builds it with the compiler in CXX, or c++/g++/clang++."""
    names = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    return any(name and shutil.which(name) for name in names)


def should_compile(setting: bool | None, gradient_steps: int | None) -> bool:
    """Whether a run with this `torch_compile` setting, taking `gradient_steps` minibatch steps
    in all (None: an algorithm that is not compiled automatically), compiles its update."""
    if setting is False:
        return False
    if setting is True:
        if not has_cpp_compiler():
            raise RLRunError(
                "torch_compile=true needs a C++ compiler (torch.compile builds C++ kernels for the "
                "CPU), and none was found (CXX, c++, g++, clang++). Install one (e.g. `apt install "
                "g++`), or leave torch_compile=null to compile only where it pays and a compiler exists."
            )
        return True
    return gradient_steps is not None and gradient_steps >= AUTO_MIN_GRADIENT_STEPS and has_cpp_compiler()
