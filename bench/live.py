"""Run the live graph for the latency and memory benchmarks and record what crosses the bus.

The graph has four nodes on loopback ports that were free at start. The
camera node replays the highway dashcam video with ``loop: true`` and
``fps: 30``. The file is 25 fps, so frames come at 25 fps.
:mod:`bench.audio_node` plays the siren recording at 16 kHz in 100 ms
chunks. The alerts node and the fusion node complete it. The :class:`~pipeline.launcher.Launcher` runs it on a thread of
this process. Beside fusion, this process subscribes to the camera, audio
and summary topics with its own :class:`~pipeline.transport.Subscriber` and
stamps each message with ``time.monotonic_ns()`` when ``recv`` returns it.
Once a second it samples the resident set size of every node process and of
itself, and the subscriber's drop counters.

Example::

    >>> record = run_graph(duration_s=5.0, warmup_s=1.0, clip_folder=None)
    >>> len(record.summaries) > 0
    True
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BenchSkipped, free_port, shared_file

__all__ = ["VIDEO", "AUDIO", "FRAME_INTERVAL_S", "GraphRecord", "build_graph", "run_graph"]

log = logging.getLogger(__name__)

VIDEO = "video/highway_dashcam_960x540_25fps.mp4"
AUDIO = "audio/siren_44k_stereo.wav"
FRAME_INTERVAL_S = 1 / 25
"""Nominal frame interval of the dashcam video, in seconds (25 fps)."""

STARTUP_TIMEOUT_S = 120.0
"""Maximum wait for the first summary, in seconds; model loading is slow on a small machine."""


@dataclass
class GraphRecord:
    """Messages, RSS samples and drop counters of one run of the live graph, after the warm-up."""

    frames: list[tuple[int, int]] = field(default_factory=list)
    """Per frame: ``(capture_ns, arrival_ns)`` on the host monotonic clock."""
    audio: list[tuple[int, int, int]] = field(default_factory=list)
    """Per audio chunk: ``(capture_ns, end_ns, arrival_ns)``; ``end_ns`` is just after its last sample."""
    summaries: list[dict[str, Any]] = field(default_factory=list)
    """Summary JSON documents, each with an added ``_arrival_ns``."""
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """Per process name: ``(seconds since the warm-up ended, RSS in bytes)``; samples before it have negative times."""
    drops: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    """Per second: ``(seconds since the warm-up ended, counters)`` of this process's subscriber."""
    duration_s: float = 0.0


def build_graph(clip_folder: Path | None, use_embeddings: bool) -> Any:
    """Return the benchmark's live graph on free loopback ports.

    Raises:
        BenchSkipped: The dashcam video or the siren recording is missing.
    """
    from pipeline.config import parse_graph

    video = shared_file(VIDEO)
    audio = shared_file(AUDIO)
    ports = [free_port() for _ in range(5)]
    clip: dict[str, Any] = {"enabled": clip_folder is not None}
    if clip_folder is not None:
        clip["model"] = str(clip_folder)
    raw = {
        "name": "bench-live",
        "log_level": "WARNING",
        "topics": {
            "camera": {"endpoint": f"tcp://127.0.0.1:{ports[0]}", "policy": "latest"},
            "audio": {"endpoint": f"tcp://127.0.0.1:{ports[1]}", "policy": "all", "queue": 600},
            "alerts": {"endpoint": f"tcp://127.0.0.1:{ports[2]}", "policy": "all", "durability": "transient_local", "history": 256},
            "summary": {"endpoint": f"tcp://127.0.0.1:{ports[3]}", "policy": "all", "queue": 1000},
        },
        "nodes": [
            {"id": "camera", "node": "camera", "outputs": {"frames": "camera"},
             "params": {"source": str(video), "fps": 30, "loop": True, "encoding": "jpeg", "jpeg_quality": 85}},
            {"id": "audio", "node": "bench.audio_node", "outputs": {"audio": "audio"}, "params": {"path": str(audio)}},
            {"id": "alerts", "node": "alerts", "outputs": {"alerts": "alerts"}, "params": {"ingest": f"tcp://127.0.0.1:{ports[4]}"}},
            {"id": "fusion", "node": "fusion", "inputs": {"frames": "camera", "audio": "audio", "alerts": "alerts"},
             "outputs": {"summary": "summary"},
             "params": {"perception": {"clip": clip, "alerts": {"use_embeddings": use_embeddings}}}},
        ],
    }
    return parse_graph(raw, "<bench live graph>")


def _rss_by_process(pids: dict[str, int | None]) -> dict[str, int]:
    import psutil

    sizes = {}
    for name, pid in {**pids, "bench": os.getpid()}.items():
        if pid is None:
            continue
        try:
            sizes[name] = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return sizes


def run_graph(duration_s: float, warmup_s: float, clip_folder: Path | None, use_embeddings: bool = True) -> GraphRecord:
    """Run the live graph for ``warmup_s + duration_s`` seconds after the first summary and return the record.

    Raises:
        BenchSkipped: A data file is missing.
        RuntimeError: No summary arrived within ``STARTUP_TIMEOUT_S`` seconds.
    """
    from pipeline.launcher import Launcher
    from pipeline.transport import Subscriber, topic_specs

    graph = build_graph(clip_folder, use_embeddings)
    launcher = Launcher(graph, write_state=False)
    thread = threading.Thread(target=launcher.run, kwargs={"install_signal_handlers": False}, name="bench-launcher", daemon=True)
    specs = topic_specs(list(graph.topic_specs().values()), ["camera", "audio", "summary"])
    subscriber = Subscriber(specs)
    record = GraphRecord()
    thread.start()
    try:
        _collect(subscriber, launcher, record, duration_s, warmup_s)
    finally:
        launcher.request_stop()
        thread.join(10.0)
        subscriber.close()
    if thread.is_alive():
        raise RuntimeError("live graph: the launcher did not stop within 10 s")
    return record


def _collect(subscriber: Any, launcher: Any, record: GraphRecord, duration_s: float, warmup_s: float) -> None:
    from pipeline.messages import AudioChunk, Frame

    started = time.monotonic()
    first_summary_ns: int | None = None
    measure_from_ns = end_ns = None
    next_sample = time.monotonic()
    while True:
        now_ns = time.monotonic_ns()
        if end_ns is not None and now_ns >= end_ns:
            break
        if first_summary_ns is None and time.monotonic() - started > STARTUP_TIMEOUT_S:
            raise RuntimeError(f"live graph: no summary within {STARTUP_TIMEOUT_S:.0f} s; run the graph with log_level INFO to see why")
        if time.monotonic() >= next_sample:
            next_sample += 1.0
            _sample(subscriber, launcher, record, measure_from_ns)

        message = subscriber.recv(timeout_s=0.1)
        if message is None:
            continue
        arrival_ns = time.monotonic_ns()
        if message.topic == "summary" and first_summary_ns is None:
            first_summary_ns = arrival_ns
            measure_from_ns = arrival_ns + round(warmup_s * 1e9)
            end_ns = measure_from_ns + round(duration_s * 1e9)
        if measure_from_ns is None or arrival_ns < measure_from_ns:
            continue
        header = message.header
        if isinstance(message, Frame):
            record.frames.append((header.capture_ns, arrival_ns))
        elif isinstance(message, AudioChunk):
            record.audio.append((header.capture_ns, header.capture_ns + round(message.duration_s * 1e9), arrival_ns))
        elif message.topic == "summary":
            document = json.loads(bytes(message.payload))
            document["_arrival_ns"] = arrival_ns
            record.summaries.append(document)
    record.duration_s = duration_s


def _sample(subscriber: Any, launcher: Any, record: GraphRecord, measure_from_ns: int | None) -> None:
    """Record RSS per process and the drop counters, at seconds relative to the end of the warm-up."""
    at_s = (time.monotonic_ns() - measure_from_ns) / 1e9 if measure_from_ns is not None else -1e9
    for name, size in _rss_by_process(launcher.pids()).items():
        record.rss.setdefault(name, []).append((at_s, size))
    counters = {}
    for topic, stats in subscriber.stats.items():
        counters[f"{topic}.gaps"] = stats.gaps
        counters[f"{topic}.stale_dropped"] = stats.stale_dropped
        counters[f"{topic}.source_drops"] = stats.source_drops
    record.drops.append((at_s, counters))
