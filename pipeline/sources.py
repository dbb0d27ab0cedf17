"""Replay sources: read a video, audio, alerts or MCAP file into replay items.

A source only parses its file format. It yields :class:`ReplayItem` tuples
``(topic, header_bytes, payload)`` in capture order, each header already
carrying its recorded capture time; :class:`pipeline.replay.Replayer` does
the timing and sending.

Capture times of file sources are a fixed origin plus the media time
(``origin_ns + pts * time_base``), never the time of the replay, so that two
replays of one file produce the same capture times and the same windows.

Example::

    >>> from pipeline.sources import VideoFileSource
    >>> source = VideoFileSource("clip.mp4", alerts="alerts.jsonl", start_s=2.0)
    >>> topic, header_bytes, payload = next(iter(source))
    >>> topic
    'camera'
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline import messages

__all__ = [
    "DEFAULT_ORIGIN_NS",
    "DEFAULT_ORIGIN_WALL_NS",
    "REPLAY_SOURCE_ID",
    "ReplayError",
    "ReplayItem",
    "ReplaySource",
    "ReplayTopics",
    "AlertLine",
    "read_alerts",
    "MemorySource",
    "VideoFileSource",
    "McapSource",
    "item_capture_ns",
]

log = logging.getLogger(__name__)

DEFAULT_ORIGIN_NS = 1_000_000_000
"""Capture time of media time 0 of a file source, in nanoseconds on the monotonic clock."""

DEFAULT_ORIGIN_WALL_NS = 1_704_067_200_000_000_000
"""Wall-clock capture time of media time 0: 2024-01-01T00:00:00Z, in Unix nanoseconds."""

REPLAY_SOURCE_ID = "replay"
"""``source`` field of every header a file source writes."""

_NS_PER_S = 1_000_000_000


class ReplayError(ValueError):
    """A replay input is missing, empty, unsupported or invalid; the message names the file."""


class ReplayItem(NamedTuple):
    """One message to replay: its topic, its encoded header and its payload."""

    topic: str
    header_bytes: bytes
    payload: Any
    """Bytes or any buffer ZeroMQ sends without copying (a NumPy array, a memoryview)."""


@runtime_checkable
class ReplaySource(Protocol):
    """Interface that :class:`~pipeline.replay.Replayer` reads a source through.

    ``duration_s`` is the length of one pass in seconds of media time, or None
    when unknown (progress then shows no total). ``span_ns`` is the capture
    time from the first item of one pass to the first item of the next pass
    of a loop, known after one full pass, or None to let the replayer derive
    it from the items.
    """

    name: str
    duration_s: float | None
    span_ns: int | None
    topic_names: list[str] | None
    """Topics the source yields, or None when unknown before reading (then every graph topic gets a publisher)."""

    def __iter__(self) -> Iterator[ReplayItem]: ...


@dataclass(frozen=True)
class ReplayTopics:
    """Topic names a file source publishes on."""

    frames: str = "camera"
    audio: str = "audio"
    alerts: str = "alerts"


def item_capture_ns(item: ReplayItem) -> int:
    """Return the ``capture_ns`` field of an item's header.

    Raises:
        ReplayError: The header is not JSON or has no integer ``capture_ns``.
    """
    try:
        value = json.loads(item.header_bytes)["capture_ns"]
    except (ValueError, KeyError, TypeError) as error:
        raise ReplayError(f"topic {item.topic!r}: header has no readable capture_ns ({error})") from None
    if not isinstance(value, int):
        raise ReplayError(f"topic {item.topic!r}: capture_ns {value!r} is not an integer")
    return value


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ReplayError(f"{what} {path} not found; check the path")
    if not path.is_file():
        raise ReplayError(f"{what} {path} is not a regular file")
    return path


def _seconds_to_ns(seconds: Fraction | float) -> int:
    return round(Fraction(seconds) * _NS_PER_S)


# ---------------------------------------------------------------- alerts file


class AlertLine(BaseModel):
    """One line of an alerts JSONL file; ``offset_s`` counts from the start of the source."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    offset_s: float = Field(ge=0)
    """Time from media time 0 of the source to the alert, in seconds."""
    text: str = Field(min_length=1)
    severity: Literal["info", "warning", "critical"] = "info"
    category: str | None = None
    expires_s: float | None = Field(default=None, gt=0)
    """Lifetime after the alert's capture time, in seconds; None means the fusion default."""
    line: int = Field(default=0, ge=0)
    """Line number in the file, starting at 1; set by :func:`read_alerts`."""


def read_alerts(path: str | Path) -> list[AlertLine]:
    """Read an alerts JSONL file: one JSON object per line, blank lines ignored.

    Returns:
        The alerts sorted by ``offset_s``; alerts with equal offsets keep
        their file order.

    Raises:
        ReplayError: The file is missing, or a line is not JSON, not an
            object, misses ``offset_s`` or ``text``, has an unknown key or an
            invalid value. The message gives the file name and line number.
    """
    path = _require_file(path, "alerts file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ReplayError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None

    alerts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        alerts.append(_parse_alert_line(path, number, line))
    return sorted(alerts, key=lambda alert: alert.offset_s)


def _parse_alert_line(path: Path, number: int, line: str) -> AlertLine:
    where = f"{path}:{number}"
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as error:
        raise ReplayError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(fields, dict):
        raise ReplayError(f"{where}: a line must be a JSON object such as {{\"offset_s\": 2.0, \"text\": \"...\"}}")
    if "line" in fields:
        raise ReplayError(f"{where}: field 'line': unknown key; the line number is set by the reader")

    try:
        return AlertLine.model_validate({**fields, "line": number})
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"])
            if item["type"] == "missing":
                problems.append(f"field {name!r}: required field is missing")
            elif item["type"] == "extra_forbidden":
                problems.append(f"field {name!r}: unknown key (known: offset_s, text, severity, category, expires_s)")
            else:
                problems.append(f"field {name!r}: {item['msg']}")
        raise ReplayError(f"{where}: {'; '.join(problems)}") from None


# ---------------------------------------------------------------- test double


class MemorySource:
    """Replay items held in memory: a test double with the interface of a file source.

    Args:
        items: Items in capture order.
        span_ns: Capture time between the first items of two loop passes, in
            nanoseconds; None lets the replayer derive it.
        name: Name used in logs.

    Raises:
        ReplayError: The items are not in capture order.
    """

    def __init__(self, items: Sequence[ReplayItem], span_ns: int | None = None, name: str = "memory") -> None:
        self.items = list(items)
        self.name = name
        self.span_ns = span_ns
        self.topic_names = list(dict.fromkeys(item.topic for item in self.items))
        times = [item_capture_ns(item) for item in self.items]
        for index in range(1, len(times)):
            if times[index] < times[index - 1]:
                raise ReplayError(f"{name}: item {index} has capture_ns {times[index]} before {times[index - 1]}")
        self.duration_s = (times[-1] - times[0]) / 1e9 if times else None

    def __iter__(self) -> Iterator[ReplayItem]:
        return iter(self.items)


# ---------------------------------------------------------------- video file


def _open_container(path: Path, what: str) -> Any:
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FileNotFoundError:
        raise ReplayError(f"{what} {path} not found; check the path") from None
    except av.error.EOFError:
        raise ReplayError(f"{what} {path} ends before its first packet; it contains no frames") from None
    except av.error.FFmpegError as error:
        raise ReplayError(f"{what} {path} could not be opened by FFmpeg: {error.strerror}") from None


def _unknown_codec_detail(path: Path, kind: str) -> str:
    """Return FFmpeg's description of a stream it has no decoder for, such as ``none (ZZZZ / 0x5A5A5A5A)``.

    PyAV exposes no codec name for such a stream, so this reopens the file
    with FFmpeg's log captured and takes the stream description from the
    warning FFmpeg writes while probing.
    """
    import av
    import av.logging

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture(local=True) as lines:
            av.open(str(path), metadata_errors="ignore").close()
    except av.error.FFmpegError:
        return "unknown"
    finally:
        av.logging.set_level(previous)
    for _level, _name, text in lines:
        marker = f"({kind.capitalize()}: "
        if marker in text:
            description = text.split(marker, 1)[1]
            return description.split(",", 1)[0].strip()
    return "unknown"


def _decodable_stream(container: Any, path: Path, kind: str, what: str) -> Any:
    """Return the first ``kind`` stream (video or audio) that this FFmpeg build can decode.

    Raises:
        ReplayError: The file has no such stream, or no decoder for it.
    """
    streams = container.streams.video if kind == "video" else container.streams.audio
    if not streams:
        raise ReplayError(f"{what} {path} has no {kind} stream")
    stream = streams[0]
    if stream.codec_context is None:
        codec = _unknown_codec_detail(path, kind)
        raise ReplayError(
            f"{what} {path}: {kind} codec {codec} is not supported by this FFmpeg build (PyAV); "
            "convert the file, for example with ffmpeg -i IN -c:v libx264 OUT.mp4"
        )
    return stream


def _container_start(container: Any) -> Fraction:
    """Return the container's start time in seconds; media time 0 is this instant."""
    if container.start_time is None:
        return Fraction(0)
    return Fraction(container.start_time, 1_000_000)


class _Stamper:
    """Turn media times into header fields: capture times, per-topic sequence numbers, the session."""

    def __init__(self, origin_ns: int, origin_wall_ns: int, session: str) -> None:
        self.origin_ns = origin_ns
        self.origin_wall_ns = origin_wall_ns
        self.session = session
        self._seq: dict[str, int] = {}

    def fields(self, topic: str, media_ns: int) -> dict[str, Any]:
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        return {
            "topic": topic,
            "source": REPLAY_SOURCE_ID,
            "session": self.session,
            "seq": seq,
            "capture_ns": self.origin_ns + media_ns,
            "capture_wall_ns": self.origin_wall_ns + media_ns,
        }


_Timed = tuple[int, int, ReplayItem]
"""(media time in nanoseconds, tie-break rank, item), the order in which streams are merged."""

_RANK_ALERT, _RANK_AUDIO, _RANK_FRAME = 0, 1, 2


class VideoFileSource:
    """Read a video file (anything PyAV opens: MP4, MKV, MOV, AVI, GIF) with optional audio and alerts.

    Frames keep their container times (``pts * time_base``), so variable frame
    durations, as in GIFs, replay as recorded. Audio comes from ``audio``, or
    else from the video's own audio track. It is decoded, resampled to
    ``sample_rate`` Hz mono float32 (the mean of the source channels) and cut
    into chunks of ``chunk_s`` seconds. Each chunk's capture time is that of
    its first sample.

    Media time 0 is the container's start time. A message at media time ``t``
    gets ``capture_ns = origin_ns + t`` and ``capture_wall_ns =
    origin_wall_ns + t``, and ``stream_time_s`` is the frame's own
    ``pts * time_base`` in seconds.

    Args:
        path: Video file.
        audio: Audio file (WAV, FLAC, MP3 or anything PyAV opens) that
            replaces the video's own audio track.
        audio_offset_s: Media time of the first sample of ``audio``, in
            seconds; positive means the audio starts after the video start.
        alerts: Alerts JSONL file, see :func:`read_alerts`.
        start_s: Media time where the replay starts, in seconds.
        duration_s: Length of the replayed part, in seconds; None means to
            the end of the video.
        origin_ns: Capture time of media time 0, in monotonic nanoseconds.
        origin_wall_ns: Wall-clock capture time of media time 0, in Unix
            nanoseconds.
        encoding: Frame encoding: ``jpeg``, ``bgr8`` or ``rgb8``.
        jpeg_quality: JPEG quality, 1 to 100.
        sample_rate: Sample rate of the published audio, in Hz.
        chunk_s: Duration of each audio chunk, in seconds.
        video_audio: Publish the video's own audio track when ``audio`` is None.
        topics: Topic names of frames, audio chunks and alerts.

    Raises:
        ReplayError: A file is missing, has no video (or audio) stream, has a
            codec this FFmpeg build cannot decode, contains no frames, or
            ``start_s`` is past its end; the alerts file is invalid; an
            argument is out of range.
    """

    def __init__(
        self,
        path: str | Path,
        audio: str | Path | None = None,
        audio_offset_s: float = 0.0,
        alerts: str | Path | None = None,
        start_s: float = 0.0,
        duration_s: float | None = None,
        origin_ns: int = DEFAULT_ORIGIN_NS,
        origin_wall_ns: int = DEFAULT_ORIGIN_WALL_NS,
        encoding: Literal["jpeg", "bgr8", "rgb8"] = "jpeg",
        jpeg_quality: int = 85,
        sample_rate: int = 16_000,
        chunk_s: float = 0.1,
        video_audio: bool = True,
        topics: ReplayTopics = ReplayTopics(),
    ) -> None:
        self._check_arguments(start_s, duration_s, encoding, jpeg_quality, sample_rate, chunk_s, audio_offset_s)
        self.path = _require_file(path, "video file")
        self.name = self.path.name
        self.audio_path = _require_file(audio, "audio file") if audio is not None else None
        self.audio_offset_ns = _seconds_to_ns(audio_offset_s)
        self.alerts = read_alerts(alerts) if alerts is not None else []
        self.alerts_name = Path(alerts).stem if alerts is not None else ""
        self.start_ns = _seconds_to_ns(start_s)
        self.origin_ns = origin_ns
        self.origin_wall_ns = origin_wall_ns
        self.encoding = encoding
        self.jpeg_quality = jpeg_quality
        self.sample_rate = sample_rate
        self.chunk_frames = max(1, round(chunk_s * sample_rate))
        self.topics = topics
        self.span_ns: int | None = None
        self.session = messages.new_session_id()

        self.video_end_ns, self.has_video_audio = self._probe_video()
        self.end_ns = self._selection_end(duration_s)
        self.duration_s = (self.end_ns - self.start_ns) / 1e9 if self.end_ns is not None else None
        if self.audio_path is not None:
            self._probe_audio_file(self.audio_path)
        self.video_audio = video_audio and self.audio_path is None and self.has_video_audio
        self.topic_names = [topics.frames]
        if self.audio_path is not None or self.video_audio:
            self.topic_names.append(topics.audio)
        if self.alerts:
            self.topic_names.append(topics.alerts)

    @staticmethod
    def _check_arguments(
        start_s: float,
        duration_s: float | None,
        encoding: str,
        jpeg_quality: int,
        sample_rate: int,
        chunk_s: float,
        audio_offset_s: float,
    ) -> None:
        if not math.isfinite(start_s) or start_s < 0:
            raise ReplayError(f"start_s {start_s!r} must be a finite number of seconds, 0 or more")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ReplayError(f"duration_s {duration_s!r} must be a finite number of seconds above 0")
        if encoding not in messages.FRAME_ENCODINGS:
            raise ReplayError(f"encoding {encoding!r} is not one of {', '.join(messages.FRAME_ENCODINGS)}")
        if not 1 <= jpeg_quality <= 100:
            raise ReplayError(f"jpeg_quality {jpeg_quality} must be between 1 and 100")
        if sample_rate <= 0:
            raise ReplayError(f"sample_rate {sample_rate} Hz must be above 0")
        if not (math.isfinite(chunk_s) and chunk_s > 0):
            raise ReplayError(f"chunk_s {chunk_s!r} must be a number of seconds above 0")
        if not math.isfinite(audio_offset_s):
            raise ReplayError(f"audio_offset_s {audio_offset_s!r} must be a finite number of seconds")

    # -- probing

    def _probe_video(self) -> tuple[int | None, bool]:
        """Check that the video decodes and has a frame; return its end in media ns and whether it has audio."""
        import av

        container = _open_container(self.path, "video file")
        try:
            stream = _decodable_stream(container, self.path, "video", "video file")
            try:
                first = next(iter(container.decode(stream)), None)
            except av.error.FFmpegError as error:
                raise ReplayError(f"video file {self.path}: decoding the first frame failed: {error.strerror}") from None
            if first is None:
                raise ReplayError(f"video file {self.path} contains no frames; check that it is not truncated")

            start = _container_start(container)
            end_ns = None
            if stream.duration is not None and stream.time_base is not None:
                stream_start = stream.start_time or 0
                end_ns = _seconds_to_ns((stream_start + stream.duration) * stream.time_base - start)
            elif container.duration is not None:
                end_ns = _seconds_to_ns(Fraction(container.duration, 1_000_000))
            has_audio = bool(container.streams.audio) and container.streams.audio[0].codec_context is not None
            return end_ns, has_audio
        finally:
            container.close()

    def _probe_audio_file(self, path: Path) -> None:
        container = _open_container(path, "audio file")
        try:
            _decodable_stream(container, path, "audio", "audio file")
        finally:
            container.close()

    def _selection_end(self, duration_s: float | None) -> int | None:
        if self.video_end_ns is not None and self.start_ns >= self.video_end_ns:
            raise ReplayError(
                f"start {self.start_ns / 1e9:.3f} s is at or past the end of {self.path} "
                f"({self.video_end_ns / 1e9:.3f} s); choose an earlier start"
            )
        ends = [end for end in (self.video_end_ns,) if end is not None]
        if duration_s is not None:
            ends.append(self.start_ns + _seconds_to_ns(duration_s))
        return min(ends) if ends else None

    def _selected(self, media_ns: int) -> bool:
        return media_ns >= self.start_ns and (self.end_ns is None or media_ns < self.end_ns)

    # -- iteration

    def __iter__(self) -> Iterator[ReplayItem]:
        """Decode the selected part and yield frames, audio chunks and alerts in capture order.

        Every iteration repeats the same headers: one session id per source
        instance, and sequence numbers per topic from 0. A subscriber that
        stays connected drops a second iteration as repeats, so use a new
        source for a new replay; :class:`~pipeline.replay.Replayer` shifts
        the sequence numbers of loop passes itself.

        Raises:
            ReplayError: Decoding fails partway through a file.
        """
        stamper = _Stamper(self.origin_ns, self.origin_wall_ns, self.session)
        end = _PassEnd(self.start_ns)
        streams: list[Iterable[_Timed]] = [self._frames(stamper, end), self._alert_items(stamper)]
        if self.audio_path is not None:
            streams.append(self._audio_chunks(stamper, end, self.audio_path, "audio file", self.audio_offset_ns))
        elif self.video_audio:
            streams.append(self._audio_chunks(stamper, end, self.path, "video file", 0))

        for _media_ns, _rank, item in heapq.merge(*streams, key=lambda timed: (timed[0], timed[1])):
            yield item
        self.span_ns = (self.end_ns if self.end_ns is not None else end.latest_ns) - self.start_ns

    def _frames(self, stamper: _Stamper, end: _PassEnd) -> Iterator[_Timed]:
        import av

        container = _open_container(self.path, "video file")
        try:
            stream = _decodable_stream(container, self.path, "video", "video file")
            start = _container_start(container)
            nominal = 1 / Fraction(stream.guessed_rate or stream.average_rate or 25)
            self._seek(container, stream, start)
            previous_ns: int | None = None
            count = 0
            try:
                for frame in container.decode(stream):
                    media_ns, duration = self._frame_time(frame, start, nominal, previous_ns, count)
                    previous_ns = media_ns
                    count += 1
                    if self.end_ns is not None and media_ns >= self.end_ns:
                        break
                    if media_ns < self.start_ns:
                        continue
                    end.extend(media_ns + _seconds_to_ns(duration))
                    yield media_ns, _RANK_FRAME, self._frame_item(stamper, frame, media_ns, frame.pts)
            except av.error.FFmpegError as error:
                raise ReplayError(f"video file {self.path}: decoding failed after {count} frames: {error.strerror}") from None
        finally:
            container.close()

    def _seek(self, container: Any, stream: Any, start: Fraction) -> None:
        """Seek to the keyframe before ``start_s``; frames before it are decoded and skipped."""
        import av

        if self.start_ns <= 0 or stream.time_base is None:
            return
        target = int((Fraction(self.start_ns, _NS_PER_S) + start) / stream.time_base)
        try:
            container.seek(target, stream=stream, backward=True)
        except av.error.FFmpegError as error:
            # Decoding from the beginning gives the same frames, only slower.
            log.debug("video file %s: seek to %d failed (%s); decoding from the start", self.path, target, error)
            container.seek(0)

    def _frame_time(
        self, frame: Any, start: Fraction, nominal: Fraction, previous_ns: int | None, count: int
    ) -> tuple[int, Fraction]:
        """Return a frame's media time in nanoseconds and its duration in seconds."""
        duration = nominal
        if frame.duration and frame.time_base is not None:
            duration = frame.duration * frame.time_base
        if frame.pts is None or frame.time_base is None:
            # NOTE: containers without timestamps fall back to the nominal frame rate here.
            if previous_ns is None:
                return 0, duration
            return previous_ns + _seconds_to_ns(nominal), duration
        media_ns = _seconds_to_ns(frame.pts * frame.time_base - start)
        if previous_ns is not None and media_ns <= previous_ns:
            log.warning(
                "video file %s: frame %d has pts %d, not after the previous frame; placing it 1 us later",
                self.path,
                count,
                frame.pts,
            )
            media_ns = previous_ns + 1_000
        return media_ns, duration

    def _frame_item(self, stamper: _Stamper, frame: Any, media_ns: int, pts: int | None) -> ReplayItem:
        order = "rgb" if self.encoding == "rgb8" else "bgr"
        image = frame.to_ndarray(format="rgb24" if order == "rgb" else "bgr24")
        stream_time_s = float(pts * frame.time_base) if pts is not None and frame.time_base is not None else None
        parts = messages.encode_frame(
            image,
            **stamper.fields(self.topics.frames, media_ns),
            encoding=self.encoding,
            jpeg_quality=self.jpeg_quality,
            channel_order=order,
            stream_time_s=stream_time_s,
        )
        return ReplayItem(self.topics.frames, parts[1], parts[2])

    def _audio_chunks(self, stamper: _Stamper, end: _PassEnd, path: Path, what: str, offset_ns: int) -> Iterator[_Timed]:
        """Yield the audio of ``path`` in chunks; chunk k starts at the first sample's time plus k chunks."""
        for first_sample_ns, index, samples in _decode_chunks(path, what, self.sample_rate, self.chunk_frames):
            media_ns = offset_ns + first_sample_ns + index * _NS_PER_S // self.sample_rate
            if self.end_ns is not None and media_ns >= self.end_ns:
                return
            if media_ns < self.start_ns:
                continue
            end.extend(media_ns + len(samples) * _NS_PER_S // self.sample_rate)
            parts = messages.encode_audio(
                samples, sample_rate=self.sample_rate, **stamper.fields(self.topics.audio, media_ns)
            )
            yield media_ns, _RANK_AUDIO, ReplayItem(self.topics.audio, parts[1], parts[2])

    def _alert_items(self, stamper: _Stamper) -> Iterator[_Timed]:
        """Yield the selected alerts; alerts still in force at ``start_s`` come first, stamped at the start."""
        for alert in self.alerts:
            media_ns = _seconds_to_ns(alert.offset_s)
            expires_s = alert.expires_s
            if media_ns < self.start_ns:
                elapsed_s = (self.start_ns - media_ns) / 1e9
                if expires_s is not None and expires_s <= elapsed_s:
                    continue
                media_ns = self.start_ns
                expires_s = None if expires_s is None else expires_s - elapsed_s
            if self.end_ns is not None and media_ns >= self.end_ns:
                log.warning(
                    "alerts line %d: offset %.3f s is at or past the end of the replayed part (%.3f s); skipped",
                    alert.line,
                    alert.offset_s,
                    self.end_ns / 1e9,
                )
                continue
            parts = messages.encode_alert(
                alert.text,
                **stamper.fields(self.topics.alerts, media_ns),
                severity=alert.severity,
                category=alert.category,
                expires_s=expires_s,
                origin="replay",
                alert_id=f"replay-{self.alerts_name}-{alert.line}",
            )
            yield media_ns, _RANK_ALERT, ReplayItem(self.topics.alerts, parts[1], parts[2])


class _PassEnd:
    """The latest media time, in nanoseconds, that the items of one pass cover."""

    def __init__(self, start_ns: int) -> None:
        self.latest_ns = start_ns

    def extend(self, media_ns: int) -> None:
        self.latest_ns = max(self.latest_ns, media_ns)


def _decode_chunks(path: Path, what: str, sample_rate: int, chunk_frames: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Decode, resample and chunk the first audio stream of a file.

    Yields:
        ``(first_sample_ns, index, samples)``: the media time of the stream's
        first sample in nanoseconds, the sample index of the chunk's first
        sample at ``sample_rate``, and a ``(frames, 1)`` float32 array. Every
        chunk has ``chunk_frames`` frames except the last.

    Raises:
        ReplayError: The file cannot be opened or decoding fails.
    """
    import av

    container = _open_container(path, what)
    try:
        stream = _decodable_stream(container, path, "audio", what)
        start = _container_start(container)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        pending: list[np.ndarray] = []
        pending_frames = 0
        emitted = 0
        first_sample_ns: int | None = None

        def resampled(frames: Iterable[Any]) -> Iterator[np.ndarray]:
            for frame in frames:
                for converted in resampler.resample(frame):
                    yield converted.to_ndarray().mean(axis=0, dtype=np.float32)
            for converted in resampler.resample(None):
                yield converted.to_ndarray().mean(axis=0, dtype=np.float32)

        def decoded() -> Iterator[Any]:
            nonlocal first_sample_ns
            try:
                for frame in container.decode(stream):
                    if first_sample_ns is None:
                        pts = frame.pts if frame.pts is not None else 0
                        first_sample_ns = _seconds_to_ns(pts * (frame.time_base or Fraction(0)) - start)
                    yield frame
            except av.error.FFmpegError as error:
                raise ReplayError(f"{what} {path}: decoding audio failed: {error.strerror}") from None

        for mono in resampled(decoded()):
            pending.append(mono)
            pending_frames += len(mono)
            while pending_frames >= chunk_frames:
                joined = np.concatenate(pending)
                assert first_sample_ns is not None
                yield first_sample_ns, emitted, joined[:chunk_frames, None].copy()
                emitted += chunk_frames
                pending = [joined[chunk_frames:]]
                pending_frames -= chunk_frames
        if pending_frames and first_sample_ns is not None:
            yield first_sample_ns, emitted, np.concatenate(pending)[:, None]
    finally:
        container.close()


# ---------------------------------------------------------------- MCAP recording


class McapSource:
    """Replay an MCAP recording through :class:`pipeline.recording.RecordingReader`.

    Headers and payloads are yielded exactly as recorded. ``start_s`` and
    ``duration_s`` count from the capture time of the recording's first
    message.

    Args:
        path: A ``.mcap`` file written by the scenewatch recorder, or the name
            of a split recording (``NAME.mcap`` for ``NAME_000.mcap`` onwards).
        start_s: Skip messages captured less than this many seconds after the first one.
        duration_s: Stop after this many seconds of capture time; None means to the end.

    Raises:
        ReplayError: The recording is missing, truncated or corrupt, or
            ``pipeline.recording`` cannot be imported.
    """

    def __init__(self, path: str | Path, start_s: float = 0.0, duration_s: float | None = None) -> None:
        if not math.isfinite(start_s) or start_s < 0:
            raise ReplayError(f"start_s {start_s!r} must be a finite number of seconds, 0 or more")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ReplayError(f"duration_s {duration_s!r} must be a finite number of seconds above 0")
        self.path = Path(path)
        self.name = self.path.name
        self.start_ns = _seconds_to_ns(start_s)
        self.selection_ns = None if duration_s is None else _seconds_to_ns(duration_s)
        self.duration_s = duration_s
        self.span_ns: int | None = None
        self._recording = self._import_recording()

        reader = self._open_reader()
        self.topic_names: list[str] | None = list(reader.topics)
        reader.close()

    @staticmethod
    def _import_recording() -> Any:
        try:
            from pipeline import recording
        except ImportError as error:
            raise ReplayError(f"MCAP replay needs pipeline.recording, which failed to import: {error}") from None
        return recording

    def _open_reader(self) -> Any:
        try:
            return self._recording.RecordingReader(self.path)
        except self._recording.RecordingError as error:
            raise ReplayError(str(error)) from None

    def __iter__(self) -> Iterator[ReplayItem]:
        """Yield the recorded messages inside the selection, in capture order.

        Raises:
            ReplayError: A part of the recording is truncated or corrupt, or a
                recorded header has no integer ``capture_ns``.
        """
        reader = self._open_reader()
        first_ns: int | None = None
        try:
            for topic, header_bytes, payload in reader:
                item = ReplayItem(topic, bytes(header_bytes), payload)
                capture_ns = item_capture_ns(item)
                if first_ns is None:
                    first_ns = capture_ns
                elapsed_ns = capture_ns - first_ns
                if elapsed_ns < self.start_ns:
                    continue
                if self.selection_ns is not None and elapsed_ns >= self.start_ns + self.selection_ns:
                    break
                yield item
        except self._recording.RecordingError as error:
            raise ReplayError(f"recording {self.path}: reading failed: {error}") from None
        finally:
            reader.close()
