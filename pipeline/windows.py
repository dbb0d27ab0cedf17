"""Cut streams of messages into overlapping windows by capture time.

Windows lie on a fixed grid of the capture clock: window ``k`` covers
``[k * hop, k * hop + length)`` nanoseconds. The grid does not depend on when
the first message arrived, so a replay cuts the same windows every time.

A window closes, and is handed out with what arrived, as soon as one of:

1. every expected stream that is not stale has passed the window's end (its
   *watermark*, the capture time of the newest sample, is at or beyond it);
2. some stream is ``allowed_lateness_s`` past the end (event time);
3. with ``processing_time=True`` (live capture, where the capture clock is
   this host's monotonic clock), the host clock is ``allowed_lateness_s``
   past the end.

Rule 1 depends only on the data, which makes replays deterministic; rules 2
and 3 keep the pipeline moving when a stream lags or stops. A stream whose
watermark falls ``stale_after_s`` behind the newest stream (or, with
processing time, behind the host clock) is *stale*: windows stop waiting for
it and list it as missing, until it sends again.

Messages for windows that have already closed are counted as late and kept
for the windows still open. Event streams (alerts) have no watermark and
never hold a window back.

Example::

    >>> windower = Windower(["camera", "audio"], length_s=1.0, hop_s=0.5)
    >>> windower.add("camera", capture_ns=100_000_000, end_ns=100_000_000, item="f0")
    []
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["Window", "Windower"]

log = logging.getLogger(__name__)


@dataclass
class Window:
    """One closed window and the items whose capture time falls in it."""

    index: int
    start_ns: int
    end_ns: int
    items: dict[str, list[tuple[int, int, Any]]]
    """Per stream, ``(capture_ns, end_ns, item)`` in arrival order."""
    missing: list[str] = field(default_factory=list)
    """Expected streams with nothing in this window (stale or silent)."""
    stale: list[str] = field(default_factory=list)
    closed_by: str = "watermark"
    """Closing rule: watermark, lateness, processing_time or flush."""

    def stream(self, name: str) -> list[tuple[int, int, Any]]:
        return self.items.get(name, [])


class Windower:
    """Assign items to windows and close windows by the rules in the module docstring.

    Args:
        expected: Continuous streams a window waits for (camera, audio).
        length_s: Window length in seconds.
        hop_s: Distance between window starts in seconds.
        allowed_lateness_s: How long past a window's end a lagging stream is waited for, seconds.
        stale_after_s: A stream this far behind is stale, seconds.
        processing_time: Also close windows by the host monotonic clock (live only).
        event_streams: Streams without a watermark (alerts).

    Raises:
        ValueError: ``hop_s`` is larger than ``length_s``, or a duration is not positive.
    """

    def __init__(
        self,
        expected: Iterable[str],
        length_s: float = 1.0,
        hop_s: float = 0.5,
        allowed_lateness_s: float = 0.3,
        stale_after_s: float = 2.0,
        processing_time: bool = False,
        event_streams: Iterable[str] = ("alerts",),
    ) -> None:
        if length_s <= 0 or hop_s <= 0:
            raise ValueError(f"window length_s={length_s} and hop_s={hop_s} must be greater than 0")
        if hop_s > length_s:
            raise ValueError(f"window hop_s={hop_s} is larger than length_s={length_s}; samples would fall between windows")
        self.expected = list(expected)
        self.event_streams = set(event_streams)
        self.length_ns = round(length_s * 1e9)
        self.hop_ns = round(hop_s * 1e9)
        self.lateness_ns = round(allowed_lateness_s * 1e9)
        self.stale_ns = round(stale_after_s * 1e9)
        self.processing_time = processing_time
        self.watermarks: dict[str, int] = {}
        self.last_arrival: dict[str, float] = {}
        self.stale: set[str] = set()
        self.late: collections.Counter[str] = collections.Counter()
        self._items: dict[str, collections.deque[tuple[int, int, Any]]] = collections.defaultdict(collections.deque)
        self._next_index: int | None = None  # index of the oldest window not yet closed
        self._closed_any = False

    def window_bounds(self, index: int) -> tuple[int, int]:
        start = index * self.hop_ns
        return start, start + self.length_ns

    def add(self, stream: str, capture_ns: int, end_ns: int, item: Any) -> list[Window]:
        """Add an item that covers ``[capture_ns, end_ns]``; return the windows that closed.

        For a frame ``end_ns`` equals ``capture_ns``; for an audio chunk it is
        the time just after its last sample.
        """
        first_index = max(0, (capture_ns - self.length_ns) // self.hop_ns + 1)
        if self._next_index is None:
            # The first window is the first one that contains this item, unless
            # rule 2 or 3 would close it at once (an old alert replayed from a
            # transient_local history, for example).
            self._next_index = max(first_index, self._oldest_open_index())
        elif first_index < self._next_index and not self._closed_any:
            # Until a window closes, an earlier item moves the first window
            # back, so the windows do not depend on which stream sent first.
            self._next_index = max(first_index, self._oldest_open_index())
        start, _ = self.window_bounds(self._next_index)
        if end_ns < start:
            self.late[stream] += 1
            log.debug("late %s item at %d ns, before open window %d", stream, capture_ns, self._next_index)
            return self.poll()
        self._items[stream].append((capture_ns, end_ns, item))
        self.last_arrival[stream] = time.monotonic()
        if stream not in self.event_streams:
            self.watermarks[stream] = max(self.watermarks.get(stream, end_ns), end_ns)
            if stream in self.stale:
                self.stale.discard(stream)
                log.info("stream %s resumed", stream)
        return self.poll()

    def _oldest_open_index(self) -> int:
        """Return the oldest window that the lateness and processing-time rules do not close yet."""
        newest = max(self.watermarks.values(), default=0)
        if self.processing_time:
            newest = max(newest, time.monotonic_ns())
        return max(0, (newest - self.length_ns - self.lateness_ns) // self.hop_ns + 1)

    def _update_stale(self, newest_ns: int) -> None:
        now = time.monotonic()
        for stream in self.expected:
            mark = self.watermarks.get(stream)
            behind = mark is None or newest_ns - mark > self.stale_ns
            if self.processing_time:
                arrival = self.last_arrival.get(stream)
                behind = arrival is None or now - arrival > self.stale_ns / 1e9
            if behind and stream not in self.stale and (mark is not None or newest_ns - self._grid_start() > self.stale_ns):
                self.stale.add(stream)
                log.warning("stream %s is stale (nothing for %.1f s); windows no longer wait for it", stream, self.stale_ns / 1e9)

    def _grid_start(self) -> int:
        return self.window_bounds(self._next_index or 0)[0]

    def poll(self, now_ns: int | None = None) -> list[Window]:
        """Close every window whose closing rule holds; call it also when no message arrives."""
        if self._next_index is None:
            return []
        closed: list[Window] = []
        while True:
            start, end = self.window_bounds(self._next_index)
            marks = [mark for stream, mark in self.watermarks.items() if stream in self.expected or stream not in self.event_streams]
            newest = max(marks) if marks else None
            if newest is not None:
                self._update_stale(newest)
            waiting = [stream for stream in self.expected if stream not in self.stale]
            rule = None
            if waiting and all(self.watermarks.get(stream, -1) >= end for stream in waiting):
                rule = "watermark"
            elif not waiting and newest is not None and newest >= end:
                rule = "watermark"
            elif newest is not None and newest >= end + self.lateness_ns:
                rule = "lateness"
            elif self.processing_time and (now_ns if now_ns is not None else time.monotonic_ns()) >= end + self.lateness_ns:
                rule = "processing_time"
            if rule is None:
                return closed
            closed.append(self._close(self._next_index, rule))

    def flush(self) -> list[Window]:
        """Close every window that contains an item of a continuous stream (end of a replay).

        Alerts alone open no window: an alert is still active in the last
        window that closes, and windows after the data would only repeat it.
        """
        closed: list[Window] = []

        def continuous_items_left() -> bool:
            return any(queue for stream, queue in self._items.items() if stream not in self.event_streams)

        while self._next_index is not None and continuous_items_left():
            closed.append(self._close(self._next_index, "flush"))
        return closed

    def _spent(self, stream: str, entry: tuple[int, int, Any], next_start: int, end: int) -> bool:
        if stream in self.event_streams:
            return entry[0] < end
        return entry[1] <= next_start and entry[0] < next_start

    def _close(self, index: int, rule: str) -> Window:
        start, end = self.window_bounds(index)
        items: dict[str, list[tuple[int, int, Any]]] = {}
        for stream, queue in self._items.items():
            # An audio chunk that ends exactly at ``start`` has no sample in
            # the window, but a frame (end equals capture) at ``start`` is inside.
            inside = [entry for entry in queue if entry[0] < end and (entry[1] > start or entry[0] >= start)]
            if stream in self.event_streams:
                inside = [entry for entry in queue if entry[0] < end]
            if inside:
                items[stream] = inside
            # Drop what no later window can use, by the same rule as `inside`
            # applied to the next window's start.
            next_start = start + self.hop_ns
            while queue and self._spent(stream, queue[0], next_start, end):
                queue.popleft()
        self._next_index = index + 1
        self._closed_any = True
        missing = [stream for stream in self.expected if stream not in items]
        return Window(index, start, end, items, missing=missing, stale=sorted(self.stale), closed_by=rule)
