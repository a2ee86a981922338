"""A sweep on an existing Ray cluster: `hydra/launcher=ray_cluster` against a real head node
(`ray start --head`) on loopback, reached through the Ray client with token authentication."""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the Ray launcher: pip install 'rlrun[ray]'")

from helpers import TINY, run_rlrun  # noqa: E402

RAY = Path(sys.executable).with_name("ray")  # the venv's own: its workers import this rlrun


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(head: subprocess.Popen) -> None:
    """`ray start --block` stops its processes on SIGTERM; whatever is left of its own process
    group (it was started in a session of its own) is killed. Never `ray stop`, which stops
    every Ray process of the user on this machine."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait()


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head node on this machine, listening on 127.0.0.1 only, started from its own working
    directory (not the client's), with token authentication as Ray enables it by default.

    Yields (client environment, head's working directory)."""
    client_port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",  # what the client needs as well (README, "Clusters")
        "RAY_AUTH_TOKEN": secrets.token_hex(32),  # the cluster's token; ~/.ray/auth_token is left alone
        # Ray binds every port to the node's address, and on Linux takes the machine's outward
        # address even for --node-ip-address=127.0.0.1; with this (Ray's switch for a single
        # machine) it stays on 127.0.0.1.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    head_dir = tmp_path / "head"
    head_dir.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="rlrun-ray-", dir="/tmp")  # short: Ray's socket paths live below it
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
         f"--ray-client-server-port={client_port}", "--include-dashboard=false", "--dashboard-host=127.0.0.1",
         "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats", "--log-color=false"],
        cwd=head_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output: list[str] = []
    started = threading.Event()

    def read() -> None:  # the whole time: a full pipe would stall the head node
        for line in head.stdout:
            output.append(line)
            if "Ray runtime started" in line:
                started.set()
        started.set()  # it exited

    threading.Thread(target=read, daemon=True).start()
    try:
        started.wait(120)
        log = re.sub(r"\x1b\[[0-9;]*m", "", "".join(output))
        assert "Ray runtime started" in log, log
        assert re.search(r"Local node IP: 127\.0\.0\.1\s", log), f"the head node is not on loopback:\n{log}"
        yield {**env, "RAY_ADDRESS": f"ray://127.0.0.1:{client_port}"}, head_dir
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow(reason="starts a Ray head node (about 10 s), runs 2 jobs on it through the Ray client and stops it: about 35 s")
def test_ray_cluster_preset_runs_a_sweep_on_a_running_cluster_into_the_clients_sweep_dir(ray_head, tmp_path):
    env, head_dir = ray_head
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    result = run_rlrun("train", "-m", "hydra/launcher=ray_cluster", "seed=1,2", *TINY, cwd=client_dir, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep_dir = Path(re.search(r"^sweep done: (.+)$", result.stdout, re.M).group(1))
    assert sweep_dir.is_relative_to(client_dir / "multirun")
    runs = sorted(path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir())
    assert [run.name for run in runs] == ["0_seed=1", "1_seed=2"]
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert (run / ".hydra" / "config.yaml").is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    assert not list(head_dir.iterdir())  # nothing written relative to the head node's directory
    table = run_rlrun("summary", str(sweep_dir), cwd=client_dir)
    assert table.returncode == 0, table.stderr
    assert any("ppo_clip" in line and "2/2" in line for line in table.stdout.splitlines()), table.stdout


def test_ray_cluster_preset_without_an_address_is_refused_in_one_paragraph(tmp_path):
    """No RAY_ADDRESS: refused before anything starts (a local Ray instance would be the wrong
    place for a cluster sweep), with what to set, and no empty sweep directory left."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("rlrun")), "train", "-m", "hydra/launcher=ray_cluster", "seed=1,2", *TINY],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "RAY_ADDRESS" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "multirun").exists()


def test_ray_cluster_preset_takes_the_address_from_the_environment_and_sets_no_object_store(tmp_path):
    result = run_rlrun("train", "hydra/launcher=ray_cluster", "--cfg", "hydra", "-p", "hydra.launcher", "--resolve",
                       cwd=tmp_path, env={"RAY_ADDRESS": "ray://head.example:10001"})
    assert result.returncode == 0, result.stderr
    assert "address: ray://head.example:10001" in result.stdout
    assert "object_store_memory: null" in result.stdout
