"""Windower: the window grid, the three closing rules, late items, stale streams and determinism.

Times in these tests are capture-clock nanoseconds, and ``S`` is one second.
Frames are point items (``end_ns == capture_ns``). Audio chunks cover
``[capture_ns, end_ns)``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipeline.windows import Window, Windower

S = 1_000_000_000
MS = 1_000_000


def frame(windower: Windower, at_ns: int, stream: str = "frames") -> list[Window]:
    return windower.add(stream, at_ns, at_ns, f"{stream}@{at_ns // MS}")


def chunk(windower: Windower, start_ns: int, end_ns: int, stream: str = "audio") -> list[Window]:
    return windower.add(stream, start_ns, end_ns, f"{stream}@{start_ns // MS}")


def item_names(window: Window, stream: str) -> list[str]:
    return [entry[2] for entry in window.stream(stream)]


def feed(windower: Windower, items: list[tuple[str, int, int]]) -> list[Window]:
    """Add ``(stream, capture_ns, end_ns)`` items in the given order, then flush."""
    closed: list[Window] = []
    for stream, capture_ns, end_ns in items:
        closed += windower.add(stream, capture_ns, end_ns, f"{stream}@{capture_ns // MS}")
    return closed + windower.flush()


def signature(windows: list[Window]) -> list[tuple[Any, ...]]:
    """Everything a window hands out, with items sorted by capture time (arrival order may differ)."""
    return [
        (
            window.index,
            window.start_ns,
            window.end_ns,
            window.closed_by,
            {stream: sorted(entry[2] for entry in entries) for stream, entries in window.items.items()},
            window.missing,
            window.stale,
        )
        for window in windows
    ]


def camera_and_microphone(audio_delay_ns: int, frames_from_ns: int, audio_from_ns: int, until_ns: int) -> list[tuple[str, int, int]]:
    """Frames at 25 fps and 100 ms audio chunks, each chunk arriving ``audio_delay_ns`` after its end."""
    timed: list[tuple[int, int, tuple[str, int, int]]] = []
    for at in range(frames_from_ns, until_ns, 40 * MS):
        timed.append((at, 1, ("frames", at, at)))
    for start in range(audio_from_ns, until_ns, 100 * MS):
        timed.append((start + 100 * MS + audio_delay_ns, 0, ("audio", start, start + 100 * MS)))
    timed.append((2 * S, 0, ("alerts", 2 * S, 2 * S)))
    return [item for _, _, item in sorted(timed)]


def test_windows_lie_on_fixed_grid() -> None:
    windower = Windower(["frames"], length_s=1.0, hop_s=0.5)

    closed = []
    for at in range(1230 * MS, 4000 * MS, 100 * MS):
        closed += frame(windower, at)

    assert [window.index for window in closed] == [1, 2, 3, 4, 5]
    assert [(window.start_ns, window.end_ns) for window in closed] == [
        (500 * MS, 1500 * MS),
        (1000 * MS, 2000 * MS),
        (1500 * MS, 2500 * MS),
        (2000 * MS, 3000 * MS),
        (2500 * MS, 3500 * MS),
    ]
    assert item_names(closed[0], "frames") == [f"frames@{ms}" for ms in range(1230, 1500, 100)]


def test_grid_independent_of_first_arrival() -> None:
    early, late = Windower(["frames"]), Windower(["frames"])

    early_windows = [window for at in range(370 * MS, 3000 * MS, 100 * MS) for window in frame(early, at)]
    late_windows = [window for at in range(810 * MS, 3000 * MS, 100 * MS) for window in frame(late, at)]

    assert [window.start_ns for window in early_windows] == [0, 500 * MS, 1000 * MS, 1500 * MS]
    assert [window.start_ns for window in late_windows] == [0, 500 * MS, 1000 * MS, 1500 * MS]


def test_window_waits_for_every_stream() -> None:
    windower = Windower(["frames", "audio"], allowed_lateness_s=0.3)
    chunk(windower, 0, 900 * MS)

    frames_passed = frame(windower, 200 * MS) + frame(windower, 1100 * MS)
    audio_passed = chunk(windower, 900 * MS, 1000 * MS)

    assert frames_passed == []
    assert [window.index for window in audio_passed] == [0]
    assert audio_passed[0].closed_by == "watermark"
    assert audio_passed[0].missing == []
    assert item_names(audio_passed[0], "audio") == ["audio@0", "audio@900"]
    assert item_names(audio_passed[0], "frames") == ["frames@200"]


def test_lateness_closes_window_when_stream_lags() -> None:
    windower = Windower(["frames", "audio"], allowed_lateness_s=0.3)
    chunk(windower, 0, 600 * MS)

    before = frame(windower, 100 * MS) + frame(windower, 1299 * MS)
    at_lateness = frame(windower, 1300 * MS)

    assert before == []
    assert [window.index for window in at_lateness] == [0]
    assert at_lateness[0].closed_by == "lateness"
    assert item_names(at_lateness[0], "audio") == ["audio@0"]
    assert at_lateness[0].missing == []
    assert at_lateness[0].stale == []


def test_lateness_window_missing_lagging_stream() -> None:
    windower = Windower(["frames", "audio"], allowed_lateness_s=0.3, stale_after_s=2.0)
    chunk(windower, 0, 1000 * MS)

    closed = [window for at in range(1000 * MS, 2400 * MS, 100 * MS) for window in frame(windower, at)]

    assert [window.index for window in closed] == [0, 1, 2]
    assert [window.closed_by for window in closed] == ["watermark", "lateness", "lateness"]
    assert closed[1].missing == []
    assert closed[2].missing == ["audio"]
    assert closed[2].stale == []


def test_late_item_counted_and_dropped() -> None:
    windower = Windower(["frames", "audio"], allowed_lateness_s=0.3)
    chunk(windower, 0, 1000 * MS)
    first = frame(windower, 100 * MS) + frame(windower, 1000 * MS)

    late = chunk(windower, 200 * MS, 300 * MS)
    chunk(windower, 1000 * MS, 1500 * MS)
    after = frame(windower, 1500 * MS)

    assert [window.index for window in first] == [0]
    assert late == []
    assert windower.late["audio"] == 1
    assert [window.index for window in after] == [1]
    assert after[0].closed_by == "watermark"
    assert "audio@200" not in item_names(after[0], "audio")


def test_silent_stream_turns_stale_then_resumes() -> None:
    windower = Windower(["frames", "audio"], allowed_lateness_s=0.3, stale_after_s=2.0)
    closed: list[Window] = []
    for at in range(0, 1000 * MS, 100 * MS):
        closed += chunk(windower, at, at + 100 * MS)
        closed += frame(windower, at)

    for at in range(1000 * MS, 3100 * MS, 100 * MS):
        closed += frame(windower, at)
    stale_after_frame_3000 = "audio" in windower.stale
    closed += frame(windower, 3100 * MS)
    stale_after_frame_3100 = "audio" in windower.stale

    resumed: list[Window] = []
    for at in range(3200 * MS, 5000 * MS, 100 * MS):
        resumed += chunk(windower, at, at + 100 * MS)
        resumed += frame(windower, at)

    by_index = {window.index: window for window in closed + resumed}
    assert stale_after_frame_3000 is False
    assert stale_after_frame_3100 is True
    assert by_index[3].missing == ["audio"]
    assert by_index[3].stale == []
    assert by_index[4].missing == ["audio"]
    assert by_index[4].stale == ["audio"]
    assert by_index[4].closed_by == "watermark"
    assert "audio" not in windower.stale
    assert by_index[5].missing == []
    assert by_index[5].stale == []
    assert item_names(by_index[5], "audio")[0] == "audio@3200"


def test_processing_time_closes_by_injected_clock() -> None:
    # add() polls with the host's monotonic clock, so the capture times lie an
    # hour ahead of it and only the injected clock can close the window.
    base = (time.monotonic_ns() // S + 3600) * S
    windower = Windower(["frames", "audio"], allowed_lateness_s=0.3, processing_time=True)
    frame(windower, base + 600 * MS)

    before = windower.poll(now_ns=base + 1299 * MS)
    at_lateness = windower.poll(now_ns=base + 1300 * MS)

    assert before == []
    assert [window.start_ns for window in at_lateness] == [base]
    assert at_lateness[0].closed_by == "processing_time"
    assert at_lateness[0].missing == ["audio"]
    assert len(at_lateness[0].stream("frames")) == 1


def test_processing_time_old_alert_opens_no_past_windows() -> None:
    now = time.monotonic_ns()
    windower = Windower(["frames"], allowed_lateness_s=0.3, processing_time=True)

    replayed = windower.add("alerts", now - 20 * S, now - 20 * S, "road work")
    closed = frame(windower, now) + windower.poll(now_ns=now + 1400 * MS)

    assert replayed == []
    assert windower.late["alerts"] == 1
    assert 1 <= len(closed) <= 3
    assert all(window.end_ns + 300 * MS > now for window in closed)


def test_event_time_ignores_injected_clock() -> None:
    windower = Windower(["frames", "audio"], processing_time=False)
    frame(windower, 100 * MS)

    assert windower.poll(now_ns=100 * S) == []


def test_flush_closes_windows_holding_items() -> None:
    windower = Windower(["frames", "audio"])
    frame(windower, 100 * MS)
    frame(windower, 700 * MS)

    flushed = windower.flush()

    assert [window.index for window in flushed] == [0, 1]
    assert [window.closed_by for window in flushed] == ["flush", "flush"]
    assert item_names(flushed[0], "frames") == ["frames@100", "frames@700"]
    assert item_names(flushed[1], "frames") == ["frames@700"]
    assert windower.flush() == []


def test_flush_opens_no_empty_trailing_window() -> None:
    windower = Windower(["audio"])
    closed = chunk(windower, 0, 500 * MS)
    closed += chunk(windower, 500 * MS, 1000 * MS)
    closed += windower.add("alerts", 900 * MS, 900 * MS, "alert@900")

    flushed = windower.flush()

    # Window 2 would start at 1.0 s, where the last chunk ends, so it is never cut.
    assert [window.index for window in closed] == [0]
    assert [window.index for window in flushed] == [1]
    assert item_names(flushed[0], "audio") == ["audio@500"]
    assert windower.flush() == []


def test_audio_chunk_lands_in_overlapping_windows() -> None:
    windower = Windower(["audio"])

    closed = chunk(windower, 400 * MS, 500 * MS) + chunk(windower, 500 * MS, 1100 * MS) + chunk(windower, 1100 * MS, 2000 * MS)

    assert [window.index for window in closed] == [0, 1, 2]
    assert item_names(closed[0], "audio") == ["audio@400", "audio@500"]
    assert item_names(closed[1], "audio") == ["audio@500", "audio@1100"]
    assert item_names(closed[2], "audio") == ["audio@500", "audio@1100"]


def test_chunk_ending_at_window_start_excluded() -> None:
    windower = Windower(["audio"])

    closed = chunk(windower, 900 * MS, 1000 * MS) + chunk(windower, 1000 * MS, 2000 * MS)

    assert [window.index for window in closed] == [0, 1, 2]
    assert item_names(closed[2], "audio") == ["audio@1000"]


def test_alerts_never_hold_window() -> None:
    windower = Windower(["frames"], event_streams=("alerts",))
    frame(windower, 100 * MS)

    inside = windower.add("alerts", 600 * MS, 600 * MS, "road work")
    ahead = windower.add("alerts", 5 * S, 5 * S, "closure")
    closed = frame(windower, 1000 * MS)

    assert inside == []
    assert ahead == []
    assert [window.index for window in closed] == [0]
    assert closed[0].closed_by == "watermark"
    assert closed[0].missing == []
    assert item_names(closed[0], "alerts") == ["road work"]


def test_interleaving_within_lateness_same_windows() -> None:
    in_capture_order = camera_and_microphone(audio_delay_ns=0, frames_from_ns=1000 * MS, audio_from_ns=900 * MS, until_ns=4 * S)
    audio_lagging = camera_and_microphone(audio_delay_ns=200 * MS, frames_from_ns=1000 * MS, audio_from_ns=900 * MS, until_ns=4 * S)

    first = feed(Windower(["frames", "audio"], allowed_lateness_s=0.3), in_capture_order)
    second_windower = Windower(["frames", "audio"], allowed_lateness_s=0.3)
    second = feed(second_windower, audio_lagging)

    assert in_capture_order != audio_lagging
    assert second_windower.late == {}
    assert [window.index for window in first][:2] == [0, 1]
    assert signature(second) == signature(first)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"length_s": 1.0, "hop_s": 1.5}, "hop_s=1.5 is larger than length_s=1.0"),
        ({"length_s": 0.0, "hop_s": 0.5}, "length_s=0.0 and hop_s=0.5 must be greater than 0"),
    ],
    ids=["hop_above_length", "zero_length"],
)
def test_windower_rejects_invalid_durations(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Windower(["frames"], **arguments)
