"""Latency benchmark: capture to arrival, window end to summary, per-stage times and frame jitter on the live graph.

Runs the graph of :mod:`bench.live` (camera on the dashcam video at its own
25 fps, real-time audio, alerts, fusion) and skips the first seconds after
the first summary (3 s, 1 s with ``--quick``). Figures:

- capture to arrival, frames: ``header.capture_ns`` to the moment this
  process's subscriber hands the frame out. Both are host monotonic clock
  readings. This process subscribes beside fusion, so the figure is the
  arrival at a subscriber like fusion's, not inside fusion.
- capture to arrival, audio: from the chunk's last sample (``capture_ns`` is
  its first sample, 100 ms earlier) to arrival.
- window end to summary: the summaries' ``latency_ms``; ``processing_ms`` and
  ``stage_ms`` (decode, clip, detector, yamnet, fusion) as fusion reports them.
- frame jitter: inter-arrival time of frames minus the nominal 40 ms.

In full mode fusion runs CLIP on a ViT-B/32-shaped checkpoint with random
weights (see :mod:`bench.models`): the compute is that of the real model,
the scores are meaningless. ``--quick`` runs without CLIP and without the
alert text embedder to save start-up time.

Example::

    python -m bench latency
"""

from __future__ import annotations

import collections

import numpy as np

from bench.common import BenchOptions, Row, percentile
from bench.live import FRAME_INTERVAL_S, GraphRecord, run_graph

__all__ = ["NAME", "run", "STAGES"]

NAME = "latency"

STAGES = ("decode", "clip", "detector", "yamnet", "fusion")
FULL_DURATION_S = 45.0
QUICK_DURATION_S = 3.0


def _distribution_rows(case: str, values_ms: list[float], note: str = "") -> list[Row]:
    """Return p50, p95, p99 and max rows; min and max columns show the spread over repeats."""
    return [Row.from_samples(NAME, case, metric, [value], "ms", note) for metric, value in (
        ("p50", percentile(values_ms, 50)),
        ("p95", percentile(values_ms, 95)),
        ("p99", percentile(values_ms, 99)),
        ("max", max(values_ms) if values_ms else float("nan")),
    )]


def _merge(rows_per_repeat: list[list[Row]]) -> list[Row]:
    """Merge the same rows of several repeats into one row each: median, min and max over the repeats."""
    merged: dict[tuple[str, str], Row] = {}
    for rows in rows_per_repeat:
        for row in rows:
            key = (row.case, row.metric)
            if key in merged:
                merged[key].samples.extend(row.samples)
            else:
                merged[key] = Row(row.benchmark, row.case, row.metric, 0, 0, 0, row.unit, list(row.samples), row.note)
    return [Row.from_samples(NAME, row.case, row.metric, row.samples, row.unit, row.note) for row in merged.values()]


def figures(record: GraphRecord) -> list[Row]:
    """Turn one run's record into rows."""
    rows: list[Row] = []
    frame_ms = [(arrival - capture) / 1e6 for capture, arrival in record.frames]
    audio_ms = [(arrival - end) / 1e6 for _, end, arrival in record.audio]
    rows += _distribution_rows("capture to arrival, frames (JPEG 960x540)", frame_ms)
    rows += _distribution_rows("capture to arrival, audio chunks (from last sample)", audio_ms)

    summaries = record.summaries
    rows += _distribution_rows("window end to summary (latency_ms)", [s["latency_ms"] for s in summaries if s.get("latency_ms") is not None])
    rows += _distribution_rows("processing_ms per window", [s["processing_ms"] for s in summaries if s.get("processing_ms") is not None])
    for stage in STAGES:
        values = [s["stage_ms"][stage] for s in summaries if stage in (s.get("stage_ms") or {})]
        if values:
            rows += _distribution_rows(f"stage {stage}", values)

    arrivals = np.array([arrival for _, arrival in record.frames], dtype=np.float64) / 1e6
    if len(arrivals) > 2:
        deviation = np.diff(arrivals) - FRAME_INTERVAL_S * 1000
        rows.append(Row.from_samples(NAME, "frame arrival jitter (inter-arrival minus 40 ms)", "std", [float(deviation.std())], "ms"))
        rows.append(Row.from_samples(NAME, "frame arrival jitter (inter-arrival minus 40 ms)", "p99 abs", [percentile(np.abs(deviation), 99)], "ms"))
    rate = len(record.frames) / record.duration_s if record.duration_s else 0.0
    rows.append(Row.from_samples(NAME, "frames received by the side subscriber", "rate", [rate], "fps"))
    degraded = sum(1 for s in summaries if s.get("degraded"))
    entries = collections.Counter(entry for s in summaries for entry in s.get("degraded") or [])
    listed = ", ".join(f"{name} {count}" for name, count in entries.most_common(4))
    note = f"{degraded} with a degraded entry" + (f" ({listed})" if listed else "")
    rows.append(Row.from_samples(NAME, "summaries", "count", [len(summaries)], "", note=note))
    return rows


def run(options: BenchOptions) -> list[Row]:
    """Run the live graph ``repeat`` times (once with ``--quick``) and merge the figures."""
    clip_folder = None
    if not options.quick:
        from bench.models import random_clip_folder

        clip_folder = random_clip_folder()
    repeats = 1 if options.quick else max(1, min(options.repeat, 2))
    per_repeat = []
    for _ in range(repeats):
        record = run_graph(
            duration_s=QUICK_DURATION_S if options.quick else FULL_DURATION_S,
            warmup_s=1.0 if options.quick else 3.0,
            clip_folder=clip_folder,
            use_embeddings=not options.quick,
        )
        per_repeat.append(figures(record))
    return _merge(per_repeat)
