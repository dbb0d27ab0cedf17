"""The fusion node in a real graph: summaries on the bus, alerts, ``scenewatch listen``, restart and shutdown.

One ``scenewatch run`` graph serves the whole module: the camera node loops
the highway dashcam video, the alerts node takes ``scenewatch alert``
requests, and the fusion node windows frames and alerts (no audio input) and
publishes summaries. The tests run in file order: the restart test kills the
fusion node and the last test stops the graph.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import yaml

from conftest import LoggedProcess, free_port, scenewatch_command, shared_file
from pipeline.summary import Summary, subscribe

pytestmark = pytest.mark.slow

HOP_NS = 500_000_000
STARTED = r"started node {node} \(\w+\), pid (\d+)"


@dataclass
class Graph:
    config: Path
    summary_endpoint: str
    launcher: LoggedProcess

    def fusion_pids(self, count: int = 1, timeout_s: float = 30.0) -> list[int]:
        pattern = STARTED.format(node="fusion")
        lines = self.launcher.wait_for_line(pattern, count=count, timeout_s=timeout_s)
        return [int(re.search(pattern, line).group(1)) for _, line in lines]


def write_graph(folder: Path, video: Path) -> tuple[Path, str]:
    summary_endpoint = f"tcp://127.0.0.1:{free_port()}"
    graph = {
        "name": "fusion-test",
        "log_level": "INFO",
        "topics": {
            "camera": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "policy": "latest"},
            "alerts": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "durability": "transient_local"},
            "summary": {"endpoint": summary_endpoint, "policy": "all"},
        },
        "nodes": [
            {
                "id": "camera",
                "node": "camera",
                "outputs": {"frames": "camera"},
                "params": {"source": str(video), "loop": True, "fps": 10, "width": 480, "height": 270},
            },
            {"id": "alerts", "node": "alerts", "outputs": {"alerts": "alerts"}, "params": {"ingest": f"tcp://127.0.0.1:{free_port()}"}},
            {
                "id": "fusion",
                "node": "fusion",
                "inputs": {"frames": "camera", "alerts": "alerts"},
                "outputs": {"summary": "summary"},
                "params": {"window": {"length_s": 1.0, "hop_s": 0.5, "allowed_lateness_s": 0.3}},
                "restart": {"policy": "on-failure", "max_restarts": 3, "backoff_s": 0.2},
            },
        ],
    }
    path = folder / "fusion.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path, summary_endpoint


def next_summaries(endpoint: str, count: int, timeout_s: float = 20.0) -> list[Summary]:
    """Subscribe and return the next ``count`` summaries."""
    received: list[Summary] = []
    for summary in subscribe(endpoint, timeout_s=timeout_s):
        received.append(summary)
        if len(received) == count:
            break
    assert len(received) == count, f"{len(received)} of {count} summaries within {timeout_s} s"
    return received


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graph]:
    video = shared_file("video/highway_dashcam_960x540_25fps.mp4")
    folder = tmp_path_factory.mktemp("fusion_graph")
    config, endpoint = write_graph(folder, video)
    environment = dict(os.environ, SCENEWATCH_STATE=str(folder / "state.json"))
    launcher = LoggedProcess(scenewatch_command("run", str(config)), env=environment)
    try:
        launcher.wait_for_line(r"node fusion \(fusion\) started", timeout_s=60)
        next_summaries(endpoint, 1, timeout_s=60)
        yield Graph(config, endpoint, launcher)
    finally:
        launcher.kill()


def test_node_summaries_on_window_grid(graph: Graph) -> None:
    summaries = next_summaries(graph.summary_endpoint, 4)

    assert [b.seq - a.seq for a, b in zip(summaries, summaries[1:])] == [1, 1, 1]
    assert [b.window.end_ns - a.window.end_ns for a, b in zip(summaries, summaries[1:])] == [HOP_NS] * 3
    assert all(s.window.end_ns - s.window.start_ns == 2 * HOP_NS for s in summaries)
    assert all(s.latency_ms is not None and s.latency_ms > 0 for s in summaries)
    assert all(s.counts.get("frames", 0) >= 5 for s in summaries)


def test_node_without_audio_input_not_missing_audio(graph: Graph) -> None:
    summaries = next_summaries(graph.summary_endpoint, 2)

    assert all("missing:audio" not in s.degraded for s in summaries)
    assert all("missing:frames" not in s.degraded for s in summaries)
    assert all(s.loudness_dbfs is None for s in summaries)


def test_alert_cli_gives_construction_zone(graph: Graph) -> None:
    sent_at = time.monotonic()
    result = subprocess.run(
        scenewatch_command("alert", "Road work ahead", "--severity", "warning", "--config", str(graph.config)),
        capture_output=True,
        text=True,
        timeout=30,
    )

    found = None
    for summary in subscribe(graph.summary_endpoint, timeout_s=5.0):
        if summary.has_hazard("construction_zone"):
            found = summary
            break
        if time.monotonic() - sent_at > 5.0:
            break

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("published alert ")
    assert found is not None, f"no construction_zone within 5 s; launcher log:\n{graph.launcher.log()}"
    assert [(a.text, a.severity, a.category) for a in found.active_alerts] == [("Road work ahead", "warning", "construction")]
    assert "onstruction zone ahead" in found.sentence


def test_listen_json_prints_two_lines(graph: Graph) -> None:
    result = subprocess.run(
        scenewatch_command("listen", "--json", "--count", "2", "--timeout", "10", "--config", str(graph.config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    summaries = [Summary.from_json(line) for line in lines]

    assert result.returncode == 0, result.stderr
    assert len(lines) == 2
    assert summaries[1].seq == summaries[0].seq + 1
    assert summaries[1].window.end_ns - summaries[0].window.end_ns == HOP_NS


def test_subscribe_resumes_after_fusion_restart(graph: Graph) -> None:
    [old_pid] = graph.fusion_pids()
    stream = subscribe(graph.summary_endpoint, timeout_s=60.0)
    before = next(stream)

    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    new_pid = graph.fusion_pids(count=2)[1]
    after = next(stream)
    while after.seq >= before.seq:
        # Summaries published before the kill may still be in flight. The
        # restarted node counts seq from 0 again.
        after = next(stream)
    resumed_s = time.monotonic() - killed_at
    stream.close()

    assert new_pid != old_pid
    assert psutil.Process(new_pid).is_running()
    assert after.seq <= 2
    assert after.window.end_ns > before.window.end_ns
    assert after.latency_ms is not None and 0 < after.latency_ms < 2000
    assert resumed_s < 45.0
    assert "node fusion exited (signal SIGKILL); restart 1/3" in graph.launcher.log()


def test_restarted_node_keeps_transient_alert(graph: Graph) -> None:
    summaries = next_summaries(graph.summary_endpoint, 3)

    assert all(s.has_hazard("construction_zone") for s in summaries)
    assert [b.window.end_ns - a.window.end_ns for a, b in zip(summaries, summaries[1:])] == [HOP_NS] * 2


def test_sigterm_stops_graph_quickly(graph: Graph) -> None:
    descendants = psutil.Process(graph.launcher.process.pid).children(recursive=True)

    stop_s = graph.launcher.stop(timeout_s=10.0)
    _, alive = psutil.wait_procs(descendants, timeout=1.0)
    running = [process for process in alive if process.status() != psutil.STATUS_ZOMBIE]

    assert len(descendants) >= 3
    assert stop_s < 2.0
    assert graph.launcher.process.returncode == 0
    assert running == []
