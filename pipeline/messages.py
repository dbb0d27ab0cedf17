"""Wire format of every scenewatch message: a topic, a header and a payload.

A message crosses the bus as three ZeroMQ frames::

    [topic (UTF-8), header (JSON), payload (bytes, sent with copy=False)]

The header is a :class:`Header`; its ``kind`` selects which typed block
(``frame``, ``audio`` or ``alert``) describes the payload. ``decode`` checks
every part against the others and raises :class:`MessageRejected` with a
short ``reason`` that receivers count per topic.

Example::

    >>> import numpy as np
    >>> from pipeline import messages
    >>> image = np.zeros((4, 6, 3), dtype=np.uint8)
    >>> parts = messages.encode_frame(image, topic="camera", source="cam0", seq=0,
    ...                               capture_ns=1_000, capture_wall_ns=2_000, encoding="bgr8")
    >>> frame = messages.decode(parts)
    >>> frame.header.frame.width, frame.image().shape
    (6, (4, 6, 3))

The schema version is ``MAJOR.MINOR``. A receiver accepts any minor version of
its own major version and ignores header fields it does not know, so that a
minor version may only add optional fields.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_MAJOR",
    "MAX_HEADER_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "FRAME_ENCODINGS",
    "AUDIO_ENCODINGS",
    "SEVERITIES",
    "Header",
    "FrameInfo",
    "AudioInfo",
    "AlertInfo",
    "Message",
    "Frame",
    "AudioChunk",
    "Alert",
    "MessageRejected",
    "encode_frame",
    "encode_audio",
    "encode_alert",
    "encode",
    "decode",
    "decode_header",
]

SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = 1

MAX_HEADER_BYTES = 16 * 1024
"""Largest header a receiver accepts, in bytes."""

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Largest payload a receiver accepts unless its topic sets another bound, in bytes."""

FRAME_ENCODINGS = ("jpeg", "bgr8", "rgb8")
AUDIO_ENCODINGS = {"pcm_f32le": np.dtype("<f4"), "pcm_s16le": np.dtype("<i2")}
SEVERITIES = ("info", "warning", "critical")

Kind = Literal["frame", "audio", "alert", "summary"]


class FrameInfo(BaseModel):
    """Image geometry. ``width`` and ``height`` are pixels of the decoded image."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    channels: int = Field(default=3, gt=0)
    channel_order: Literal["bgr", "rgb", "gray"] = "bgr"
    jpeg_quality: int | None = None
    stream_time_s: float | None = None
    """Presentation time of the frame in its source (file or stream), in seconds."""


class AudioInfo(BaseModel):
    """PCM layout. ``capture_ns`` of the header is the capture time of the first sample."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sample_rate: int = Field(gt=0)
    channels: int = Field(gt=0)
    frames: int = Field(ge=0)
    gap_before: bool = False
    """True when samples were lost between the previous chunk and this one."""
    lost_frames: int = Field(default=0, ge=0)
    """Number of samples per channel lost just before this chunk, where known."""


class AlertInfo(BaseModel):
    """Alert metadata. The text itself is the UTF-8 payload."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    alert_id: str
    severity: Literal["info", "warning", "critical"] = "info"
    category: str | None = None
    expires_s: float | None = Field(default=None, gt=0)
    """Lifetime after ``capture_ns``, in seconds; None means the fusion default."""
    origin: str = "cli"
    """Entry point of the alert: cli, file, stdin, replay or a custom name."""


class Header(BaseModel):
    """Per-message header, sent as compact JSON in the second ZeroMQ frame."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = SCHEMA_VERSION
    kind: Kind
    source: str = Field(min_length=1)
    """Node id of the publisher."""
    topic: str = Field(min_length=1)
    session: str
    """Random id of one publisher instance; a restarted publisher gets a new one."""
    seq: int = Field(ge=0)
    """Sequence number per publisher instance, starting at 0, without gaps at the sender."""
    capture_ns: int
    """Capture time on the host's monotonic clock (CLOCK_MONOTONIC), in nanoseconds."""
    capture_wall_ns: int
    """Capture time as Unix wall-clock time, in nanoseconds."""
    encoding: str
    shape: tuple[int, ...] = ()
    size: int = Field(ge=0)
    """Payload length in bytes."""
    source_drops: int = Field(default=0, ge=0)
    """Messages this publisher discarded before sending (stale frames, overflows), cumulative."""
    frame: FrameInfo | None = None
    audio: AudioInfo | None = None
    alert: AlertInfo | None = None

    @property
    def major(self) -> int:
        return _major_of(self.version)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class MessageRejected(ValueError):
    """A received message failed a check; ``reason`` is the counter it increments."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Message:
    """A decoded message. ``payload`` is a zero-copy view of the received buffer."""

    topic: str
    header: Header
    header_bytes: bytes
    payload: memoryview

    @property
    def kind(self) -> str:
        return self.header.kind


@dataclass(frozen=True)
class Frame(Message):
    """A camera frame."""

    def image(self) -> np.ndarray:
        """Return the image as an ``(height, width, channels)`` uint8 array in ``channel_order``.

        JPEG payloads are decoded here, so a receiver pays for decoding only
        for the frames it uses.

        Raises:
            MessageRejected: The JPEG data does not decode.
        """
        info = self.header.frame
        assert info is not None
        if self.header.encoding == "jpeg":
            import cv2

            flags = cv2.IMREAD_GRAYSCALE if info.channels == 1 else cv2.IMREAD_COLOR
            image = cv2.imdecode(np.frombuffer(self.payload, dtype=np.uint8), flags)
            if image is None:
                raise MessageRejected("mismatch", f"JPEG payload of seq {self.header.seq} does not decode")
            return image
        array = np.frombuffer(self.payload, dtype=np.uint8)
        return array.reshape(info.height, info.width, info.channels)

    def bgr(self) -> np.ndarray:
        """Return the image as BGR, converting from RGB when needed."""
        image = self.image()
        info = self.header.frame
        assert info is not None
        if info.channel_order == "rgb":
            return image[..., ::-1]
        return image


@dataclass(frozen=True)
class AudioChunk(Message):
    """A block of PCM samples."""

    def samples(self) -> np.ndarray:
        """Return samples as a ``(frames, channels)`` array of the payload's dtype (no copy)."""
        info = self.header.audio
        assert info is not None
        dtype = AUDIO_ENCODINGS[self.header.encoding]
        return np.frombuffer(self.payload, dtype=dtype).reshape(info.frames, info.channels)

    def float32(self) -> np.ndarray:
        """Return samples as float32 in [-1, 1], shape ``(frames, channels)``."""
        samples = self.samples()
        if samples.dtype == np.int16:
            return samples.astype(np.float32) / 32768.0
        return samples.astype(np.float32, copy=False)

    @property
    def duration_s(self) -> float:
        info = self.header.audio
        assert info is not None
        return info.frames / info.sample_rate


@dataclass(frozen=True)
class Alert(Message):
    """A text alert."""

    @property
    def text(self) -> str:
        return bytes(self.payload).decode("utf-8")

    @property
    def info(self) -> AlertInfo:
        assert self.header.alert is not None
        return self.header.alert


_TYPED = {"frame": Frame, "audio": AudioChunk, "alert": Alert, "summary": Message}


def _major_of(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return -1


def new_session_id() -> str:
    """Return a random id for one publisher instance."""
    return uuid.uuid4().hex[:16]


def encode(header: Header, payload: bytes | memoryview | np.ndarray) -> list[Any]:
    """Return the three ZeroMQ parts of a message: topic, header and payload."""
    return [header.topic.encode(), header.to_bytes(), payload]


def _now_pair(capture_ns: int | None, capture_wall_ns: int | None) -> tuple[int, int]:
    if capture_ns is None:
        capture_ns = time.monotonic_ns()
    if capture_wall_ns is None:
        capture_wall_ns = time.time_ns()
    return capture_ns, capture_wall_ns


def encode_frame(
    image: np.ndarray,
    *,
    topic: str,
    source: str,
    seq: int,
    session: str = "0",
    capture_ns: int | None = None,
    capture_wall_ns: int | None = None,
    encoding: str = "jpeg",
    jpeg_quality: int = 85,
    channel_order: Literal["bgr", "rgb"] = "bgr",
    stream_time_s: float | None = None,
    source_drops: int = 0,
) -> list[Any]:
    """Encode a ``(height, width, 3)`` uint8 image as a frame message.

    Args:
        image: Pixels in ``channel_order``; a 2-D array is a grayscale image.
        encoding: ``jpeg`` (compressed with ``jpeg_quality``, 1-100) or
            ``bgr8``/``rgb8`` (raw pixels; must agree with ``channel_order``).
        stream_time_s: Presentation time in the source file or stream, seconds.

    Raises:
        ValueError: The image is not uint8, the encoding is unknown, or JPEG
            encoding failed.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"frame dtype {image.dtype} is not supported; convert to uint8")
    if encoding not in FRAME_ENCODINGS:
        raise ValueError(f"frame encoding {encoding!r} is not one of {', '.join(FRAME_ENCODINGS)}")
    if encoding != "jpeg" and encoding[:3] != channel_order:
        raise ValueError(f"encoding {encoding!r} contradicts channel_order {channel_order!r}")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    capture_ns, capture_wall_ns = _now_pair(capture_ns, capture_wall_ns)

    if encoding == "jpeg":
        import cv2

        pixels = image if channel_order == "bgr" or channels == 1 else image[..., ::-1]
        ok, buffer = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise ValueError(f"JPEG encoding failed for a {width}x{height} frame")
        payload: Any = buffer
        size = buffer.nbytes
        order = "gray" if channels == 1 else "bgr"
    else:
        payload = np.ascontiguousarray(image)
        size = payload.nbytes
        order = "gray" if channels == 1 else channel_order

    header = Header(
        kind="frame",
        source=source,
        topic=topic,
        session=session,
        seq=seq,
        capture_ns=capture_ns,
        capture_wall_ns=capture_wall_ns,
        encoding=encoding,
        shape=(height, width, channels),
        size=size,
        source_drops=source_drops,
        frame=FrameInfo(
            width=width,
            height=height,
            channels=channels,
            channel_order=order,
            jpeg_quality=jpeg_quality if encoding == "jpeg" else None,
            stream_time_s=stream_time_s,
        ),
    )
    return encode(header, payload)


def encode_audio(
    samples: np.ndarray,
    *,
    sample_rate: int,
    topic: str,
    source: str,
    seq: int,
    session: str = "0",
    capture_ns: int | None = None,
    capture_wall_ns: int | None = None,
    gap_before: bool = False,
    lost_frames: int = 0,
    source_drops: int = 0,
) -> list[Any]:
    """Encode a ``(frames, channels)`` float32 or int16 array as an audio chunk.

    ``capture_ns`` is the capture time of the first sample. A 1-D array is
    taken as mono.

    Raises:
        ValueError: The dtype is neither float32 nor int16.
    """
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.dtype == np.float32:
        encoding = "pcm_f32le"
    elif samples.dtype == np.int16:
        encoding = "pcm_s16le"
    else:
        raise ValueError(f"audio dtype {samples.dtype} is not supported; use float32 or int16")
    samples = np.ascontiguousarray(samples, dtype=AUDIO_ENCODINGS[encoding])
    frames, channels = samples.shape
    capture_ns, capture_wall_ns = _now_pair(capture_ns, capture_wall_ns)
    header = Header(
        kind="audio",
        source=source,
        topic=topic,
        session=session,
        seq=seq,
        capture_ns=capture_ns,
        capture_wall_ns=capture_wall_ns,
        encoding=encoding,
        shape=(frames, channels),
        size=samples.nbytes,
        source_drops=source_drops,
        audio=AudioInfo(
            sample_rate=sample_rate,
            channels=channels,
            frames=frames,
            gap_before=gap_before,
            lost_frames=lost_frames,
        ),
    )
    return encode(header, samples)


def encode_alert(
    text: str,
    *,
    topic: str,
    source: str,
    seq: int,
    session: str = "0",
    severity: str = "info",
    category: str | None = None,
    expires_s: float | None = None,
    origin: str = "cli",
    alert_id: str | None = None,
    capture_ns: int | None = None,
    capture_wall_ns: int | None = None,
) -> list[Any]:
    """Encode an alert; the text travels as the UTF-8 payload.

    Raises:
        ValueError: The text is empty, or ``severity`` is not one of
            ``SEVERITIES``.
    """
    if not text.strip():
        raise ValueError("alert text is empty; pass the notice to publish")
    if severity not in SEVERITIES:
        raise ValueError(f"alert severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    payload = text.encode("utf-8")
    capture_ns, capture_wall_ns = _now_pair(capture_ns, capture_wall_ns)
    header = Header(
        kind="alert",
        source=source,
        topic=topic,
        session=session,
        seq=seq,
        capture_ns=capture_ns,
        capture_wall_ns=capture_wall_ns,
        encoding="utf-8",
        shape=(len(payload),),
        size=len(payload),
        alert=AlertInfo(
            alert_id=alert_id or f"{source}-{session}-{seq}",
            severity=severity,  # type: ignore[arg-type]
            category=category,
            expires_s=expires_s,
            origin=origin,
        ),
    )
    return encode(header, payload)


def decode_header(data: bytes | memoryview) -> Header:
    """Parse and validate a header.

    Raises:
        MessageRejected: ``oversized`` (more than ``MAX_HEADER_BYTES``),
            ``version`` (unknown major version) or ``malformed``.
    """
    if len(data) > MAX_HEADER_BYTES:
        raise MessageRejected("oversized", f"header of {len(data)} bytes exceeds {MAX_HEADER_BYTES}")
    # Fast path: pydantic parses and validates the JSON in one pass, about
    # half the cost of json.loads plus model_validate. Anything it rejects
    # goes through the slow path below, which names the reason.
    try:
        header = Header.model_validate_json(bytes(data))
        if header.major == SCHEMA_MAJOR:
            return header
    except ValidationError:
        pass
    try:
        raw = json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MessageRejected("malformed", f"header is not JSON ({error})") from None
    if not isinstance(raw, dict):
        raise MessageRejected("malformed", "header is not a JSON object")
    version = str(raw.get("version", ""))
    if _major_of(version) != SCHEMA_MAJOR:
        raise MessageRejected(
            "version", f"schema version {version!r} is not {SCHEMA_MAJOR}.x; upgrade the older side"
        )
    try:
        return Header.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MessageRejected("malformed", f"header field {where!r}: {first['msg']}") from None


def _check_payload(header: Header, payload: memoryview) -> None:
    if len(payload) != header.size:
        reason = "truncated" if len(payload) < header.size else "mismatch"
        raise MessageRejected(reason, f"payload is {len(payload)} bytes but the header size is {header.size}")

    if header.kind == "frame":
        info = header.frame
        if info is None:
            raise MessageRejected("mismatch", "frame header has no 'frame' block")
        if header.encoding not in FRAME_ENCODINGS:
            raise MessageRejected("mismatch", f"frame encoding {header.encoding!r} is unknown")
        if header.encoding == "jpeg":
            if bytes(payload[:2]) != b"\xff\xd8":
                raise MessageRejected("mismatch", "JPEG payload does not start with the SOI marker")
        elif info.width * info.height * info.channels != header.size:
            raise MessageRejected(
                "mismatch",
                f"{info.width}x{info.height}x{info.channels} pixels do not fill {header.size} bytes",
            )
    elif header.kind == "audio":
        info_audio = header.audio
        if info_audio is None:
            raise MessageRejected("mismatch", "audio header has no 'audio' block")
        dtype = AUDIO_ENCODINGS.get(header.encoding)
        if dtype is None:
            raise MessageRejected("mismatch", f"audio encoding {header.encoding!r} is unknown")
        expected = info_audio.frames * info_audio.channels * dtype.itemsize
        if expected != header.size:
            raise MessageRejected(
                "mismatch",
                f"{info_audio.frames} frames x {info_audio.channels} channels of {header.encoding} "
                f"are {expected} bytes, payload is {header.size}",
            )
    elif header.kind == "alert":
        if header.alert is None:
            raise MessageRejected("mismatch", "alert header has no 'alert' block")
        try:
            bytes(payload).decode("utf-8")
        except UnicodeDecodeError as error:
            raise MessageRejected("mismatch", f"alert text is not UTF-8 ({error.reason})") from None


def _as_memoryview(part: Any) -> memoryview:
    if isinstance(part, memoryview):
        return part
    buffer = getattr(part, "buffer", None)  # zmq.Frame received with copy=False
    if buffer is not None:
        return buffer
    # A multi-dimensional array (encode output decoded in-process) must be
    # flattened to bytes, because len() of its memoryview is its first dimension.
    return memoryview(part).cast("B")


def decode(parts: Sequence[Any], max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Message:
    """Check and decode the ZeroMQ parts of one message.

    Args:
        parts: The multipart message as bytes, memoryviews or ``zmq.Frame``.
        max_payload_bytes: Largest payload accepted, in bytes.

    Returns:
        A :class:`Frame`, :class:`AudioChunk`, :class:`Alert` or, for
        summaries, a plain :class:`Message`.

    Raises:
        MessageRejected: With ``reason`` one of ``truncated`` (parts missing
            or payload short), ``oversized``, ``version``, ``malformed`` or
            ``mismatch`` (topic, size, shape or content disagree).
    """
    if len(parts) != 3:
        reason = "truncated" if len(parts) < 3 else "malformed"
        raise MessageRejected(reason, f"message has {len(parts)} parts, expected 3 (topic, header, payload)")
    topic_view, header_view, payload = (_as_memoryview(part) for part in parts)
    if len(payload) > max_payload_bytes:
        raise MessageRejected("oversized", f"payload of {len(payload)} bytes exceeds {max_payload_bytes}")

    header_bytes = bytes(header_view)
    header = decode_header(header_bytes)
    topic = bytes(topic_view).decode("utf-8", errors="replace")
    if topic != header.topic:
        raise MessageRejected("mismatch", f"topic frame {topic!r} differs from header topic {header.topic!r}")
    _check_payload(header, payload)
    return _TYPED[header.kind](topic=topic, header=header, header_bytes=header_bytes, payload=payload)


AnyMessage = Union[Frame, AudioChunk, Alert, Message]
