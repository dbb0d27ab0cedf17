"""Alerts node in its own process (``python -m nodes.alerts``) with all three inputs.

Alerts come from ``scenewatch alert`` (a CLI subprocess sending to the node's
ingest endpoint), a JSONL file the node tails, and the node's stdin. A real
Subscriber on the durable ``alerts`` topic checks that each arrives once and
in order.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import LoggedProcess, free_port, node_command, scenewatch_command
from pipeline.messages import Alert
from pipeline.transport import Subscriber, TopicSpec

pytestmark = pytest.mark.slow


def write_alerts_graph(tmp_path: Path, **params: Any) -> tuple[Path, TopicSpec, str]:
    """Write a graph with one alerts node; return its path, the alerts topic and the ingest endpoint."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ingest = f"tcp://127.0.0.1:{free_port()}"
    topic = {"endpoint": endpoint, "policy": "all", "durability": "transient_local", "history": 64}
    graph = {
        "name": "alerts-test",
        "topics": {"alerts": topic},
        "nodes": [
            {
                "id": "alerts",
                "node": "alerts",
                "outputs": {"alerts": "alerts"},
                "params": {"ingest": ingest, "poll_interval_s": 0.05, **params},
            }
        ],
    }
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path, TopicSpec(name="alerts", **topic), ingest


def start_alerts_node(config: Path, **popen: Any) -> LoggedProcess:
    node = LoggedProcess(node_command("nodes.alerts", config), **popen)
    node.wait_for_line(r"alerts: accepting alerts on", timeout_s=20.0)
    return node


def cli_alert(ingest: str, text: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        scenewatch_command("alert", "--endpoint", ingest, *options, text),
        capture_output=True,
        text=True,
        timeout=30,
    )


def receive_alerts(subscriber: Subscriber, count: int, timeout_s: float = 10.0) -> list[Alert]:
    alerts = []
    while len(alerts) < count:
        message = subscriber.recv(timeout_s=timeout_s)
        assert message is not None, f"only {len(alerts)} of {count} alerts arrived: {[a.text for a in alerts]}"
        alerts.append(message)
    return alerts


def append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def test_alerts_three_inputs_once_in_order(tmp_path: Path, nodes: list[LoggedProcess]) -> None:
    watch_file = tmp_path / "alerts.jsonl"
    config, spec, ingest = write_alerts_graph(tmp_path, watch_file=str(watch_file), stdin=True)
    node = start_alerts_node(config, stdin=subprocess.PIPE)
    nodes.append(node)

    before = cli_alert(ingest, "Road work ahead", "--severity", "warning", "--category", "construction")
    assert before.returncode == 0, before.stderr
    assert "(seq 0)" in before.stdout
    with Subscriber([spec]) as subscriber:
        received = receive_alerts(subscriber, 1)
        append_line(watch_file, json.dumps({"text": "Black ice on the overpass", "severity": "critical"}))
        received += receive_alerts(subscriber, 1)
        node.process.stdin.write("Debris in the left lane\n")
        node.process.stdin.flush()
        received += receive_alerts(subscriber, 1)
        after = cli_alert(ingest, "Ambulance approaching")
        received += receive_alerts(subscriber, 1)
        extra = subscriber.recv(timeout_s=0.5)
        stats = subscriber.stats["alerts"]

    assert after.returncode == 0, after.stderr
    assert [alert.text for alert in received] == [
        "Road work ahead",
        "Black ice on the overpass",
        "Debris in the left lane",
        "Ambulance approaching",
    ]
    assert [alert.header.seq for alert in received] == [0, 1, 2, 3]
    assert [alert.info.origin for alert in received] == ["cli", "file", "stdin", "cli"]
    assert [alert.info.severity for alert in received] == ["warning", "critical", "info", "info"]
    assert received[0].info.category == "construction"
    assert received[1].info.alert_id == "alerts.jsonl:1"
    assert extra is None
    assert stats.gaps == 0


def test_alerts_file_restart_no_repeat_no_loss(tmp_path: Path, nodes: list[LoggedProcess]) -> None:
    watch_file = tmp_path / "alerts.jsonl"
    config, spec, _ = write_alerts_graph(tmp_path, watch_file=str(watch_file))
    append_line(watch_file, "first line")
    append_line(watch_file, json.dumps({"text": "second line", "severity": "warning"}))

    with Subscriber([spec]) as subscriber:
        first = start_alerts_node(config)
        nodes.append(first)
        before = receive_alerts(subscriber, 2)
        assert first.stop() < 2.0

        append_line(watch_file, "third line, written while the node was down")
        second = start_alerts_node(config)
        nodes.append(second)
        append_line(watch_file, "fourth line")
        after = receive_alerts(subscriber, 2)
        extra = subscriber.recv(timeout_s=0.5)
    offset = json.loads((tmp_path / "alerts.jsonl.offset").read_text())

    assert [alert.text for alert in before] == ["first line", "second line"]
    assert [alert.text for alert in after] == ["third line, written while the node was down", "fourth line"]
    assert [alert.info.alert_id for alert in after] == ["alerts.jsonl:3", "alerts.jsonl:4"]
    assert after[0].header.session != before[0].header.session
    assert [alert.header.seq for alert in after] == [0, 1]
    assert extra is None
    assert offset == {"offset": watch_file.stat().st_size, "line": 4}


def test_alerts_invalid_file_line_skipped(tmp_path: Path, nodes: list[LoggedProcess]) -> None:
    watch_file = tmp_path / "alerts.jsonl"
    config, spec, _ = write_alerts_graph(tmp_path, watch_file=str(watch_file))
    watch_file.write_text('good one\n{"text": "unterminated\n{"text": "good two"}\n')

    with Subscriber([spec]) as subscriber:
        node = start_alerts_node(config)
        nodes.append(node)
        received = receive_alerts(subscriber, 2)
        extra = subscriber.recv(timeout_s=0.5)
    error_line = node.wait_for_line(r"line 2 skipped")[0][1]

    assert [alert.text for alert in received] == ["good one", "good two"]
    assert [alert.info.alert_id for alert in received] == ["alerts.jsonl:1", "alerts.jsonl:3"]
    assert extra is None
    assert "ERROR" in error_line
    assert f"{watch_file} line 2 skipped: invalid JSON" in error_line


def test_alerts_invalid_stdin_line_skipped(tmp_path: Path, nodes: list[LoggedProcess]) -> None:
    config, spec, _ = write_alerts_graph(tmp_path, stdin=True)
    node = start_alerts_node(config, stdin=subprocess.PIPE)
    nodes.append(node)

    with Subscriber([spec]) as subscriber:
        node.process.stdin.write('before\n{"severity": "info"}\n{broken\nafter\n')
        node.process.stdin.flush()
        received = receive_alerts(subscriber, 2)
        extra = subscriber.recv(timeout_s=0.5)
    missing_text = node.wait_for_line(r"stdin line 2 skipped")[0][1]
    broken = node.wait_for_line(r"stdin line 3 skipped")[0][1]

    assert [alert.text for alert in received] == ["before", "after"]
    assert extra is None
    assert "'text'" in missing_text
    assert "invalid JSON" in broken


def test_alert_cli_without_node_times_out(tmp_path: Path) -> None:
    ingest = f"tcp://127.0.0.1:{free_port()}"

    result = subprocess.run(
        scenewatch_command("alert", "--endpoint", ingest, "--timeout", "0.2", "hello"),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert f"no alerts node replied on {ingest} after 3 attempts" in result.stderr


def test_alert_cli_without_graph_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        scenewatch_command("alert", "hello"),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "no running graph found" in result.stderr
    assert "--config" in result.stderr
