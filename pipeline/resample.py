"""Streaming sample-rate conversion for audio that arrives in chunks.

``scipy.signal.resample_poly`` on each chunk alone would ring at every chunk
edge. :class:`StreamResampler` keeps a little input history and holds back
the newest samples until the filter has seen what follows them, so the
concatenated output equals one pass over the whole signal (up to the start
and end of the stream). The cost is a delay of ``latency_s``.

Example::

    >>> import numpy as np
    >>> resampler = StreamResampler(44_100, 16_000, channels=1)
    >>> out = resampler.process(np.zeros((4410, 1), dtype=np.float32))
    >>> out.shape[1], out.dtype
    (1, dtype('float32'))
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

__all__ = ["StreamResampler"]


class StreamResampler:
    """Convert ``(frames, channels)`` float32 chunks from ``rate_in`` to ``rate_out`` Hz.

    Args:
        rate_in: Input sample rate in Hz.
        rate_out: Output sample rate in Hz.
        channels: Channel count of every chunk.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        divisor = gcd(rate_in, rate_out)
        self.up = rate_out // divisor
        self.down = rate_in // divisor
        self.rate_in = rate_in
        self.rate_out = rate_out
        self.channels = channels
        # resample_poly's default filter spans 10 * max(up, down) output-rate
        # taps on each side; in input samples that is about 10 * max / up.
        reach = int(np.ceil(10 * max(self.up, self.down) / self.up)) + 1
        self._block = self.down * int(np.ceil(reach / self.down))
        self._history = np.zeros((self._block, channels), dtype=np.float32)
        self._held = np.zeros((0, channels), dtype=np.float32)
        self._first = True

    @property
    def latency_s(self) -> float:
        """Delay between a sample entering and its converted sample leaving, in seconds."""
        return self._block / self.rate_in

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Return the converted samples that are final after adding ``chunk``."""
        if self.up == self.down:
            return chunk.astype(np.float32, copy=False)
        pending = np.concatenate([self._held, chunk.astype(np.float32, copy=False)])
        # Keep back one block for the filter's look-ahead, and convert whole
        # multiples of `down` so output samples stay on the input grid.
        usable = (len(pending) - self._block) // self.down * self.down
        if usable <= 0:
            self._held = pending
            return np.zeros((0, self.channels), dtype=np.float32)
        span = np.concatenate([self._history, pending[: usable + self._block]])
        converted = resample_poly(span, self.up, self.down, axis=0).astype(np.float32)
        start = self._block * self.up // self.down
        out = converted[start : start + usable * self.up // self.down]
        self._history = pending[usable - self._block : usable]
        self._held = pending[usable:]
        return out
