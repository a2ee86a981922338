import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from rlrun.optim import FAST_KERNELS, Adam, clip_grad_norm_

# Each test runs both paths: torch's private fused/foreach kernels (where this torch has them)
# and the fallback on public ops that takes over where it does not.
needs_fast = pytest.mark.skipif(not FAST_KERNELS, reason="this torch lacks the private kernels the fast path uses")
PATHS = [pytest.param(True, id="fast", marks=needs_fast), pytest.param(False, id="fallback")]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize("lr, eps", [(1e-3, 1e-5), (3e-2, 1e-8)])
def test_adam_matches_torch_optim_adam_bit_for_bit(lr, eps, fast):
    """The fast path against torch's fused Adam, the fallback against its single-tensor one."""
    ours, theirs = _net(), _net()
    optimizer = Adam(ours.parameters(), lr=lr, eps=eps, fused=fast)
    reference = torch.optim.Adam(theirs.parameters(), lr=lr, eps=eps, **({"fused": True} if fast else {"foreach": False}))
    for step in range(60):
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(step))
        for net, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            # Every third step trains the last layer only: the first one gets no gradient
            # and must keep its moments and step count, as pg_baseline's value steps need.
            hidden = net[1](net[0](x))
            net[2](hidden.detach() if step % 3 == 2 else hidden).pow(2).mean().backward()
            opt.step()
        if step == 25:  # a changed learning rate is used from the next step on
            optimizer.lr = reference.param_groups[0]["lr"] = lr / 3
    for i, (mine, ref) in enumerate(zip(ours.parameters(), theirs.parameters())):
        state = reference.state[ref]
        assert torch.equal(mine, ref)
        assert torch.equal(optimizer.exp_avgs[i], state["exp_avg"]) and torch.equal(optimizer.exp_avg_sqs[i], state["exp_avg_sq"])
        assert torch.equal(optimizer.steps[i], state["step"])
    assert optimizer.state_dict()["steps"] == [40, 40, 60, 60]


@pytest.mark.parametrize("foreach", PATHS)
@pytest.mark.parametrize("max_norm", [0.05, 1e3, math.inf])
def test_clip_grad_norm_matches_torch_bit_for_bit(max_norm, foreach):
    ours, theirs = _net(), _net()
    for net in (ours, theirs):
        net(torch.randn(32, 4, generator=torch.Generator().manual_seed(1))).pow(2).mean().backward()
    ours[0].bias.grad = None  # skipped, as torch skips it
    theirs[0].bias.grad = None
    norm = clip_grad_norm_(list(ours.parameters()), max_norm, foreach=foreach)
    reference = nn.utils.clip_grad_norm_(theirs.parameters(), max_norm, foreach=foreach)
    assert torch.equal(norm, reference)
    assert (norm > 0.05) and (max_norm > 1 or norm > max_norm)  # the small bound really clips
    for mine, ref in zip(ours.parameters(), theirs.parameters()):
        assert (mine.grad is None and ref.grad is None) or torch.equal(mine.grad, ref.grad)


@pytest.mark.parametrize("fast", PATHS)
def test_a_restored_adam_steps_exactly_like_the_original(fast):
    def step(net, optimizer, seed):
        optimizer.zero_grad()
        net(torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))).pow(2).sum().backward()
        optimizer.step()

    original = _net()
    optimizer = Adam(original.parameters(), lr=1e-2, fused=fast)
    for seed in range(3):
        step(original, optimizer, seed)
    copy = _net()
    copy.load_state_dict(original.state_dict())
    restored = Adam(copy.parameters(), lr=1e-2, fused=fast)
    restored.load_state_dict(optimizer.state_dict())
    for seed in range(3, 6):
        step(original, optimizer, seed)
        step(copy, restored, seed)
    assert all(torch.equal(a, b) for a, b in zip(original.parameters(), copy.parameters()))
    with pytest.raises(ValueError, match="state for 4 parameters, this optimizer has 2"):
        Adam(nn.Linear(4, 2).parameters(), lr=1e-2).load_state_dict(optimizer.state_dict())


@pytest.mark.parametrize("fast", PATHS)
def test_training_does_not_import_torch_dynamo(tmp_path, fast):
    """torch.optim imports torch._dynamo on first use (about a second); a PPO run must not,
    on either path."""
    code = (
        "import sys\n"
        "import rlrun.optim\n"
        f"rlrun.optim.FAST_KERNELS = {fast}\n"
        "from rlrun.cli import main\n"
        f"sys.argv = ['rlrun', 'train', 'total_timesteps=256', 'env.num_envs=8', 'algo.rollout_steps=16', "
        f"'eval_episodes=1', 'hydra.run.dir={tmp_path}']\n"
        "try:\n    main()\nexcept SystemExit as exit_:\n    assert not exit_.code, exit_.code\n"
        "assert 'torch' in sys.modules and 'torch._dynamo' not in sys.modules, 'dynamo imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("fast", PATHS)
def test_a_step_without_gradients_changes_nothing(fast):
    """As torch's: no gradient at all is a no-op for Adam and a zero norm for clipping."""
    net = _net()
    before = [param.clone() for param in net.parameters()]
    optimizer = Adam(net.parameters(), lr=1e-2, fused=fast)
    optimizer.step()
    assert torch.equal(clip_grad_norm_(list(net.parameters()), 1.0, foreach=fast), torch.zeros(()))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert optimizer.state_dict()["steps"] == [0, 0, 0, 0]


def test_adam_and_clipping_do_not_import_torch_dynamo():
    """The optimizer alone, both paths, in a fresh interpreter: nothing may pull in torch._dynamo."""
    code = (
        "import sys\n"
        "import torch\n"
        "from rlrun.optim import Adam, clip_grad_norm_\n"
        "net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))\n"
        "for fast in (True, False):\n"
        "    optimizer = Adam(net.parameters(), lr=1e-3, fused=fast)\n"
        "    for _ in range(2):\n"
        "        optimizer.zero_grad()\n"
        "        net(torch.randn(8, 4)).pow(2).mean().backward()\n"
        "        clip_grad_norm_(optimizer.params, 0.5, foreach=fast)\n"
        "        optimizer.step()\n"
        "assert 'torch._dynamo' not in sys.modules, 'dynamo imported'\n"
    )
    if not FAST_KERNELS:
        code = code.replace("(True, False)", "(False,)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_fast_path_is_found_on_the_torch_versions_ci_checks():
    """CI's two torch versions (the lowest supported and the pinned one) have the private
    kernels: there a silent fallback would only show as a slower run, so it fails here."""
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version not in {(2, 4), (2, 13)}:
        pytest.skip(f"torch {torch.__version__} is not one of the versions CI checks")
    assert FAST_KERNELS
