"""Microphone node: capture audio with a sounddevice callback stream and publish chunks.

The PortAudio callback only copies each block, with its ADC time, into a
queue; a worker thread assembles chunks of ``chunk_s`` seconds, resamples
them when the device runs at another rate, and publishes them on the
``audio`` output.

Capture time of a chunk is the time of its first sample on the host
monotonic clock. It comes from the block's ``inputBufferAdcTime``, mapped
from the stream clock onto the host clock with
:class:`~pipeline.clock.DeviceClockMapper`. Devices that report no usable ADC
time (zero, or far from the stream's current time) fall back to counting
samples from the first callback, with :class:`~pipeline.clock.SampleClock`.
Block times jitter, so a chunk's time is the sample count since the stream
opened plus the median offset of the last 50 blocks (about one second).

NOTE: PulseAudio's ALSA plugin reports ADC times from a latency estimate that
shrinks from about 300 ms to 20 ms over the first two seconds of a stream;
capture times of that stretch are off by up to that amount.

An input overflow (samples lost in the device or driver) is counted, logged
at a limited rate, and flagged in the next chunk's header as ``gap_before``.

Graph entry::

    - id: microphone
      node: microphone
      outputs: {audio: audio}
      params: {device: pulse, sample_rate: 16000, channels: 1, chunk_s: 0.1}
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.clock import DeviceClockMapper, SampleClock, monotonic_ns, wall_ns
from pipeline.node import NodeContext, standalone_main
from pipeline.resample import StreamResampler
from pipeline.transport import Publisher, RateLimitedLog

__all__ = ["Params", "run", "OUTPUTS", "DeviceNotFoundError", "input_devices", "resolve_device"]

log = logging.getLogger(__name__)

OUTPUTS = ("audio",)


class Params(BaseModel):
    """Microphone node parameters."""

    model_config = ConfigDict(extra="forbid")

    device: int | str | None = None
    """Input device index or (part of its) name; None is the system default."""
    sample_rate: int = Field(default=16_000, gt=0)
    """Sample rate of the published audio, in Hz."""
    channels: int = Field(default=1, gt=0)
    chunk_s: float = Field(default=0.1, gt=0, le=10)
    """Duration of each published chunk, in seconds."""
    dtype: Literal["float32", "int16"] = "float32"
    block_s: float = Field(default=0.02, gt=0)
    """PortAudio callback block duration, in seconds."""
    latency: Literal["low", "high"] | float = "low"
    clock: Literal["auto", "adc", "samples"] = "auto"
    """Capture clock: ADC times when usable (auto), ADC only, or counting samples."""
    stall_timeout_s: float = Field(default=2.0, gt=0)
    """A stream that delivers no samples for this long is closed and opened again."""
    open_timeout_s: float = Field(default=10.0, gt=0)
    """Time a newly opened stream may take to deliver its first samples (a sound server may start slowly)."""
    reopen_backoff_s: float = Field(default=0.5, gt=0)
    queue_blocks: int = Field(default=2000, gt=0)
    """Callback blocks buffered for the chunk assembler; beyond this, samples are lost and counted as an overflow."""
    debug_stall_s: float = Field(default=0.0, ge=0)
    """Testing aid: pause the chunk assembler once, this many seconds, after the first chunk, to provoke an overflow."""


class DeviceNotFoundError(LookupError):
    """The requested input device does not exist; the message lists the ones that do."""


def input_devices() -> list[dict[str, Any]]:
    """Return every device with input channels, as sounddevice describes them."""
    import sounddevice as sd

    return [dict(device, index=index) for index, device in enumerate(sd.query_devices()) if device["max_input_channels"] > 0]


def _device_list() -> str:
    lines = [f"  {d['index']}: {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:.0f} Hz)" for d in input_devices()]
    return "\n".join(lines) if lines else "  (none; is PortAudio able to see a sound server or card?)"


def resolve_device(device: int | str | None) -> dict[str, Any]:
    """Return the sounddevice description of an input device.

    Raises:
        DeviceNotFoundError: No input device matches; the message lists the available ones.
    """
    import sounddevice as sd

    try:
        info = sd.query_devices(device, "input")
    except (ValueError, sd.PortAudioError) as error:
        raise DeviceNotFoundError(
            f"input device {device!r} not found ({error}). Available input devices:\n{_device_list()}\n"
            "Set params.device to one of these indexes or names."
        ) from None
    return dict(info)


def choose_rate(device: int | None, requested: int, channels: int, dtype: str) -> int:
    """Return ``requested`` if the device accepts it, else the device's default rate."""
    import sounddevice as sd

    try:
        sd.check_input_settings(device=device, samplerate=requested, channels=channels, dtype="float32")
        return requested
    except (ValueError, sd.PortAudioError) as error:
        native = int(sd.query_devices(device, "input")["default_samplerate"])
        log.warning(
            "microphone: device %s rejects %d Hz (%s); capturing at its native %d Hz and resampling to %d Hz",
            device,
            requested,
            error,
            native,
            requested,
        )
        return native


@dataclass
class _Block:
    samples: np.ndarray
    adc_time_s: float
    current_time_s: float
    host_ns: int
    overflow: bool


class MicrophoneNode:
    """Own the input stream and turn its blocks into published chunks."""

    def __init__(self, node: NodeContext, publisher: Publisher) -> None:
        self.node = node
        self.params: Params = node.params
        self.publisher = publisher
        self.blocks: queue.Queue[_Block] = queue.Queue(maxsize=self.params.queue_blocks)
        self.overflows = 0
        self.queue_overflows = 0
        self._queue_lost = False
        self.chunks = 0
        self._overflow_log = RateLimitedLog(log)
        self._mapper = DeviceClockMapper()

        self._sample_clock: SampleClock | None = None
        self._use_adc: bool | None = None if self.params.clock == "auto" else self.params.clock == "adc"

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        block = _Block(
            samples=indata.copy(),
            adc_time_s=float(time_info.inputBufferAdcTime),
            current_time_s=float(time_info.currentTime),
            host_ns=monotonic_ns(),
            # Blocks dropped below for a full queue count as an overflow
            # before the next block that gets through.
            overflow=bool(status.input_overflow) or self._queue_lost,
        )
        try:
            self.blocks.put_nowait(block)
            self._queue_lost = False
        except queue.Full:
            self.queue_overflows += 1
            self._queue_lost = True

    def run(self) -> None:
        """Open the device and publish chunks; reopen a stream that stalls, until stopped.

        Raises:
            DeviceNotFoundError: The configured device does not exist.
        """
        info = resolve_device(self.params.device)
        backoff = self.params.reopen_backoff_s
        while not self.node.stopped:
            if self._capture(info) == "stopped":
                break
            log.warning("microphone: reopening %r in %.1f s", info["name"], backoff)
            if self.node.wait(backoff):
                break
            backoff = min(backoff * 2, 10.0)
        log.info("microphone: stopped after %d chunks, %d overflows", self.chunks, self.overflows)

    def _capture(self, info: dict[str, Any]) -> str:
        import sounddevice as sd

        device_index = int(info["index"])
        rate = choose_rate(device_index, self.params.sample_rate, self.params.channels, self.params.dtype)
        self.device_rate = rate
        self._sample_clock = SampleClock(rate)
        self._mapper = DeviceClockMapper()
        resampler = StreamResampler(rate, self.params.sample_rate, self.params.channels) if rate != self.params.sample_rate else None
        try:
            stream = sd.InputStream(
                device=device_index,
                samplerate=rate,
                channels=self.params.channels,
                dtype="float32",
                blocksize=max(1, round(self.params.block_s * rate)),
                latency=self.params.latency,
                callback=self._callback,
            )
        except sd.PortAudioError as error:
            log.error("microphone: cannot open %r at %d Hz: %s", info["name"], rate, error)
            return "failed"
        log.info(
            "microphone: capturing from %r at %d Hz, %d channels, publishing %.0f ms chunks at %d Hz",
            info["name"],
            rate,
            self.params.channels,
            self.params.chunk_s * 1000,
            self.params.sample_rate,
        )
        with stream:
            return self._assemble(resampler)

    def _block_start_ns(self, block: _Block, rate: int) -> int:
        """Return the host time of a block's first sample, from ADC time or by counting samples."""
        assert self._sample_clock is not None
        adc_usable = block.adc_time_s > 0 and 0 <= block.current_time_s - block.adc_time_s < 1.0
        if self._use_adc is None:
            self._use_adc = adc_usable
            log.info("microphone: capture clock is %s", "ADC time" if adc_usable else "sample counting")
        if self._use_adc and adc_usable:
            self._mapper.observe(block.current_time_s, block.host_ns)
            return self._mapper.to_host_ns(block.adc_time_s)
        if not self._sample_clock.anchored:
            self._sample_clock.anchor(block.host_ns - round(len(block.samples) / rate * 1e9))
        return self._sample_clock.advance(len(block.samples))

    def _assemble(self, resampler: StreamResampler | None) -> str:
        """Cut blocks into chunks; each chunk's time comes from the block that holds its first sample."""
        rate_in, rate_out = self.device_rate, self.params.sample_rate
        chunk_frames = max(1, round(self.params.chunk_s * rate_out))
        pending: list[np.ndarray] = []
        pending_frames = 0
        in_index = out_index = 0  # samples since the start of the current gap-free segment
        anchors: collections.deque[tuple[int, int]] = collections.deque(maxlen=50)
        gap = False

        last_block = time.monotonic()
        stall_pending = self.params.debug_stall_s
        while not self.node.stopped:
            try:
                block = self.blocks.get(timeout=0.1)
            except queue.Empty:
                limit_s = self.params.stall_timeout_s if self.chunks or anchors else self.params.open_timeout_s
                if time.monotonic() - last_block > limit_s:
                    log.warning("microphone: no samples for %.1f s; the stream has stalled", limit_s)
                    return "stalled"
                continue
            last_block = time.monotonic()
            if stall_pending and self.chunks:
                log.warning("microphone: debug_stall_s: pausing the assembler for %.2f s", stall_pending)
                time.sleep(stall_pending)
                stall_pending = 0.0

            start_ns = self._block_start_ns(block, rate_in)
            if block.overflow:
                self.overflows += 1
                self._overflow_log.warning("overflow", "microphone: input overflow, samples lost (%d so far)", self.overflows)
                if pending_frames:  # samples before the gap go out as a shorter chunk
                    self._publish(np.concatenate(pending), _time_of(anchors, out_index * rate_in / rate_out, rate_in), gap)
                pending, pending_frames, in_index, out_index = [], 0, 0, 0
                anchors.clear()
                gap = True
                if resampler is not None:
                    resampler = StreamResampler(rate_in, rate_out, self.params.channels)
                if not self._use_adc:
                    self._sample_clock = SampleClock(rate_in)
                    start_ns = self._block_start_ns(block, rate_in)

            anchors.append((in_index, start_ns))
            in_index += len(block.samples)
            converted = resampler.process(block.samples) if resampler else block.samples
            if len(converted):
                pending.append(converted)
                pending_frames += len(converted)

            while pending_frames >= chunk_frames:
                samples = np.concatenate(pending)
                chunk, rest = samples[:chunk_frames], samples[chunk_frames:]
                self._publish(chunk, _time_of(anchors, out_index * rate_in / rate_out, rate_in), gap)
                gap = False
                out_index += chunk_frames
                pending, pending_frames = ([rest], len(rest)) if len(rest) else ([], 0)
        return "stopped"

    def _publish(self, chunk: np.ndarray, capture_ns: int, gap: bool) -> None:
        if self.params.dtype == "int16":
            chunk = np.clip(np.round(chunk * 32767.0), -32768, 32767).astype(np.int16)
        self.publisher.source_drops = self.overflows
        self.publisher.send_audio(
            chunk,
            self.params.sample_rate,
            capture_ns=capture_ns,
            capture_wall_ns=wall_ns() - (monotonic_ns() - capture_ns),
            gap_before=gap,
        )
        self.chunks += 1


def _time_of(anchors: "collections.deque[tuple[int, int]]", input_index: float, rate_in: int) -> int:
    """Return the host time, in nanoseconds, of an input sample index.

    Each anchor pairs a block's first input index with its host time. Block
    times jitter by a few milliseconds (PulseAudio estimates its ADC times),
    so the offset between the sample count and the host clock is the median
    over the recent anchors; the rolling window still follows slow drift.
    """
    offsets = [host_ns - index * 1e9 / rate_in for index, host_ns in anchors]
    return round(float(np.median(offsets)) + input_index * 1e9 / rate_in)


def run(node: NodeContext) -> None:
    """Capture and publish until stopped."""
    publisher = node.publisher("audio")
    MicrophoneNode(node, publisher).run()


if __name__ == "__main__":
    standalone_main("microphone")
