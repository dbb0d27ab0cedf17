"""Microphone node against a real PortAudio device.

A user-mode PulseAudio server with a null sink replaces a microphone:
``paplay`` plays a recording into the sink, and the node captures the sink's
monitor through ALSA's ``pulse`` device, with real ADC times.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.config import parse_graph
from pipeline.node import run_node
from pipeline.transport import Subscriber

from conftest import shared_file

SINK = "scenewatch_test_sink"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Start a user-mode PulseAudio server with a null sink; yield the environment that reaches it."""
    for tool in ("pulseaudio", "paplay", "pactl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; apt-get install pulseaudio pulseaudio-utils libasound2-plugins")

    runtime = tmp_path_factory.mktemp("pulse-runtime")
    runtime.chmod(0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PULSE_RUNTIME_PATH=str(runtime / "pulse"))
    env.pop("PULSE_SERVER", None)
    command = [
        "pulseaudio",
        "--daemonize=no",
        "--exit-idle-time=-1",
        "-n",
        "--load=module-native-protocol-unix",
        f"--load=module-null-sink sink_name={SINK} rate=44100",
        "--load=module-always-sink",
    ]

    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"PulseAudio did not start: {server.stderr.read().decode() if server.stderr else ''}")
        time.sleep(0.1)

    subprocess.run(["pactl", "set-default-source", f"{SINK}.monitor"], env=env, check=True)
    previous = dict(os.environ)
    os.environ.update(XDG_RUNTIME_DIR=env["XDG_RUNTIME_DIR"], PULSE_RUNTIME_PATH=env["PULSE_RUNTIME_PATH"])
    yield env
    os.environ.clear()
    os.environ.update(previous)
    server.terminate()
    server.wait(5)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _capture(params: dict, seconds: float, play: Path | None = None, play_after_chunks: int = 5) -> list:
    """Run the node in its own process; return (header, float32 samples) per chunk.

    ``seconds`` counts from the first chunk, because a fresh PulseAudio server
    takes about two seconds to deliver the first samples.
    """
    graph = parse_graph(
        {
            "topics": {"audio": {"endpoint": f"tcp://127.0.0.1:{_free_port()}"}},
            "nodes": [{"id": "mic", "node": "microphone", "outputs": {"audio": "audio"}, "params": params}],
        }
    )
    process = multiprocessing.get_context("spawn").Process(target=run_node, args=(graph, "mic"))
    process.start()
    chunks = []
    player = None
    try:
        with Subscriber([graph.topic_spec("audio")]) as subscriber:
            deadline = time.monotonic() + seconds + 15.0
            while time.monotonic() < deadline:
                message = subscriber.recv(timeout_s=0.5)
                if message is None:
                    continue
                if not chunks:
                    deadline = time.monotonic() + seconds
                chunks.append((message.header, message.float32().copy()))
                if play is not None and player is None and len(chunks) >= play_after_chunks:
                    player = subprocess.Popen(["paplay", f"--device={SINK}", str(play)])
    finally:
        process.terminate()
        process.join(5)
        if player is not None:
            player.wait(10)
    return chunks


def _best_correlation(captured: np.ndarray, reference: np.ndarray) -> float:
    """Return the correlation coefficient of ``reference`` with its best-aligned stretch of ``captured``."""
    scores = np.correlate(captured, reference[: len(reference) // 2], mode="valid")
    start = int(np.argmax(np.abs(scores)))
    segment = captured[start : start + len(reference)]
    length = min(len(segment), len(reference))
    return float(np.corrcoef(segment[:length], reference[:length])[0, 1])


def _reference(path: Path, rate: int) -> np.ndarray:
    samples, file_rate = sf.read(path, dtype="float32", always_2d=True)
    divisor = gcd(file_rate, rate)
    return resample_poly(samples.mean(axis=1), rate // divisor, file_rate // divisor)


def test_siren_played_into_device_correlates(pulse_server: dict[str, str]) -> None:
    siren = shared_file("audio/siren_44k_stereo.wav")
    chunks = _capture({"device": "pulse", "sample_rate": 16000, "chunk_s": 0.1}, seconds=6.5, play=siren)

    headers = [header for header, _ in chunks]
    assert len(chunks) >= 50
    assert {header.audio.sample_rate for header in headers} == {16000}
    assert {header.audio.frames for header in headers} == {1600}
    captured = np.concatenate([samples[:, 0] for _, samples in chunks])
    assert _best_correlation(captured, _reference(siren, 16000)) > 0.95


def test_chunk_capture_times_follow_sample_count(pulse_server: dict[str, str]) -> None:
    chunks = _capture({"device": "pulse", "sample_rate": 16000, "chunk_s": 0.1}, seconds=5.0)

    intervals_ms = np.diff([header.capture_ns for header, _ in chunks]) / 1e6
    assert len(intervals_ms) >= 25
    # PulseAudio's ADC times are estimates that settle during the first two
    # seconds of a stream, while its latency estimate shrinks from about 300 ms
    # to 20 ms. After that, the node's smoothed times put consecutive chunks
    # one chunk apart within a few milliseconds.
    assert np.median(intervals_ms) == pytest.approx(100.0, abs=0.5)
    assert np.percentile(np.abs(intervals_ms[20:] - 100.0), 90) < 5.0
    assert all(header.capture_ns < time.monotonic_ns() for header, _ in chunks)


def test_unsupported_rate_resampled_from_native(pulse_server: dict[str, str]) -> None:
    # PulseAudio accepts at most 384 kHz, so 400 kHz makes the device reject
    # the request; the node opens it at 44.1 kHz and resamples.
    siren = shared_file("audio/siren_44k_stereo.wav")
    chunks = _capture({"device": "pulse", "sample_rate": 400000, "chunk_s": 0.1}, seconds=6.5, play=siren)

    headers = [header for header, _ in chunks]
    assert {header.audio.sample_rate for header in headers} == {400000}
    assert {header.audio.frames for header in headers} == {40000}
    captured = np.concatenate([samples[:, 0] for _, samples in chunks])
    downsampled = resample_poly(captured, 1, 25)
    assert _best_correlation(downsampled, _reference(siren, 16000)) > 0.95


def test_overflow_marks_next_chunk_as_gap(pulse_server: dict[str, str]) -> None:
    params = {"device": "pulse", "sample_rate": 16000, "queue_blocks": 5, "debug_stall_s": 0.5}
    chunks = _capture(params, seconds=3.0)

    headers = [header for header, _ in chunks]
    gapped = [header for header in headers if header.audio.gap_before]
    assert len(gapped) == 1
    assert gapped[0].seq > 0
    assert headers[-1].source_drops == 1
    # The chunk after the gap starts later than one chunk after its predecessor.
    index = headers.index(gapped[0])
    assert gapped[0].capture_ns - headers[index - 1].capture_ns > 150_000_000


def test_missing_device_lists_inputs(pulse_server: dict[str, str]) -> None:
    from nodes.microphone import DeviceNotFoundError, resolve_device

    with pytest.raises(DeviceNotFoundError) as raised:
        resolve_device("no-such-microphone")
    message = str(raised.value)
    assert "no-such-microphone" in message
    assert "pulse" in message
    assert "params.device" in message
