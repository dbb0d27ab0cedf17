"""Memory and stability benchmark: RSS of every process and drop counters during a long looped replay.

Runs the live graph of :mod:`bench.live`. The camera node replays the
dashcam video in a loop at its own pace (``loop: true``) and the audio node
loops the siren recording in real time. Fusion runs CLIP on the random
ViT-B/32 checkpoint, or no CLIP with ``--quick``. Length: 5
minutes after a 3 s warm-up (``--memory-minutes``), 6 s with ``--quick``.

Figures per process (camera, audio, alerts, fusion, and this process, which
subscribes beside fusion): peak RSS over the whole run, final RSS, and the
growth of the mean RSS from the first minute to the last (first and last
third with runs under three minutes; target under 5 %). Drop counters, as
increases within the first and within the last minute: the camera node's
own frame drops (``source_drops`` in its headers), sequence gaps of the
audio and summary topics at this process's subscriber, and summaries that
list a degraded entry (a stale or missing stream).

Example::

    python -m bench memory --memory-minutes 10
"""

from __future__ import annotations

import collections

from bench.common import BenchOptions, Row
from bench.live import GraphRecord, run_graph

__all__ = ["NAME", "run", "GROWTH_TARGET"]

NAME = "memory"

GROWTH_TARGET = 0.05
"""Largest acceptable RSS growth from the first minute to the last, as a fraction."""

FULL_MINUTES = 5.0
QUICK_SECONDS = 6.0


def _span_s(duration_s: float) -> float:
    """Length of the first and last span compared, in seconds: a minute, or a third of shorter runs."""
    return 60.0 if duration_s >= 180.0 else duration_s / 3


def _mean(samples: list[tuple[float, int]], low: float, high: float) -> float:
    inside = [size for at_s, size in samples if low <= at_s < high]
    return sum(inside) / len(inside) if inside else float("nan")


def _counter_increase(record: GraphRecord, name: str, low: float, high: float) -> int:
    inside = [counters.get(name, 0) for at_s, counters in record.drops if low <= at_s <= high]
    return inside[-1] - inside[0] if len(inside) >= 2 else 0


def figures(record: GraphRecord) -> list[Row]:
    """Turn one run's record into RSS, growth and drop rows."""
    duration = record.duration_s
    span = _span_s(duration)
    rows: list[Row] = []
    for process, samples in sorted(record.rss.items()):
        sizes = [size for _, size in samples]
        rows.append(Row.from_samples(NAME, f"process {process}", "peak RSS", [max(sizes) / 2**20], "MiB"))
        rows.append(Row.from_samples(NAME, f"process {process}", "final RSS", [sizes[-1] / 2**20], "MiB"))
        first = _mean(samples, 0.0, span)
        last = _mean(samples, duration - span, duration + 1)
        growth = (last / first - 1) * 100
        verdict = "within" if growth < GROWTH_TARGET * 100 else "ABOVE"
        rows.append(Row.from_samples(NAME, f"process {process}", f"RSS growth, first {span:.0f} s to last {span:.0f} s", [growth], "%",
                                     note=f"{verdict} the {GROWTH_TARGET:.0%} target"))

    for counter, label in (("camera.source_drops", "camera node frame drops"), ("audio.gaps", "audio sequence gaps"),
                           ("summary.gaps", "summary sequence gaps"), ("camera.stale_dropped", "frames replaced at this subscriber")):
        first = _counter_increase(record, counter, 0.0, span)
        last = _counter_increase(record, counter, duration - span, duration + 1)
        rows.append(Row.from_samples(NAME, label, f"increase in first {span:.0f} s", [first], ""))
        rows.append(Row.from_samples(NAME, label, f"increase in last {span:.0f} s", [last], ""))

    def degraded(low: float, high: float) -> int:
        start = record.summaries[0]["_arrival_ns"] if record.summaries else 0
        return sum(1 for s in record.summaries if s.get("degraded") and low <= (s["_arrival_ns"] - start) / 1e9 < high)

    first, last = degraded(0.0, span), degraded(duration - span, duration + 1)
    entries = collections.Counter(entry for s in record.summaries for entry in s.get("degraded") or [])
    listed = ", ".join(f"{name} {count}" for name, count in entries.most_common(4)) or "none"
    rows.append(Row.from_samples(NAME, "summaries with a degraded entry", f"count in first {span:.0f} s", [first], ""))
    rows.append(Row.from_samples(NAME, "summaries with a degraded entry", f"count in last {span:.0f} s", [last], "", note=f"whole run: {listed}"))
    return rows


def run(options: BenchOptions) -> list[Row]:
    """Run the looped live graph once for the configured length and report memory and drops."""
    if options.memory_minutes is not None:
        duration_s = options.memory_minutes * 60
    else:
        duration_s = QUICK_SECONDS if options.quick else FULL_MINUTES * 60
    clip_folder = None
    if not options.quick:
        from bench.models import random_clip_folder

        clip_folder = random_clip_folder()
    record = run_graph(duration_s=duration_s, warmup_s=1.0 if options.quick else 3.0, clip_folder=clip_folder, use_embeddings=not options.quick)
    return figures(record)
