"""Replay benchmark: real-time factor of a fast replay through the pipeline against a naive single loop.

Input: the highway dashcam video (8.8 s, 25 fps) with the siren recording as
its audio. The real-time factor is media seconds processed per wall-clock
second. Three ways, measured side by side in each repeat:

- ``scenewatch replay VIDEO --audio WAV --fast --json`` as a subprocess, on
  free loopback ports (a ``--config`` graph and ``--flow-endpoint``). Its
  factor counts the whole command, start-up and model loading included, so
  a second factor counts only the time from the first summary line to the
  last. Skipped with ``--quick``; when the command fails or prints no
  summary, its row carries the error, and the in-process row measures the same stages.
- in-process pipeline: :class:`~pipeline.sources.VideoFileSource` (JPEG
  frames, 100 ms audio chunks), :func:`pipeline.messages.decode`,
  :class:`~pipeline.windows.Windower` (1 s windows, 0.5 s hop) and
  :class:`~pipeline.perception.WindowPerception`, no bus, models loaded
  before timing.
- naive baseline: one loop that decodes the video with PyAV and the audio
  with soundfile, then, for each window of the same grid, runs the HOG
  detector on the window's last frame and YAMNet on its second of audio.
  No JPEG, no messages, no windower.

CLIP runs in none of them: no real weights exist offline, and the pipeline
then runs without CLIP. The figures therefore compare the detector and
YAMNet path plus the pipeline's own costs.

Example::

    python -m bench replay --repeat 3
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, BenchOptions, Row, free_port, shared_file

__all__ = ["NAME", "run", "naive_pass", "pipeline_pass", "cli_pass"]

NAME = "replay"

log = logging.getLogger(__name__)

VIDEO = "video/highway_dashcam_960x540_25fps.mp4"
AUDIO = "audio/siren_44k_stereo.wav"
WINDOW_S = 1.0
HOP_S = 0.5
QUICK_DURATION_S = 2.0
CLI_TIMEOUT_S = 300.0


def _settings() -> Any:
    from pipeline.perception import PerceptionSettings

    return PerceptionSettings.model_validate({"clip": {"enabled": False}, "alerts": {"use_embeddings": False}})


def pipeline_pass(perception: Any, duration_s: float | None) -> tuple[float, float, int]:
    """Replay the video and audio through source, decode, windower and perception in this process.

    Returns:
        Media seconds covered, wall seconds taken and the number of summaries.
    """
    from pipeline import messages
    from pipeline.messages import AudioChunk
    from pipeline.sources import VideoFileSource
    from pipeline.windows import Windower

    source = VideoFileSource(shared_file(VIDEO), audio=shared_file(AUDIO), duration_s=duration_s)
    windower = Windower(["frames", "audio"], length_s=WINDOW_S, hop_s=HOP_S, processing_time=False)
    streams = {"camera": "frames", "audio": "audio"}
    summaries = 0
    first_ns = last_ns = None
    began = time.perf_counter()
    for item in source:
        message = messages.decode([item.topic.encode(), item.header_bytes, item.payload])
        header = message.header
        first_ns = header.capture_ns if first_ns is None else first_ns
        end_ns = header.capture_ns + (round(message.duration_s * 1e9) if isinstance(message, AudioChunk) else 0)
        last_ns = max(last_ns or end_ns, end_ns)
        for window in windower.add(streams[item.topic], header.capture_ns, end_ns, message):
            perception.process(window, summaries)
            summaries += 1
    for window in windower.flush():
        perception.process(window, summaries)
        summaries += 1
    wall_s = time.perf_counter() - began
    return ((last_ns or 0) - (first_ns or 0)) / 1e9, wall_s, summaries


def naive_pass(detector: Any, classifier: Any, duration_s: float | None) -> tuple[float, float, int]:
    """Decode video and audio in one loop, then run HOG and YAMNet per window of the same grid.

    Returns:
        Media seconds covered, wall seconds taken and the number of windows.
    """
    import av

    from bench.audio_node import load_mono

    began = time.perf_counter()
    frames: list[tuple[float, np.ndarray]] = []
    with av.open(str(shared_file(VIDEO))) as container:
        for frame in container.decode(video=0):
            seconds = float(frame.pts * frame.time_base)
            if duration_s is not None and seconds >= duration_s:
                break
            frames.append((seconds, frame.to_ndarray(format="bgr24")))
    audio = load_mono(shared_file(AUDIO), 16_000)
    media_s = frames[-1][0] + 1 / 25 if frames else 0.0

    windows = 0
    start = 0.0
    while start < media_s:
        end = start + WINDOW_S
        inside = [image for seconds, image in frames if start <= seconds < end]
        if inside:
            detector.update(inside[-1])
        chunk = audio[int(start * 16_000) : int(min(end, media_s) * 16_000)]
        if len(chunk):
            classifier.classify(chunk, 16_000)
        windows += 1
        start += HOP_S
    return media_s, time.perf_counter() - began, windows


def _write_graph(folder: Path) -> Path:
    ports = [free_port() for _ in range(4)]
    graph = {
        "name": "bench-replay",
        "topics": {
            "camera": {"endpoint": f"tcp://127.0.0.1:{ports[0]}", "policy": "latest"},
            "audio": {"endpoint": f"tcp://127.0.0.1:{ports[1]}", "policy": "all", "queue": 600},
            "alerts": {"endpoint": f"tcp://127.0.0.1:{ports[2]}", "policy": "all", "durability": "transient_local"},
            "summary": {"endpoint": f"tcp://127.0.0.1:{ports[3]}", "policy": "all"},
        },
        "nodes": [{
            "id": "fusion", "node": "fusion",
            "inputs": {"frames": "camera", "audio": "audio", "alerts": "alerts"},
            "outputs": {"summary": "summary"},
            "params": {"perception": {"clip": {"enabled": False}, "alerts": {"use_embeddings": False}}},
        }],
    }
    path = folder / "graph.json"
    path.write_text(json.dumps(graph), encoding="utf-8")  # JSON is valid YAML
    return path


def cli_pass(folder: Path) -> tuple[float, float, float, int, str]:
    """Run ``scenewatch replay --fast --json`` and time it.

    Returns:
        Media seconds covered by the summaries, wall seconds of the whole
        command, wall seconds from the first summary line to the last, the
        number of summaries, and an error text (empty when it worked).
    """
    command = [
        sys.executable, "-m", "pipeline.cli", "replay", str(shared_file(VIDEO)), "--audio", str(shared_file(AUDIO)),
        "--fast", "--json", "--no-progress", "--config", str(_write_graph(folder)),
        "--flow-endpoint", f"tcp://127.0.0.1:{free_port()}",
    ]
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    stamps: list[float] = []
    windows: list[tuple[int, int]] = []
    assert process.stdout is not None
    for line in process.stdout:
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and "window" in document:
            stamps.append(time.perf_counter())
            windows.append((document["window"]["start_ns"], document["window"]["end_ns"]))
    try:
        _, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    wall_s = time.perf_counter() - began
    if process.returncode != 0 or not windows:
        last_line = (stderr.strip().splitlines() or ["no output"])[-1]
        return 0.0, wall_s, 0.0, 0, f"exit status {process.returncode}, {len(windows)} summaries: {last_line[:160]}"
    media_s = (windows[-1][1] - windows[0][0]) / 1e9
    return media_s, wall_s, stamps[-1] - stamps[0], len(windows), ""


def run(options: BenchOptions) -> list[Row]:
    """Measure the real-time factor of each way and the ratios pipeline/naive and command/naive."""
    from pipeline.models.audio import AudioEventClassifier
    from pipeline.models.detector import PedestrianDetector
    from pipeline.perception import WindowPerception

    duration_s = QUICK_DURATION_S if options.quick else None
    repeats = 1 if options.quick else options.repeat
    perception_settings = _settings()
    detector = PedestrianDetector()
    classifier = AudioEventClassifier()
    factors: dict[str, list[float]] = {"pipeline": [], "naive": [], "command": [], "command, first to last summary": []}
    ratios: dict[str, list[float]] = {"in-process pipeline / naive": [], "scenewatch replay / naive": []}
    cli_error = ""
    with tempfile.TemporaryDirectory(prefix="swb-replay-") as folder:
        for _ in range(repeats):
            # A new WindowPerception per pass, so trackers and trends start empty as in a new replay.
            media_s, wall_s, _ = pipeline_pass(WindowPerception(perception_settings, live=False), duration_s)
            factors["pipeline"].append(media_s / wall_s)
            media_s, wall_s, _ = naive_pass(detector, classifier, duration_s)
            factors["naive"].append(media_s / wall_s)
            ratios["in-process pipeline / naive"].append(factors["pipeline"][-1] / factors["naive"][-1])
            if options.quick:
                continue
            media_s, wall_s, steady_s, count, cli_error = cli_pass(Path(folder))
            if cli_error:
                continue
            factors["command"].append(media_s / wall_s)
            if steady_s > 0 and count > 1:
                # The first window closes once one window length of media has arrived, so count the media after it.
                factors["command, first to last summary"].append((media_s - WINDOW_S) / steady_s)
            ratios["scenewatch replay / naive"].append(factors["command"][-1] / factors["naive"][-1])

    label = f"highway.mp4 + siren.wav, {'first 2 s' if options.quick else '8.8 s'}, HOG + YAMNet, no CLIP"
    rows = [
        Row.from_samples(NAME, f"naive loop (PyAV + models, no bus): {label}", "real-time factor", factors["naive"], "x"),
        Row.from_samples(NAME, f"in-process pipeline (source, decode, windows, perception): {label}", "real-time factor", factors["pipeline"], "x"),
        Row.from_samples(NAME, "in-process pipeline / naive", "ratio", ratios["in-process pipeline / naive"], "x"),
    ]
    if options.quick:
        return rows
    if factors["command"]:
        rows.append(Row.from_samples(NAME, "scenewatch replay --fast --json, whole command", "real-time factor", factors["command"], "x"))
        if factors["command, first to last summary"]:
            rows.append(Row.from_samples(NAME, "scenewatch replay --fast --json, first to last summary", "real-time factor", factors["command, first to last summary"], "x"))
        rows.append(Row.from_samples(NAME, "scenewatch replay (whole command) / naive", "ratio", ratios["scenewatch replay / naive"], "x"))
    else:
        rows.append(Row(NAME, "scenewatch replay --fast --json", "real-time factor", float("nan"), float("nan"), float("nan"), "x",
                        note=f"command failed ({cli_error}); the in-process row measures the same stages"))
    return rows
