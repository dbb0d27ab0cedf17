"""Shared fixtures and helpers: the real recordings under ../shared/data, free ports, node processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    __import__("os").environ.get("SCENEWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
)


def shared_file(relative: str) -> Path:
    """Return a file under the shared data folder, or skip the test when it is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared recording {path} is missing; set SCENEWATCH_SHARED_DATA to its folder")
    return path


@pytest.fixture
def highway_mp4() -> Path:
    return shared_file("video/highway_dashcam_960x540_25fps.mp4")


@pytest.fixture
def urban_gif() -> Path:
    return shared_file("video/urban_dashcam_320x240.gif")


@pytest.fixture
def siren_wav() -> Path:
    return shared_file("audio/siren_44k_stereo.wav")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def scenewatch_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``SCENEWATCH_STATE`` at a file of this test, so parallel runs find only their own graph."""
    path = tmp_path / "state" / "graph.json"
    monkeypatch.setenv("SCENEWATCH_STATE", str(path))
    return path


def node_command(module: str, config: Path) -> list[str]:
    """Return the command that runs one node alone: ``python -m nodes.NAME --config FILE``."""
    return [sys.executable, "-m", module, "--config", str(config)]


def scenewatch_command(*arguments: str) -> list[str]:
    """Return the ``scenewatch`` command line, from the console script beside this Python when installed."""
    script = Path(sys.executable).parent / "scenewatch"
    if script.exists():
        return [str(script), *arguments]
    return [sys.executable, "-m", "pipeline.cli", *arguments]


class LoggedProcess:
    """A subprocess whose stderr lines are kept with their arrival time (``time.monotonic()``)."""

    def __init__(self, command: list[str], **popen: Any) -> None:
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, **popen)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for_line(self, pattern: str, count: int = 1, timeout_s: float = 10.0) -> list[tuple[float, str]]:
        """Return the first ``count`` lines matching ``pattern``, waiting up to ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            matches = [(at, line) for at, line in list(self.lines) if re.search(pattern, line)]
            if len(matches) >= count:
                return matches[:count]
            time.sleep(0.02)
        raise AssertionError(f"{count} lines matching {pattern!r} not logged in {timeout_s} s; log:\n{self.log()}")

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stop(self, timeout_s: float = 5.0) -> float:
        """Send SIGTERM and return the seconds until the process exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout_s)
        self._reader.join(2.0)
        return time.monotonic() - started

    def wait(self, timeout_s: float = 10.0) -> int:
        """Wait for the process to exit and its log to be read; return the exit status."""
        returncode = self.process.wait(timeout_s)
        self._reader.join(2.0)
        return returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5.0)


@pytest.fixture
def nodes() -> Iterator[list[LoggedProcess]]:
    """Processes started by a test; killed at the end if still running."""
    started: list[LoggedProcess] = []
    yield started
    for node in started:
        node.kill()


def write_testpattern_graph(tmp_path: Path, **camera: Any) -> Path:
    """Write a camera (test pattern, 15 fps) plus alerts graph on free ports; ``camera`` overrides node fields."""
    import yaml

    node = {
        "id": "camera",
        "node": "camera",
        "outputs": {"frames": "camera"},
        "params": {"source": "testpattern", "fps": 15, "width": 320, "height": 240},
        "restart": {"policy": "on-failure", "max_restarts": 5, "backoff_s": 0.2},
        **camera,
    }
    graph = {
        "name": "testpattern",
        "topics": {
            "camera": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "policy": "latest"},
            "alerts": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "durability": "transient_local"},
        },
        "nodes": [
            node,
            {"id": "alerts", "node": "alerts", "outputs": {"alerts": "alerts"}, "params": {"ingest": f"tcp://127.0.0.1:{free_port()}"}},
        ],
    }
    path = tmp_path / "testpattern.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path
