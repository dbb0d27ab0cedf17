"""``scenewatch run``: restarts, shutdown on SIGINT and SIGTERM, given-up nodes and config errors.

Each test runs the launcher as a subprocess on a graph with free ports and
reads node process ids from its log lines (``started node ID (TYPE), pid N``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from conftest import LoggedProcess, free_port, scenewatch_command, write_testpattern_graph

STARTED = r"started node {node} \(\w+\), pid (\d+)"


def start_launcher(config: Path, nodes: list[LoggedProcess]) -> LoggedProcess:
    launcher = LoggedProcess(scenewatch_command("run", str(config)))
    nodes.append(launcher)
    return launcher


def node_pids(launcher: LoggedProcess, node: str, count: int = 1, timeout_s: float = 20.0) -> list[int]:
    lines = launcher.wait_for_line(STARTED.format(node=node), count=count, timeout_s=timeout_s)
    return [int(re.search(STARTED.format(node=node), line).group(1)) for _, line in lines]


@pytest.mark.slow
def test_launcher_restarts_killed_node(tmp_path: Path, nodes: list[LoggedProcess]) -> None:
    launcher = start_launcher(write_testpattern_graph(tmp_path), nodes)
    [old_pid] = node_pids(launcher, "camera")
    [alerts_pid] = node_pids(launcher, "alerts")
    launcher.wait_for_line(r"node camera \(camera\) started")

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    exited = launcher.wait_for_line(r"node camera exited \(signal SIGKILL\); restart 1/5 in 0.20 s")[0]
    restarted_at, _ = launcher.wait_for_line(STARTED.format(node="camera"), count=2)[1]
    new_pid = node_pids(launcher, "camera", count=2)[1]

    assert exited[0] - killed_at < 1.0
    assert 0.2 <= restarted_at - killed_at < 1.5
    assert new_pid != old_pid
    assert psutil.Process(new_pid).ppid() == launcher.process.pid
    assert psutil.pid_exists(alerts_pid)
    assert launcher.process.poll() is None


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_launcher_signal_stops_all_nodes(tmp_path: Path, scenewatch_state: Path, nodes: list[LoggedProcess], signum: int) -> None:
    launcher = start_launcher(write_testpattern_graph(tmp_path), nodes)
    node_pids(launcher, "camera")
    node_pids(launcher, "alerts")
    launcher.wait_for_line(r"node camera \(camera\) started")
    launcher.wait_for_line(r"node alerts \(alerts\) started")
    descendants = psutil.Process(launcher.process.pid).children(recursive=True)
    assert scenewatch_state.exists()

    started = time.monotonic()
    launcher.process.send_signal(signum)
    returncode = launcher.process.wait(5.0)
    stop_s = time.monotonic() - started
    _, alive = psutil.wait_procs(descendants, timeout=1.0)
    # A descendant re-parented to an init that does not reap stays a zombie: it has exited.
    running = [process for process in alive if process.status() != psutil.STATUS_ZOMBIE]

    assert len(descendants) >= 2
    assert stop_s < 2.0
    assert returncode == 0
    assert running == []
    assert not scenewatch_state.exists()


@pytest.mark.slow
@pytest.mark.parametrize("required, exit_status", [(False, 0), (True, 1)], ids=["optional", "required"])
def test_launcher_gives_up_after_max_restarts(tmp_path: Path, nodes: list[LoggedProcess], required: bool, exit_status: int) -> None:
    missing = tmp_path / "missing.mp4"
    config = write_testpattern_graph(
        tmp_path,
        params={"source": str(missing)},
        restart={"policy": "on-failure", "max_restarts": 2, "backoff_s": 0.1, "required": required},
    )

    launcher = start_launcher(config, nodes)
    pids = node_pids(launcher, "camera", count=3)
    given_up = launcher.wait_for_line(r"node camera exited \(exit status 1\) and reached max_restarts=2; giving up")
    if not required:
        # The graph keeps running with the alerts node alone.
        assert launcher.process.poll() is None
        launcher.process.send_signal(signal.SIGTERM)
    returncode = launcher.wait(10.0)

    assert len(set(pids)) == 3
    assert len(given_up) == 1
    assert len(re.findall(STARTED.format(node="camera"), launcher.log())) == 3
    assert returncode == exit_status
    if required:
        assert "node camera is required; stopping the graph" in launcher.log()


def bad_graph(change: str) -> dict[str, Any]:
    """Return a valid one-node graph with one mistake."""
    graph: dict[str, Any] = {
        "topics": {"camera": {"endpoint": f"tcp://127.0.0.1:{free_port()}"}},
        "nodes": [{"id": "camera", "node": "camera", "outputs": {"frames": "camera"}, "params": {"fps": 15}}],
    }
    node = graph["nodes"][0]
    if change == "unknown_key":
        node["colour"] = "red"
    elif change == "negative_fps":
        node["params"]["fps"] = -1
    elif change == "param_type":
        node["params"]["encoding"] = "png"
    elif change == "unknown_topic":
        node["outputs"]["frames"] = "video"
    elif change == "duplicate_id":
        graph["nodes"].append(dict(node, outputs={}))
    elif change == "bad_endpoint":
        graph["topics"]["camera"]["endpoint"] = "udp://127.0.0.1:5550"
    return graph


CONFIG_ERRORS = [
    ("unknown_key", "nodes[0].colour: unknown key"),
    ("negative_fps", "nodes[0].params.fps: Input should be greater than 0"),
    ("param_type", "nodes[0].params.encoding: Input should be 'jpeg', 'bgr8' or 'rgb8'"),
    ("unknown_topic", "nodes[0] (camera).outputs.frames: topic 'video' is not declared under 'topics'"),
    ("duplicate_id", "nodes[1].id: node id 'camera' is already used by nodes[0]"),
    ("bad_endpoint", "topics.camera.endpoint:"),
]


@pytest.mark.parametrize("change, expected", CONFIG_ERRORS, ids=[change for change, _ in CONFIG_ERRORS])
def test_run_rejects_invalid_config(tmp_path: Path, change: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(bad_graph(change)))

    result = subprocess.run(scenewatch_command("run", str(config)), capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert result.stderr.startswith(f"scenewatch run: {config}: ")
    assert expected in result.stderr


def test_run_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.yaml"

    result = subprocess.run(scenewatch_command("run", str(missing)), capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert f"config file {missing} not found" in result.stderr
