"""Camera node in its own process (``python -m nodes.camera``), read by a real Subscriber.

The file tests use the 221-frame, 25 fps highway recording; the stream tests
use HTTP servers on 127.0.0.1 that this module starts: one that accepts and
never answers, and one that sends a few MJPEG frames and then stalls.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
import yaml

from conftest import LoggedProcess, free_port, node_command
from pipeline.transport import Subscriber, TopicSpec

HIGHWAY_FRAMES = 221
PERIOD_NS = 40_000_000  # 25 fps


def write_camera_graph(tmp_path: Path, policy: str, **params: Any) -> tuple[Path, TopicSpec]:
    """Write a graph with one camera node; return its path and the camera topic."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    graph = {
        "name": "camera-test",
        "topics": {"camera": {"endpoint": endpoint, "policy": policy}},
        "nodes": [{"id": "camera", "node": "camera", "outputs": {"frames": "camera"}, "params": params}],
    }
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path, TopicSpec(name="camera", endpoint=endpoint, policy=policy)


def receive_until_quiet(subscriber: Subscriber, quiet_s: float = 1.5, work_s: float = 0.0) -> list[tuple[Any, int]]:
    """Receive messages until none arrives for ``quiet_s``; return (header, receive time in ns) pairs."""
    received = []
    while (message := subscriber.recv(timeout_s=quiet_s)) is not None:
        received.append((message.header, time.monotonic_ns()))
        if work_s:
            time.sleep(work_s)
    return received


@pytest.mark.slow
def test_file_all_policy_every_frame(tmp_path: Path, highway_mp4: Path, nodes: list[LoggedProcess]) -> None:
    config, spec = write_camera_graph(
        tmp_path, "all", source=str(highway_mp4), wait_for_subscribers=1, realtime=False, encoding="jpeg"
    )
    with Subscriber([spec]) as subscriber:
        nodes.append(LoggedProcess(node_command("nodes.camera", config)))
        headers = [header for header, _ in receive_until_quiet(subscriber)]
        returncode = nodes[0].wait(10.0)

    assert returncode == 0, nodes[0].log()
    assert len(headers) == HIGHWAY_FRAMES
    assert [header.seq for header in headers] == list(range(HIGHWAY_FRAMES))
    assert (headers[0].frame.width, headers[0].frame.height) == (960, 540)
    captures = np.array([header.capture_ns for header in headers], dtype=np.int64)
    assert np.all(np.diff(captures) > 0)
    offsets_ns = captures - captures[0] - np.arange(HIGHWAY_FRAMES) * PERIOD_NS
    assert np.abs(offsets_ns).max() <= 1_000_000
    assert headers[-1].frame.stream_time_s == pytest.approx(220 * 0.04, abs=0.001)
    assert headers[-1].source_drops == 0


@pytest.mark.slow
def test_file_latest_policy_slow_subscriber(tmp_path: Path, highway_mp4: Path, nodes: list[LoggedProcess]) -> None:
    config, spec = write_camera_graph(tmp_path, "latest", source=str(highway_mp4), wait_for_subscribers=1)
    with Subscriber([spec]) as subscriber:
        nodes.append(LoggedProcess(node_command("nodes.camera", config)))
        received = receive_until_quiet(subscriber, work_s=0.2)
        stats = subscriber.stats["camera"]
    nodes[0].process.wait(10.0)

    seqs = [header.seq for header, _ in received]
    assert seqs == sorted(set(seqs))
    assert 30 <= len(seqs) <= 60  # 8.8 s of video at one frame per 0.2 s
    assert stats.dropped == seqs[-1] + 1 - len(seqs)
    assert stats.delivered == len(seqs)
    # In realtime mode frame k is released at origin + k * 40 ms, so the newest
    # frame published by a receive time follows from that time.
    lags = []
    for header, received_ns in received:
        index = round(header.frame.stream_time_s * 1e9 / PERIOD_NS)
        origin_ns = header.capture_ns - index * PERIOD_NS
        newest = min(HIGHWAY_FRAMES - 1, (received_ns - origin_ns) // PERIOD_NS)
        lags.append(newest - index)
    assert max(lags) <= 1, f"largest lags in frames: {sorted(lags)[-5:]}"


def test_file_missing_exits_with_message(tmp_path: Path, nodes: list[LoggedProcess]) -> None:
    missing = tmp_path / "no_such_video.mp4"
    config, _ = write_camera_graph(tmp_path, "latest", source=str(missing))

    nodes.append(LoggedProcess(node_command("nodes.camera", config)))
    returncode = nodes[0].wait(20.0)

    assert returncode == 1
    assert f"camera source file {missing} not found; check params.source" in nodes[0].log()


class StallingServer:
    """An HTTP server on 127.0.0.1 that accepts connections and then stalls.

    With ``frames`` above 0 it first sends that many MJPEG frames in a
    ``multipart/x-mixed-replace`` response; with 0 it never answers.
    """

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.connections = 0
        self._jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))[1].tobytes()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(connection)
            if self.frames:
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
            for _ in range(self.frames):
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(self._jpeg)
                connection.sendall(part + self._jpeg + b"\r\n")
                time.sleep(0.04)
        except OSError:
            return

    def close(self) -> None:
        self._listener.close()
        for connection in self._open:
            connection.close()


@pytest.fixture
def stalling_server(request: pytest.FixtureRequest) -> Iterator[StallingServer]:
    server = StallingServer(frames=request.param)
    yield server
    server.close()


def closed_port() -> int:
    return free_port()  # released at once, so connecting is refused


@pytest.mark.slow
@pytest.mark.parametrize("stalling_server", [0], indirect=True)
def test_stream_never_answering_reopened_with_backoff(tmp_path: Path, stalling_server: StallingServer, nodes: list[LoggedProcess]) -> None:
    config, _ = write_camera_graph(
        tmp_path, "latest", source=f"http://127.0.0.1:{stalling_server.port}/x.mjpg", read_timeout_s=1.0, reopen_backoff_s=0.3
    )

    node = LoggedProcess(node_command("nodes.camera", config))
    nodes.append(node)
    started_at, _ = node.wait_for_line(r"node camera \(camera\) started")[0]
    failures = node.wait_for_line(r"could not be opened.*retrying in", count=3, timeout_s=15.0)
    stop_s = node.stop()

    first_failure_s = failures[0][0] - started_at
    assert 0.9 <= first_failure_s <= 2.0
    delays = [float(re.search(r"retrying in ([0-9.]+) s", line).group(1)) for _, line in failures]
    assert delays == [0.3, 0.6, 1.2]
    assert stalling_server.connections >= 3
    assert stop_s < 2.0
    assert node.process.returncode == 0


@pytest.mark.slow
def test_stream_refused_reopened_with_backoff(tmp_path: Path, nodes: list[LoggedProcess]) -> None:
    config, _ = write_camera_graph(tmp_path, "latest", source=f"http://127.0.0.1:{closed_port()}/x.mjpg", reopen_backoff_s=0.2)

    node = LoggedProcess(node_command("nodes.camera", config))
    nodes.append(node)
    failures = node.wait_for_line(r"could not be opened.*retrying in", count=3, timeout_s=15.0)
    stop_s = node.stop()

    gaps_s = [later[0] - earlier[0] for earlier, later in zip(failures, failures[1:])]
    assert gaps_s[0] == pytest.approx(0.2, abs=0.15)
    assert gaps_s[1] == pytest.approx(0.4, abs=0.15)
    assert stop_s < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("stalling_server", [10], indirect=True)
def test_stream_stalling_after_frames_reopened(tmp_path: Path, stalling_server: StallingServer, nodes: list[LoggedProcess]) -> None:
    config, spec = write_camera_graph(
        tmp_path, "all", source=f"http://127.0.0.1:{stalling_server.port}/x.mjpg", read_timeout_s=1.0, reopen_backoff_s=0.3
    )

    with Subscriber([spec]) as subscriber:
        node = LoggedProcess(node_command("nodes.camera", config))
        nodes.append(node)
        reopens = node.wait_for_line(r"source .*; reopening in", count=3, timeout_s=20.0)
        frames = receive_until_quiet(subscriber, quiet_s=0.5)
    stop_s = node.stop()

    assert len(frames) >= 20  # at least two connections of 10 frames each
    assert stalling_server.connections >= 3
    # Each connection delivered frames, so the delay starts again from reopen_backoff_s.
    delays = [float(re.search(r"reopening in ([0-9.]+) s", line).group(1)) for _, line in reopens]
    assert delays == [0.3, 0.3, 0.3]
    assert stop_s < 2.0
