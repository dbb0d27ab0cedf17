"""``scenewatch topics`` and ``scenewatch echo`` against a running test-pattern graph.

The graph runs under ``scenewatch run`` with its state file in the test's
own ``SCENEWATCH_STATE``, so the commands find it without ``--config``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LoggedProcess, scenewatch_command, write_testpattern_graph


@pytest.fixture
def running_graph(tmp_path: Path, scenewatch_state: Path, nodes: list[LoggedProcess]) -> LoggedProcess:
    launcher = LoggedProcess(scenewatch_command("run", str(write_testpattern_graph(tmp_path))))
    nodes.append(launcher)
    launcher.wait_for_line(r"node camera \(camera\) started", timeout_s=20.0)
    launcher.wait_for_line(r"node alerts \(alerts\) started", timeout_s=20.0)
    assert scenewatch_state.exists()
    yield launcher
    launcher.process.send_signal(signal.SIGTERM)
    launcher.wait(5.0)


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(scenewatch_command(*arguments), capture_output=True, text=True, timeout=30, env=environment)


@pytest.mark.slow
def test_topics_shows_camera_rate(running_graph: LoggedProcess) -> None:
    result = run_cli("topics", "--duration", "2")

    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if re.search(r"\bcamera\b.*\blatest\b", line))
    cells = [cell.strip() for cell in re.split(r"[│|]", row) if cell.strip()]
    assert cells[:3] == ["camera", "camera", "latest"]
    rate_hz = float(cells[4])
    assert 10.0 <= rate_hz <= 20.0
    assert cells[8] == "0"  # rejected


@pytest.mark.slow
def test_echo_prints_count_headers(running_graph: LoggedProcess) -> None:
    result = run_cli("echo", "camera", "--count", "5", "--timeout", "10")

    assert result.returncode == 0, result.stderr
    headers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(headers) == 5
    assert all(header["topic"] == "camera" and header["kind"] == "frame" for header in headers)
    seqs = [header["seq"] for header in headers]
    assert seqs == sorted(set(seqs))
    assert [header["frame"]["width"] for header in headers] == [320] * 5


@pytest.mark.slow
def test_echo_alert_payload_from_history(running_graph: LoggedProcess) -> None:
    sent = run_cli("alert", "Road work ahead", "--severity", "warning")
    assert sent.returncode == 0, sent.stderr

    result = run_cli("echo", "alerts", "--count", "1", "--payload", "--timeout", "10")

    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["payload"] == "Road work ahead"
    assert record["alert"]["severity"] == "warning"


def test_echo_without_running_graph_exits_2(scenewatch_state: Path) -> None:
    started = time.monotonic()
    result = run_cli("echo", "camera", "--count", "1")

    assert result.returncode == 2
    assert f"no running graph found (state file {scenewatch_state})" in result.stderr
    assert time.monotonic() - started < 10.0


def test_echo_count_zero_rejected_at_parse() -> None:
    result = run_cli("echo", "camera", "--count", "0")

    assert result.returncode == 2
    assert "'0' must be greater than 0" in result.stderr
