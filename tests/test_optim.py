import subprocess
import sys

import pytest
import torch
from torch import nn

from rlrun.optim import Adam


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


@pytest.mark.parametrize("lr, eps", [(1e-3, 1e-5), (3e-2, 1e-8)])
def test_adam_matches_torch_optim_adam_step_for_step(lr, eps):
    ours, theirs = _net(), _net()
    optimizer, reference = Adam(ours.parameters(), lr=lr, eps=eps), torch.optim.Adam(theirs.parameters(), lr=lr, eps=eps, foreach=True)
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
    for mine, ref in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine, ref, rtol=0, atol=1e-7)
    assert optimizer.steps == [40, 40, 60, 60]


def test_adam_state_round_trips():
    net = _net()
    optimizer = Adam(net.parameters(), lr=1e-2)
    net(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    restored = Adam(_net().parameters(), lr=1e-2)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.steps == [1, 1, 1, 1]
    for mine, saved in zip(restored.exp_avg_sqs, optimizer.exp_avg_sqs):
        assert torch.equal(mine, saved) and mine is not saved


def test_training_does_not_import_torch_dynamo():
    """torch.optim imports torch._dynamo on first use (about a second); rlrun must not."""
    code = (
        "import sys, tempfile\n"
        "from rlrun.cli import main\n"
        "sys.argv = ['rlrun', 'train', 'total_timesteps=256', 'algo.rollout_steps=16', 'eval_episodes=1', "
        "f'hydra.run.dir={tempfile.mkdtemp()}']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' in sys.modules and 'torch._dynamo' not in sys.modules, 'dynamo imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
