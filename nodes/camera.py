"""Camera node: capture frames with OpenCV and publish them on the ``frames`` output.

Sources: a device index (``0``), a video file, a stream URL (``rtsp://``,
``http://``) or ``testpattern`` (generated frames, needs no hardware).

A reader thread owns the ``cv2.VideoCapture`` and keeps only the newest frame
in a one-slot buffer; the publishing loop takes it from there. A slow
publisher therefore never sends a stale frame: frames replaced in the slot
are counted as source drops and reported in every header. A reader that
delivers nothing for ``read_timeout_s`` is abandoned (a blocked ``read()``
cannot be interrupted) and the source is reopened with exponential backoff.

Capture times: for devices and streams, the host monotonic clock right after
``grab()`` returns; for files, a fixed origin plus the frame's presentation
time from the container, so times follow the file and not the decoder speed.

Graph entry::

    - id: camera
      node: camera
      outputs: {frames: camera}
      params: {source: ../drive.mp4, fps: 10, encoding: jpeg, jpeg_quality: 85}
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.clock import monotonic_ns, wall_ns
from pipeline.node import NodeContext, standalone_main
from pipeline.transport import Publisher, RateLimitedLog

__all__ = ["Params", "run", "OUTPUTS", "TestPattern"]

log = logging.getLogger(__name__)

OUTPUTS = ("frames",)


class Params(BaseModel):
    """Camera node parameters."""

    model_config = ConfigDict(extra="forbid")

    source: int | str = "testpattern"
    """Device index, video file path, stream URL, or ``testpattern``."""
    fps: float | None = Field(default=None, gt=0)
    """Frames published per second at most; None publishes every frame of the source."""
    width: int | None = Field(default=None, gt=0)
    """Output width in pixels; frames are resized when the source differs. None keeps the source's."""
    height: int | None = Field(default=None, gt=0)
    encoding: Literal["jpeg", "bgr8", "rgb8"] = "jpeg"
    jpeg_quality: int = Field(default=85, ge=1, le=100)
    read_timeout_s: float = Field(default=2.0, gt=0)
    """A source that delivers no frame for this long is reopened."""
    reopen_backoff_s: float = Field(default=0.5, gt=0)
    reopen_backoff_max_s: float = Field(default=10.0, gt=0)
    realtime: bool = True
    """For files: publish at the file's own pace. False reads as fast as publishing allows, losing no frame."""
    loop: bool = False
    """For files: start again at the end; capture times keep increasing."""
    wait_for_subscribers: int = Field(default=0, ge=0)
    """Wait until this many subscribers are connected before the first frame (files, tests)."""
    wait_timeout_s: float = Field(default=10.0, gt=0)
    pattern_size: tuple[int, int] = (640, 480)
    """Width and height of ``testpattern`` frames, in pixels."""

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: int | str) -> int | str:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return value


def source_kind(source: int | str) -> str:
    """Classify a source as ``device``, ``stream``, ``testpattern`` or ``file``."""
    if isinstance(source, int):
        return "device"
    if source == "testpattern":
        return "testpattern"
    if "://" in source:
        return "stream"
    return "file"


class TestPattern:
    """Generated frames: colour bars, a moving box and the frame number, for runs without a camera."""

    __test__ = False  # not a pytest class

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        colours = np.array(
            [[255, 255, 255], [0, 255, 255], [255, 255, 0], [0, 255, 0], [255, 0, 255], [0, 0, 255], [255, 0, 0]],
            dtype=np.uint8,
        )
        columns = np.arange(width) * len(colours) // width
        self._bars = np.repeat(colours[columns][None, :, :], height, axis=0)
        self.index = 0

    def read(self) -> np.ndarray:
        frame = self._bars.copy()
        size = max(8, self.height // 6)
        x = (self.index * 7) % max(1, self.width - size)
        y = self.height // 2 - size // 2
        frame[y : y + size, x : x + size] = 0
        cv2.putText(frame, f"scenewatch {self.index}", (10, self.height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2)
        self.index += 1
        return frame


@dataclass
class _Grabbed:
    image: np.ndarray
    capture_ns: int
    capture_wall_ns: int
    stream_time_s: float | None


class _Reader(threading.Thread):
    """Read one opened source into a one-slot buffer until it ends, stalls or is abandoned."""

    def __init__(self, params: Params, capture: cv2.VideoCapture | TestPattern, origin_ns: int, lossless: bool) -> None:
        super().__init__(name="camera-reader", daemon=True)
        self.params = params
        self.capture = capture
        self.kind = source_kind(params.source)
        self.origin_ns = origin_ns
        self.lossless = lossless
        self.condition = threading.Condition()
        self.slot: _Grabbed | None = None
        self.replaced = 0
        self.ended = False
        self.failed = False
        self.abandoned = False
        self.last_frame_monotonic = time.monotonic()
        self.last_stream_time_s = 0.0
        self.frames = 0

    def _put(self, grabbed: _Grabbed) -> None:
        with self.condition:
            if self.lossless:
                while self.slot is not None and not self.abandoned:
                    self.condition.wait(0.1)
            if self.abandoned:
                return
            if self.slot is not None:
                self.replaced += 1
            self.slot = grabbed
            self.last_frame_monotonic = time.monotonic()
            self.condition.notify_all()

    def take(self, timeout_s: float) -> _Grabbed | None:
        with self.condition:
            if self.slot is None:
                self.condition.wait(timeout_s)
            grabbed, self.slot = self.slot, None
            self.condition.notify_all()
            return grabbed

    def run(self) -> None:
        try:
            self._loop()
        except cv2.error as error:
            log.error("camera source %r: OpenCV error while reading: %s", self.params.source, error)
            self.failed = True
        finally:
            with self.condition:
                self.ended = True
                self.condition.notify_all()

    def _loop(self) -> None:
        period_s = 1.0 / self.params.fps if self.params.fps else 1.0 / 30.0
        while not self.abandoned:
            if isinstance(self.capture, TestPattern):
                next_ns = self.origin_ns + round(self.frames * period_s * 1e9)
                delay = (next_ns - monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                image = self.capture.read()
                self._put(_Grabbed(image, monotonic_ns(), wall_ns(), None))
                self.frames += 1
                continue

            if not self.capture.grab():
                if self.kind == "file":
                    self.ended = True
                else:
                    log.warning("camera source %r: grab() failed", self.params.source)
                    self.failed = True
                return
            grabbed_ns, grabbed_wall = monotonic_ns(), wall_ns()
            stream_time_s = None
            if self.kind == "file":
                stream_time_s = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                self.last_stream_time_s = stream_time_s
                grabbed_ns = self.origin_ns + round(stream_time_s * 1e9)
                grabbed_wall = wall_ns() + (grabbed_ns - monotonic_ns())
                if self.params.realtime:
                    delay = (grabbed_ns - monotonic_ns()) / 1e9
                    if delay > 0:
                        time.sleep(delay)
            ok, image = self.capture.retrieve()
            if not ok or image is None:
                log.warning("camera source %r: retrieve() returned no image", self.params.source)
                continue
            self._put(_Grabbed(image, grabbed_ns, grabbed_wall, stream_time_s))
            self.frames += 1


def open_source(params: Params) -> cv2.VideoCapture | TestPattern:
    """Open the configured source.

    Raises:
        FileNotFoundError: A file source does not exist.
        OSError: OpenCV cannot open the source.
    """
    kind = source_kind(params.source)
    if kind == "testpattern":
        width, height = params.width or params.pattern_size[0], params.height or params.pattern_size[1]
        return TestPattern(width, height)
    if kind == "file" and not Path(str(params.source)).exists():
        raise FileNotFoundError(f"camera source file {params.source} not found; check params.source")

    timeout_ms = int(params.read_timeout_s * 1000)
    open_params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    capture = cv2.VideoCapture(params.source, cv2.CAP_ANY, open_params)
    if not capture.isOpened():
        hint = "check the device index with v4l2-ctl --list-devices" if kind == "device" else "check the path or URL"
        raise OSError(f"camera source {params.source!r} could not be opened; {hint}")
    if kind in ("device", "stream"):
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if kind == "device":
        if params.width and params.height:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, params.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, params.height)
        if params.fps:
            capture.set(cv2.CAP_PROP_FPS, params.fps)
    return capture


class CameraNode:
    """The publishing loop: open, read through a :class:`_Reader`, resize, encode and send."""

    def __init__(self, node: NodeContext, publisher: Publisher) -> None:
        self.node = node
        self.params: Params = node.params
        self.publisher = publisher
        self.kind = source_kind(self.params.source)
        self.published = 0
        self.skipped = 0
        self._last_publish_ns = 0
        self._drop_log = RateLimitedLog(log)
        self._origin_ns: int | None = None
        self._stale_before = 0

    def run(self) -> None:
        if self.params.wait_for_subscribers:
            if not self.publisher.wait_for_subscribers(self.params.wait_for_subscribers, self.params.wait_timeout_s):
                log.warning(
                    "camera: %d subscribers did not connect within %.1f s; publishing anyway",
                    self.params.wait_for_subscribers,
                    self.params.wait_timeout_s,
                )
        backoff = self.params.reopen_backoff_s
        while not self.node.stopped:
            try:
                capture = open_source(self.params)
            except FileNotFoundError:
                raise
            except OSError as error:
                log.warning("camera: %s; retrying in %.1f s", error, backoff)
                if self.node.wait(backoff):
                    return
                backoff = min(backoff * 2, self.params.reopen_backoff_max_s)
                continue

            log.info("camera: source %r opened (%s)", self.params.source, self.kind)
            frames_before = self.published + self.skipped
            outcome = self._publish_from(capture)
            if self.published + self.skipped > frames_before:
                backoff = self.params.reopen_backoff_s  # the source worked, so this is a new outage
            if outcome == "stopped":
                return
            if outcome == "ended":
                if not self.params.loop:
                    log.info("camera: end of file %s after %d frames", self.params.source, self.published)
                    return
                continue
            log.warning("camera: source %r %s; reopening in %.1f s", self.params.source, outcome, backoff)
            if self.node.wait(backoff):
                return
            backoff = min(backoff * 2, self.params.reopen_backoff_max_s)

    def _publish_from(self, capture: cv2.VideoCapture | TestPattern) -> str:
        lossless = self.kind == "file" and not self.params.realtime
        if self._origin_ns is None:
            # Stamp the origin once the source is open, so that the wait for
            # subscribers and the open time do not make the first frames late.
            self._origin_ns = monotonic_ns()
        reader = _Reader(self.params, capture, self._origin_ns, lossless)
        reader.start()
        try:
            while not self.node.stopped:
                grabbed = reader.take(timeout_s=0.1)
                if grabbed is not None:
                    self._publish(grabbed, reader)
                    continue
                if reader.ended:
                    if reader.failed:
                        return "failed"
                    if self.kind == "file":
                        # Continue a loop at the next frame period after the last frame.
                        period_ns = round(1e9 / (capture.get(cv2.CAP_PROP_FPS) or 25.0))
                        self._origin_ns += round(reader.last_stream_time_s * 1e9) + period_ns
                        return "ended"
                    return "ended the stream"
                if time.monotonic() - reader.last_frame_monotonic > self.params.read_timeout_s:
                    return f"delivered no frame for {self.params.read_timeout_s:.1f} s"
            return "stopped"
        finally:
            reader.abandoned = True
            with reader.condition:
                reader.condition.notify_all()
            reader.join(timeout=0.5)
            self._stale_before += reader.replaced
            if not reader.is_alive() and isinstance(capture, cv2.VideoCapture):
                capture.release()
            elif reader.is_alive():
                log.warning("camera: reader of %r is blocked in OpenCV; leaving it behind", self.params.source)

    def _publish(self, grabbed: _Grabbed, reader: _Reader) -> None:
        if self.params.fps and self.kind != "testpattern":
            min_interval_ns = 1e9 / self.params.fps
            if grabbed.capture_ns - self._last_publish_ns < min_interval_ns * 0.95:
                self.skipped += 1
                return
        self._last_publish_ns = grabbed.capture_ns

        image = grabbed.image
        if self.params.encoding == "rgb8":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self.params.width and self.params.height and image.shape[1::-1] != (self.params.width, self.params.height):
            image = cv2.resize(image, (self.params.width, self.params.height), interpolation=cv2.INTER_AREA)
        stale = self._stale_before + reader.replaced
        if stale > self.publisher.source_drops:
            self._drop_log.warning("stale", "camera: dropped %d stale frames so far (publisher slower than source)", stale)
        self.publisher.source_drops = stale
        self.publisher.send_frame(
            image,
            capture_ns=grabbed.capture_ns,
            capture_wall_ns=grabbed.capture_wall_ns,
            encoding=self.params.encoding,
            jpeg_quality=self.params.jpeg_quality,
            channel_order="rgb" if self.params.encoding == "rgb8" else "bgr",
            stream_time_s=grabbed.stream_time_s,
        )
        self.published += 1


def run(node: NodeContext) -> None:
    """Capture and publish until stopped or, for a file without ``loop``, until its end."""
    publisher = node.publisher("frames")
    CameraNode(node, publisher).run()


if __name__ == "__main__":
    standalone_main("camera")
