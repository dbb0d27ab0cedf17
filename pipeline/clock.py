"""Capture clocks: the host's monotonic clock and device clocks mapped onto it.

All capture times in scenewatch are nanoseconds on ``CLOCK_MONOTONIC``
(``time.monotonic_ns()``), which every process on one host shares. Wall-clock
time (``time.time_ns()``) travels beside it for people and logs; windows are
never cut on it, because it can step.

Example::

    >>> from pipeline.clock import DeviceClockMapper
    >>> mapper = DeviceClockMapper()
    >>> mapper.observe(device_now_s=10.0, host_now_ns=5_000_000_000)
    >>> mapper.to_host_ns(9.9)
    4900000000
"""

from __future__ import annotations

import time

__all__ = ["monotonic_ns", "wall_ns", "DeviceClockMapper", "SampleClock"]


def monotonic_ns() -> int:
    """Return the host's monotonic clock in nanoseconds (the capture clock)."""
    return time.monotonic_ns()


def wall_ns() -> int:
    """Return Unix wall-clock time in nanoseconds."""
    return time.time_ns()


class DeviceClockMapper:
    """Map a device clock in seconds (PortAudio stream time) onto the host monotonic clock.

    Each ``observe`` pairs a reading of the device clock with a host reading
    taken right after it. The offset keeps the smallest host-minus-device
    difference seen in the last ``window`` observations: scheduling delays
    only ever make the host reading late, so the minimum is the closest to
    the true offset.

    Args:
        window: Observations kept for the minimum.
    """

    def __init__(self, window: int = 64) -> None:
        self._window = window
        self._offsets: list[int] = []

    @property
    def ready(self) -> bool:
        return bool(self._offsets)

    def observe(self, device_now_s: float, host_now_ns: int) -> None:
        self._offsets.append(host_now_ns - round(device_now_s * 1e9))
        if len(self._offsets) > self._window:
            del self._offsets[0]

    def to_host_ns(self, device_time_s: float) -> int:
        """Return the host monotonic time, in nanoseconds, of a device time in seconds.

        Raises:
            RuntimeError: No observation has been made yet.
        """
        if not self._offsets:
            raise RuntimeError("DeviceClockMapper has no observation yet; call observe() first")
        return round(device_time_s * 1e9) + min(self._offsets)


class SampleClock:
    """Capture time by counting samples from an anchor, for devices without usable timestamps.

    Args:
        sample_rate: Samples per second per channel.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._anchor_ns: int | None = None
        self._samples = 0

    def anchor(self, first_sample_ns: int) -> None:
        """Set the host time of the next sample and restart the count (after a gap)."""
        self._anchor_ns = first_sample_ns
        self._samples = 0

    @property
    def anchored(self) -> bool:
        return self._anchor_ns is not None

    def advance(self, frames: int) -> int:
        """Return the host time, in nanoseconds, of the first of the next ``frames`` samples."""
        if self._anchor_ns is None:
            raise RuntimeError("SampleClock is not anchored; call anchor() first")
        start = self._anchor_ns + self._samples * 1_000_000_000 // self.sample_rate
        self._samples += frames
        return start
