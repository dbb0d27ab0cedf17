"""End to end through the command line: replay with fusion, determinism, the demo, record then replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, shared_file
from pipeline.recording import RecordingReader

pytestmark = pytest.mark.slow

ORIGIN_S = 1.0  # capture time of media time 0 in replays (pipeline.sources.DEFAULT_ORIGIN_NS)


def scenewatch(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def summaries_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def comparable(summary: dict) -> dict:
    """Drop the fields that may differ between runs: wall-clock times and timings."""
    summary = json.loads(json.dumps(summary))
    for field in ("latency_ms", "processing_ms", "stage_ms"):
        summary.pop(field, None)
    summary["window"].pop("start_wall_ns", None)
    summary["window"].pop("end_wall_ns", None)
    return summary


@pytest.fixture(scope="module")
def highway_siren_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    video = shared_file("video/highway_dashcam_960x540_25fps.mp4")
    siren = shared_file("audio/siren_44k_stereo.wav")
    folder = tmp_path_factory.mktemp("highway")
    alerts = folder / "alerts.jsonl"
    alerts.write_text(json.dumps({"offset_s": 2.0, "text": "Road work ahead", "severity": "warning"}) + "\n")
    out = folder / "summaries.jsonl"

    result = scenewatch("replay", str(video), "--audio", str(siren), "--alerts", str(alerts), "--fast", "--json", "--out", str(out))

    assert result.returncode == 0, result.stderr
    printed = summaries_of(result.stdout)
    assert printed == [json.loads(line) for line in out.read_text().splitlines()]
    return printed


def test_replay_siren_windows_have_emergency_vehicle(highway_siren_run: list[dict]) -> None:
    # The siren covers media time 0-4 s; windows wholly inside it, after the
    # first second the classifier needs, report the emergency vehicle.
    inside = [s for s in highway_siren_run if ORIGIN_S + 1.0 <= s["window"]["start_ns"] / 1e9 and s["window"]["end_ns"] / 1e9 <= ORIGIN_S + 4.0]
    assert len(inside) >= 4
    for summary in inside:
        kinds = {hazard["kind"] for hazard in summary["hazards"] if hazard["state"] != "end"}
        assert "emergency_vehicle" in kinds, summary["sentence"]
    assert "emergency vehicle" in inside[-1]["sentence"].lower()


def test_replay_windows_after_alert_have_construction_zone(highway_siren_run: list[dict]) -> None:
    alert_s = ORIGIN_S + 2.0
    after = [s for s in highway_siren_run if s["window"]["end_ns"] / 1e9 > alert_s]
    before = [s for s in highway_siren_run if s["window"]["end_ns"] / 1e9 <= alert_s]
    assert after and before
    assert all(any(h["kind"] == "construction_zone" and h["state"] != "end" for h in s["hazards"]) for s in after)
    assert not any(h["kind"] == "construction_zone" for s in before for h in s["hazards"])
    assert after[0]["active_alerts"][0]["text"] == "Road work ahead"


def test_replay_summaries_cover_every_window(highway_siren_run: list[dict]) -> None:
    seqs = [s["seq"] for s in highway_siren_run]
    ends = [s["window"]["end_ns"] for s in highway_siren_run]
    assert seqs == list(range(len(seqs)))
    assert all(b - a == 500_000_000 for a, b in zip(ends, ends[1:]))
    # The 8.8 s clip yields windows from its first to its last frame.
    assert ends[0] / 1e9 == pytest.approx(ORIGIN_S + 0.5, abs=0.51)
    assert ends[-1] / 1e9 >= ORIGIN_S + 8.8


def test_fast_replays_identical_apart_from_timings(highway_siren_run: list[dict], tmp_path: Path) -> None:
    video = shared_file("video/highway_dashcam_960x540_25fps.mp4")
    siren = shared_file("audio/siren_44k_stereo.wav")
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(json.dumps({"offset_s": 2.0, "text": "Road work ahead", "severity": "warning"}) + "\n")

    again = scenewatch("replay", str(video), "--audio", str(siren), "--alerts", str(alerts), "--fast", "--json")

    assert again.returncode == 0, again.stderr
    assert [comparable(s) for s in summaries_of(again.stdout)] == [comparable(s) for s in highway_siren_run]


def test_demo_reports_every_modality(tmp_path: Path) -> None:
    result = scenewatch("demo", "--fast", "--json", "--folder", str(tmp_path / "demo"))

    assert result.returncode == 0, result.stderr
    summaries = summaries_of(result.stdout)
    assert len(summaries) == len(result.stdout.splitlines())  # --json keeps stdout pure JSON
    assert len(summaries) >= 20
    kinds = {hazard["kind"] for summary in summaries for hazard in summary["hazards"]}
    assert {"pedestrian", "emergency_vehicle", "construction_zone"} <= kinds
    trends = {(h["kind"], h["trend"]) for summary in summaries for h in summary["hazards"]}
    assert ("pedestrian", "approaching") in trends
    assert ("emergency_vehicle", "approaching") in trends
    assert sorted(path.name for path in (tmp_path / "demo").iterdir()) == ["demo_alerts.jsonl", "demo_drive.mp4", "demo_drive.wav"]
    from pipeline.models.store import ModelStore

    clip_present = any(status.present for status in ModelStore().status() if status.name == "clip")
    if not clip_present:
        assert "CLIP weights are not in the model cache" in result.stderr
        assert all("model:clip" in summary["degraded"] for summary in summaries)


def test_replay_missing_file_names_it(tmp_path: Path) -> None:
    result = scenewatch("replay", str(tmp_path / "nothing.mp4"), "--fast")

    assert result.returncode != 0
    assert "nothing.mp4" in result.stderr


def test_recorded_live_run_replays_every_message(tmp_path: Path) -> None:
    """Record a live graph (camera on a file, audio, alerts), then replay the recording with --fast."""
    video = shared_file("video/urban_dashcam_320x240.gif")
    ports = {name: free_port() for name in ("camera", "alerts", "ingest", "replay_camera", "replay_alerts")}
    graph = tmp_path / "live.yaml"
    graph.write_text(
        f"""
name: record-test
topics:
  camera: {{endpoint: "tcp://127.0.0.1:{ports['camera']}", policy: all}}
  alerts: {{endpoint: "tcp://127.0.0.1:{ports['alerts']}", durability: transient_local}}
nodes:
  - id: camera
    node: camera
    outputs: {{frames: camera}}
    params: {{source: "{video}", loop: true}}
  - id: alerts
    node: alerts
    outputs: {{alerts: alerts}}
    params: {{ingest: "tcp://127.0.0.1:{ports['ingest']}"}}
"""
    )
    env = {**os.environ, "SCENEWATCH_STATE": str(tmp_path / "state.json")}
    launcher = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(graph)], env=env, stderr=subprocess.DEVNULL)
    recording = tmp_path / "drive.mcap"
    try:
        time.sleep(3.0)
        recorder = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "record", str(recording), "--config", str(graph), "--duration", "3"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        sent = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "alert", "Road work ahead", "--severity", "warning", "--config", str(graph)],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert sent.returncode == 0, sent.stderr
        assert recorder.wait(30) == 0, recorder.stderr.read() if recorder.stderr else ""
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(10)

    recorded = list(RecordingReader(recording))
    topics = {message.topic for message in recorded}
    assert topics == {"camera", "alerts"}
    assert sum(1 for message in recorded if message.topic == "camera") >= 15

    replay_graph = tmp_path / "replay.yaml"
    replay_graph.write_text(
        f"""
name: replay-test
topics:
  camera: {{endpoint: "tcp://127.0.0.1:{ports['replay_camera']}", policy: all}}
  alerts: {{endpoint: "tcp://127.0.0.1:{ports['replay_alerts']}", durability: transient_local}}
nodes:
  - {{id: camera, node: camera, outputs: {{frames: camera}}, params: {{source: testpattern}}}}
  - {{id: alerts, node: alerts, outputs: {{alerts: alerts}}}}
"""
    )
    from pipeline.config import load_graph
    from pipeline.transport import Subscriber

    specs = list(load_graph(replay_graph).topic_specs().values())
    with Subscriber(specs) as subscriber:
        replay = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "replay", str(recording), "--fast", "--no-fusion", "--json", "--config", str(replay_graph)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        received = []
        deadline = time.monotonic() + 60
        while len(received) < len(recorded) and time.monotonic() < deadline:
            message = subscriber.recv(timeout_s=0.5)
            if message is not None:
                received.append(message)
        stdout, stderr = replay.communicate(timeout=60)
    assert replay.returncode == 0, stderr

    recorded_counts = {topic: sum(1 for m in recorded if m.topic == topic) for topic in ("camera", "alerts")}
    assert recorded_counts["alerts"] == 1
    assert json.loads(stdout)["sent"] == recorded_counts
    by_topic = lambda messages, topic: [m.header_bytes for m in messages if m.topic == topic]  # noqa: E731
    for topic in ("camera", "alerts"):
        assert by_topic(received, topic) == by_topic(recorded, topic)
    capture_times = [m.header.capture_ns for m in received if m.topic == "camera"]
    assert capture_times == sorted(capture_times)
