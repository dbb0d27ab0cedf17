"""Recordings: bus messages written to MCAP files, read back, inspected and recovered.

A recording keeps every message exactly as it crossed the bus, so replay can
send ``(topic, header_bytes, payload)`` again unchanged, and it opens in
Foxglove. Each bus message becomes two MCAP messages in the same chunk:

- ``/<topic>/header``: the header JSON bytes as received (``json`` encoding,
  JSON Schema ``scenewatch.Header``).
- ``/<topic>``: the payload in a form Foxglove shows. JPEG frames are
  ``foxglove.CompressedImage``, raw frames ``foxglove.RawImage``, audio
  chunks ``foxglove.RawAudio`` (all protobuf, payload in the ``data``
  field), alerts a JSON object ``scenewatch.Alert`` with the text, summaries
  their JSON payload byte for byte. Any other payload is stored verbatim.

Float32 audio also gets ``/<topic>/preview``, an int16 copy that Foxglove
can play. Every channel carries its role in its metadata, so readers do not
depend on channel names. MCAP ``log_time`` is the recorder's receive time and
``publish_time`` the capture wall-clock time (``capture_wall_ns``), both
Unix nanoseconds. ``docs/recording.md`` describes the layout in full.

Example::

    >>> from pipeline.recording import Recorder, RecordingReader
    >>> from pipeline import messages
    >>> parts = messages.encode_alert("Road work ahead", topic="alerts", source="doc", seq=0)
    >>> with Recorder(path, overwrite=True) as recorder:      # path: a new .mcap file
    ...     recorder.write("alerts", parts[1], parts[2])
    >>> [(topic, header == parts[1]) for topic, header, payload in RecordingReader(path)]
    [('alerts', True)]
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import logging
import os
import re
import signal
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.RawAudio_pb2 import RawAudio
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.reader import SeekingReader
from mcap.records import Attachment, Channel, Chunk, ChunkIndex, DataEnd, Metadata, Schema
from mcap.records import Message as McapMessage
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.summary import Summary
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from mcap_protobuf.schema import build_file_descriptor_set

from pipeline import messages
from pipeline.messages import Header, Message
from pipeline.transport import Subscriber, TopicSpec, TopicStats

try:
    from zstandard import ZstdError
except ImportError:  # zstandard is optional for mcap; lz4 and uncompressed files still read
    ZstdError = RuntimeError  # type: ignore[misc,assignment]

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_FLUSH_S",
    "COMPRESSIONS",
    "RecordingError",
    "RecordingNotFoundError",
    "Recorder",
    "RecordedMessage",
    "RecordingReader",
    "RecordingInfo",
    "TopicInfo",
    "PublisherInfo",
    "RecoverReport",
    "recording_files",
    "split_path",
    "record",
    "inspect",
    "recover",
    "register_cli",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 1024 * 1024
"""Uncompressed chunk size at which the recorder closes a chunk, in bytes."""

DEFAULT_FLUSH_S = 1.0
"""Maximum time a received message waits in memory before its chunk is written, in seconds."""

COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}

FORMAT_VERSION = "1"
"""Version of the channel layout described in the module docstring."""

HEADER_SCHEMA_NAME = "scenewatch.Header"
META_TOPIC = "scenewatch.topic"
META_ROLE = "scenewatch.role"
META_PAYLOAD = "scenewatch.payload"
ROLE_HEADER = "header"
ROLE_PAYLOAD = "payload"
ROLE_PREVIEW = "preview"
PAYLOAD_PROTOBUF_DATA = "protobuf-data"
"""The bus payload is the ``data`` field of the protobuf message."""
PAYLOAD_ALERT_TEXT = "alert-text"
"""The bus payload is the UTF-8 encoding of the ``text`` member of the JSON object."""
PAYLOAD_VERBATIM = "verbatim"
"""The MCAP message data is the bus payload."""

_MESSAGE_RECORD_BYTES = 1 + 8 + 2 + 4 + 8 + 8
"""Bytes an MCAP message record adds to its data (opcode, length, channel, sequence, two times)."""

_UNBOUNDED_CHUNK = 2**62
"""Chunk size given to mcap's Writer so that only :class:`Recorder` decides where chunks end."""

_CHUNK_CACHE = 4
"""Decompressed chunks a reader keeps, so topics read side by side decompress each chunk once."""

_PROTOBUF_TYPES: dict[str, Any] = {
    "foxglove.CompressedImage": CompressedImage,
    "foxglove.RawImage": RawImage,
    "foxglove.RawAudio": RawAudio,
}

_ALERT_SCHEMA = {
    "title": "scenewatch.Alert",
    "description": "A text alert; the bus payload is the UTF-8 text, the header is on /<topic>/header.",
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "alert_id": {"type": "string"},
        "severity": {"enum": list(messages.SEVERITIES)},
        "category": {"type": ["string", "null"]},
        "expires_s": {"type": ["number", "null"]},
        "origin": {"type": "string"},
    },
    "required": ["text"],
}

_SUMMARY_SCHEMA = {
    "title": "scenewatch.Summary",
    "description": "A scene summary as the fusion node published it, recorded byte for byte.",
}

# Errors mcap 1.6.0, zstandard and lz4 raise on truncated or damaged data.
_DAMAGE_ERRORS: tuple[type[BaseException], ...] = (McapError, ValueError, struct.error, EOFError, RuntimeError, ZstdError)


class RecordingError(Exception):
    """A recording cannot be written or read; the message names the file and what to do.

    Attributes:
        path: The file concerned.
        offset: Byte offset of the damage in ``path``, where known.
    """

    def __init__(self, message: str, path: Path | str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.offset = offset


class RecordingNotFoundError(RecordingError, FileNotFoundError):
    """The recording file does not exist."""

    def __str__(self) -> str:
        return str(self.args[0])


def _damaged_hint(path: Path) -> str:
    return f"run 'scenewatch recover {path} FIXED.mcap' to keep every complete chunk"


# --- channel layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """One MCAP message to write for a bus message."""

    role: str
    schema_name: str
    schema_encoding: str
    message_encoding: str
    payload_form: str
    data: bytes


def _timestamp(wall_ns: int) -> Timestamp:
    return Timestamp(seconds=wall_ns // 1_000_000_000, nanos=wall_ns % 1_000_000_000)


def _protobuf(role: str, message: Any) -> _Encoded:
    return _Encoded(
        role, message.DESCRIPTOR.full_name, "protobuf", "protobuf", PAYLOAD_PROTOBUF_DATA, message.SerializeToString()
    )


def _json(role: str, schema: dict[str, Any], payload_form: str, data: bytes) -> _Encoded:
    return _Encoded(role, schema["title"], "jsonschema", "json", payload_form, data)


def _verbatim(data: bytes) -> _Encoded:
    # NOTE: "application/octet-stream" is not one of MCAP's well-known message
    # encodings; Foxglove lists these channels but cannot decode them.
    return _Encoded(ROLE_PAYLOAD, "", "", "application/octet-stream", PAYLOAD_VERBATIM, data)


def _encode_frame(topic: str, header: Header, payload: bytes) -> _Encoded | None:
    info = header.frame
    if info is None:
        return None
    stamp = _timestamp(header.capture_wall_ns)
    if header.encoding == "jpeg":
        return _protobuf(ROLE_PAYLOAD, CompressedImage(timestamp=stamp, frame_id=topic, data=payload, format="jpeg"))
    if header.encoding in ("bgr8", "rgb8") and info.width * info.height * info.channels == len(payload):
        encoding = "mono8" if info.channels == 1 else header.encoding
        image = RawImage(
            timestamp=stamp,
            frame_id=topic,
            width=info.width,
            height=info.height,
            encoding=encoding,
            step=info.width * info.channels,
            data=payload,
        )
        return _protobuf(ROLE_PAYLOAD, image)
    return None


def _encode_audio(header: Header, payload: bytes, preview: bool) -> list[_Encoded] | None:
    info = header.audio
    if info is None or header.encoding not in messages.AUDIO_ENCODINGS:
        return None
    stamp = _timestamp(header.capture_wall_ns)

    # RawAudio in foxglove-schemas-protobuf 0.4.0 documents 'pcm-s16' as the
    # only format Foxglove plays; 'pcm-f32' keeps float samples exactly.
    audio_format = "pcm-s16" if header.encoding == "pcm_s16le" else "pcm-f32"
    chunk = RawAudio(
        timestamp=stamp, data=payload, format=audio_format, sample_rate=info.sample_rate, number_of_channels=info.channels
    )
    encoded = [_protobuf(ROLE_PAYLOAD, chunk)]

    if preview and header.encoding == "pcm_f32le" and len(payload) % 4 == 0:
        samples = np.frombuffer(payload, dtype="<f4")
        pcm16 = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
        playable = RawAudio(
            timestamp=stamp,
            data=pcm16.tobytes(),
            format="pcm-s16",
            sample_rate=info.sample_rate,
            number_of_channels=info.channels,
        )
        encoded.append(_protobuf(ROLE_PREVIEW, playable))
    return encoded


def _encode_alert(header: Header, payload: bytes) -> _Encoded | None:
    info = header.alert
    if info is None:
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    body = {"text": text, **info.model_dump(exclude_none=True)}
    return _json(ROLE_PAYLOAD, _ALERT_SCHEMA, PAYLOAD_ALERT_TEXT, json.dumps(body, ensure_ascii=False).encode())


def _encode_summary(payload: bytes) -> _Encoded | None:
    try:
        json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _json(ROLE_PAYLOAD, _SUMMARY_SCHEMA, PAYLOAD_VERBATIM, payload)


def _encode_payload(topic: str, header: Header, payload: bytes, audio_preview: bool) -> list[_Encoded]:
    """Return the MCAP messages that carry one payload; the first is the one replay reads."""
    encoded: _Encoded | list[_Encoded] | None = None
    if header.kind == "frame":
        encoded = _encode_frame(topic, header, payload)
    elif header.kind == "audio":
        encoded = _encode_audio(header, payload, audio_preview)
    elif header.kind == "alert":
        encoded = _encode_alert(header, payload)
    elif header.kind == "summary" and header.encoding == "json":
        encoded = _encode_summary(payload)
    if encoded is None:
        return [_verbatim(payload)]
    return encoded if isinstance(encoded, list) else [encoded]


def _decode_payload(payload_form: str, schema_name: str, data: bytes, where: str) -> bytes:
    """Return the bus payload stored in one MCAP payload message.

    Raises:
        RecordingError: The message does not hold a payload in ``payload_form``.
    """
    if payload_form == PAYLOAD_VERBATIM:
        return data
    try:
        if payload_form == PAYLOAD_PROTOBUF_DATA:
            message_type = _PROTOBUF_TYPES.get(schema_name)
            if message_type is None:
                raise RecordingError(f"{where}: schema {schema_name!r} is not one this reader decodes")
            return bytes(message_type.FromString(data).data)
        if payload_form == PAYLOAD_ALERT_TEXT:
            return json.loads(data)["text"].encode("utf-8")
    except (DecodeError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise RecordingError(f"{where}: payload does not decode as {payload_form} ({error})") from None
    raise RecordingError(f"{where}: unknown payload form {payload_form!r}; the file is newer than this reader")


def _header_schema() -> bytes:
    schema = Header.model_json_schema()
    schema["title"] = HEADER_SCHEMA_NAME
    return json.dumps(schema).encode()


# --- writing --------------------------------------------------------------------------------


def split_path(path: Path | str, index: int) -> Path:
    """Return the name of part ``index`` of a split recording: ``NAME_000.mcap`` for ``NAME.mcap``."""
    path = Path(path)
    stem = path.name[: -len(".mcap")] if path.name.endswith(".mcap") else path.name
    return path.with_name(f"{stem}_{index:03d}.mcap")


class Recorder:
    """Write bus messages to an MCAP recording, in chunks of bounded size and age.

    A chunk is closed, compressed and written when it contains ``chunk_bytes``
    or when its oldest message is ``flush_s`` old, whichever comes first, so
    a process killed with SIGKILL loses at most the chunk in memory. The
    flush by age happens on :meth:`write` and :meth:`flush_if_due`; a caller
    that may go without messages calls ``flush_if_due`` from its idle loop.

    Args:
        path: The ``.mcap`` file. With splitting on, the parts are
            ``NAME_000.mcap``, ``NAME_001.mcap`` and so on instead. Missing
            parent directories are created.
        compression: ``zstd`` (default), ``lz4`` or ``none``, per chunk.
        chunk_bytes: Uncompressed chunk size that closes a chunk, in bytes.
        flush_s: Age of the oldest unwritten message that closes a chunk, in seconds.
        split_bytes: Start a new part once a part reaches about this size, in
            bytes; None never splits by size.
        split_s: Start a new part after this many seconds of receive time;
            None never splits by time.
        audio_preview: Also write an int16 copy of float32 audio for Foxglove.
        overwrite: Replace existing files instead of raising.
        fsync: Call ``os.fsync`` after each chunk, so a power loss also
            loses at most one chunk (slower on slow disks).

    Raises:
        RecordingError: A file exists and ``overwrite`` is False, or a file
            cannot be created; the message names the path.
        ValueError: A setting is out of range or the compression is unknown.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        compression: str = "zstd",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        flush_s: float = DEFAULT_FLUSH_S,
        split_bytes: int | None = None,
        split_s: float | None = None,
        audio_preview: bool = True,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
        for name, value in (("chunk_bytes", chunk_bytes), ("flush_s", flush_s), ("split_bytes", split_bytes), ("split_s", split_s)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be greater than 0, got {value}")
        if not hasattr(McapWriter, "flush"):
            raise RecordingError("the installed mcap package has no Writer.flush(); upgrade it with 'pip install -U mcap'")

        self.path = Path(path)
        self.compression = compression
        self.chunk_bytes = chunk_bytes
        self.flush_s = flush_s
        self.split_bytes = split_bytes
        self.split_s = split_s
        self.audio_preview = audio_preview
        self.overwrite = overwrite
        self.fsync = fsync

        self.paths: list[Path] = []
        """Files written so far, in order."""
        self.messages = 0
        """Bus messages written."""
        self.payload_bytes = 0
        """Bus payload bytes written."""
        self.counts: collections.Counter[str] = collections.Counter()
        """Bus messages written per topic."""
        self.chunks = 0

        self._stream: IO[bytes] | None = None
        self._writer: McapWriter | None = None
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, str, str], int] = {}
        self._channel_names: dict[tuple[str, str, str], str] = {}
        self._pending_bytes = 0
        self._pending_since: float | None = None
        self._part_started = 0.0
        self._part_messages = 0
        self._good_offset = 0
        self._failure: RecordingError | None = None
        self._closed = False
        self._open_part()

    @property
    def splitting(self) -> bool:
        return self.split_bytes is not None or self.split_s is not None

    @property
    def current_path(self) -> Path:
        return self.paths[-1]

    # -- files --

    def _open_part(self) -> None:
        path = split_path(self.path, len(self.paths)) if self.splitting else self.path
        if path.exists() and not self.overwrite:
            raise RecordingError(f"recording {path} already exists; choose another path or pass --overwrite", path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stream = open(path, "wb")
        except OSError as error:
            raise RecordingError(
                f"cannot create recording {path}: {error.strerror or error}; check that its directory is writable", path
            ) from None

        self._stream = stream
        self._writer = McapWriter(stream, chunk_size=_UNBOUNDED_CHUNK, compression=COMPRESSIONS[self.compression])
        self._schemas.clear()
        self._channels.clear()
        self.paths.append(path)
        self._part_started = time.monotonic()
        self._part_messages = 0
        try:
            self._writer.start(profile="", library=f"scenewatch recording {FORMAT_VERSION}")
            self._writer.add_metadata(
                "scenewatch",
                {"format": FORMAT_VERSION, "part": str(len(self.paths) - 1), "started_wall_ns": str(time.time_ns())},
            )
            stream.flush()
        except OSError as error:
            self._fail(error)
        self._good_offset = stream.tell()
        log.info("recording to %s (%s, chunks of %d bytes or %.1f s)", path, self.compression, self.chunk_bytes, self.flush_s)

    def _close_part(self) -> None:
        assert self._writer is not None and self._stream is not None
        try:
            self._writer.finish()
            self._stream.flush()
            if self.fsync:
                os.fsync(self._stream.fileno())
        except OSError as error:
            self._fail(error)
        finally:
            self._close_stream()

    def _close_stream(self) -> None:
        stream, self._stream, self._writer = self._stream, None, None
        if stream is None:
            return
        try:
            stream.close()
        except OSError as error:  # the buffered tail could not be written either
            log.debug("closing %s after a write error failed again: %s", self.current_path, error)

    def _fail(self, error: OSError) -> None:
        path = self.current_path
        self._failure = RecordingError(
            f"writing recording {path} failed: {error.strerror or error}; the first {self._good_offset} bytes contain "
            f"complete chunks, {_damaged_hint(path)}",
            path,
            self._good_offset,
        )
        log.error("%s", self._failure)
        self._close_stream()
        raise self._failure

    def _split_due(self, incoming_bytes: int) -> bool:
        if not self._part_messages:
            return False
        if self.split_s is not None and time.monotonic() - self._part_started >= self.split_s:
            return True
        if self.split_bytes is not None:
            assert self._stream is not None
            return self._stream.tell() + self._pending_bytes + incoming_bytes >= self.split_bytes
        return False

    # -- channels --

    def _schema_id(self, encoded: _Encoded) -> int:
        if not encoded.schema_name:
            return 0
        schema_id = self._schemas.get(encoded.schema_name)
        if schema_id is None:
            assert self._writer is not None
            if encoded.schema_encoding == "protobuf":
                data = build_file_descriptor_set(_PROTOBUF_TYPES[encoded.schema_name]).SerializeToString()
            elif encoded.schema_name == HEADER_SCHEMA_NAME:
                data = _header_schema()
            elif encoded.schema_name == _ALERT_SCHEMA["title"]:
                data = json.dumps(_ALERT_SCHEMA).encode()
            else:
                data = json.dumps(_SUMMARY_SCHEMA).encode()
            schema_id = self._writer.register_schema(encoded.schema_name, encoded.schema_encoding, data)
            self._schemas[encoded.schema_name] = schema_id
        return schema_id

    def _channel_name(self, topic: str, encoded: _Encoded) -> str:
        """Return ``/<topic>``, ``/<topic>/header`` or ``/<topic>/preview``; a second payload schema gets its own name."""
        key = (topic, encoded.role, encoded.schema_name)
        name = self._channel_names.get(key)
        if name is None:
            if encoded.role != ROLE_PAYLOAD:
                name = f"/{topic}/{encoded.role}"
            elif any(k[0] == topic and k[1] == ROLE_PAYLOAD for k in self._channel_names):
                name = f"/{topic}/{encoded.schema_name.rsplit('.', 1)[-1] or 'raw'}"
            else:
                name = f"/{topic}"
            self._channel_names[key] = name
        return name

    def _channel_id(self, topic: str, encoded: _Encoded) -> int:
        key = (topic, encoded.role, encoded.schema_name)
        channel_id = self._channels.get(key)
        if channel_id is None:
            assert self._writer is not None
            channel_id = self._writer.register_channel(
                topic=self._channel_name(topic, encoded),
                message_encoding=encoded.message_encoding,
                schema_id=self._schema_id(encoded),
                metadata={META_TOPIC: topic, META_ROLE: encoded.role, META_PAYLOAD: encoded.payload_form},
            )
            self._channels[key] = channel_id
        return channel_id

    # -- messages --

    def write(
        self,
        topic: str,
        header_bytes: bytes,
        payload: bytes | memoryview,
        *,
        header: Header | None = None,
        receive_wall_ns: int | None = None,
    ) -> None:
        """Write one bus message: its header bytes unchanged and its payload.

        Args:
            topic: Bus topic.
            header_bytes: The header JSON as received.
            payload: The payload as received.
            header: The parsed header, when the caller has it already.
            receive_wall_ns: Receive time as Unix nanoseconds (MCAP
                ``log_time``); defaults to now.

        Raises:
            RecordingError: Writing failed (disk full, I/O error), now or
                before; or the recorder is closed.
            messages.MessageRejected: ``header`` is None and the header
                bytes do not parse.
        """
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RecordingError(f"recording {self.path} is closed; create a new Recorder", self.path)
        if header is None:
            header = messages.decode_header(header_bytes)
        if receive_wall_ns is None:
            receive_wall_ns = time.time_ns()
        payload = bytes(payload)
        header_bytes = bytes(header_bytes)

        encoded = [_json(ROLE_HEADER, {"title": HEADER_SCHEMA_NAME}, PAYLOAD_VERBATIM, header_bytes)]
        encoded += _encode_payload(topic, header, payload, self.audio_preview)
        size = sum(len(item.data) + _MESSAGE_RECORD_BYTES for item in encoded)
        if self._split_due(size):
            self._close_part()
            self._open_part()

        assert self._writer is not None
        sequence = header.seq % 2**32
        for item in encoded:
            self._writer.add_message(
                self._channel_id(topic, item),
                log_time=receive_wall_ns,
                data=item.data,
                publish_time=max(0, header.capture_wall_ns),
                sequence=sequence,
            )

        self.messages += 1
        self._part_messages += 1
        self.payload_bytes += len(payload)
        self.counts[topic] += 1
        self._pending_bytes += size
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if self._pending_bytes >= self.chunk_bytes:
            self.flush()
        else:
            self.flush_if_due()

    def write_message(self, message: Message, receive_wall_ns: int | None = None) -> None:
        """Write a message from :meth:`Subscriber.recv`; see :meth:`write`."""
        self.write(
            message.topic, message.header_bytes, message.payload, header=message.header, receive_wall_ns=receive_wall_ns
        )

    def flush(self) -> None:
        """Close the current chunk and write it to the file.

        Raises:
            RecordingError: Writing failed.
        """
        if self._failure is not None:
            raise self._failure
        if self._writer is None or self._stream is None or self._pending_since is None:
            return
        try:
            self._writer.flush()
            if self.fsync:
                os.fsync(self._stream.fileno())
        except OSError as error:
            self._fail(error)
        self.chunks += 1
        self._good_offset = self._stream.tell()
        self._pending_bytes = 0
        self._pending_since = None

    def flush_if_due(self) -> bool:
        """Flush when the oldest unwritten message is ``flush_s`` old; return True if it flushed.

        Raises:
            RecordingError: Writing failed.
        """
        if self._pending_since is None or time.monotonic() - self._pending_since < self.flush_s:
            return False
        self.flush()
        return True

    def close(self) -> None:
        """Write the last chunk and the summary, and close the file; safe to call twice.

        Raises:
            RecordingError: Writing failed. The file then contains complete
                chunks only and needs :func:`recover`.
        """
        if self._closed:
            return
        self._closed = True
        if self._failure is not None:
            self._close_stream()
            return
        self._close_part()
        self._pending_since = None
        log.info(
            "recording %s closed: %d messages, %d payload bytes, %d files",
            self.path,
            self.messages,
            self.payload_bytes,
            len(self.paths),
        )

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record(
    specs: Sequence[TopicSpec],
    recorder: Recorder,
    stop: threading.Event,
    *,
    duration_s: float | None = None,
    on_start: Callable[[Subscriber], None] | None = None,
) -> dict[str, TopicStats]:
    """Subscribe to topics and write every received message until ``stop`` is set.

    Each topic is subscribed with policy ``all``, so the recorder keeps
    every message its socket receives even on ``latest`` topics. Messages
    already received when ``stop`` is set are still written.

    Args:
        specs: Topics to record.
        recorder: Open recorder; the caller closes it.
        stop: Set it to end the recording.
        duration_s: Stop after this many seconds; None records until ``stop``.
        on_start: Called with the subscriber once it is connected.

    Returns:
        The subscriber's counters per topic (received, gaps, rejected).

    Raises:
        RecordingError: Writing failed.
    """
    specs = [spec.model_copy(update={"policy": "all"}) for spec in specs]
    idle_s = min(0.1, recorder.flush_s / 4)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    with Subscriber(specs) as subscriber:
        if on_start is not None:
            on_start(subscriber)
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            message = subscriber.recv(timeout_s=idle_s)
            if message is None:
                recorder.flush_if_due()
                continue
            recorder.write_message(message, time.time_ns())

        while (message := subscriber.recv(timeout_s=0)) is not None:
            recorder.write_message(message, time.time_ns())
        return dict(subscriber.stats)


# --- reading --------------------------------------------------------------------------------


def recording_files(path: Path | str) -> list[Path]:
    """Return the files of a recording: ``path`` itself, or its parts ``NAME_000.mcap`` onwards.

    Raises:
        RecordingNotFoundError: Neither ``path`` nor its first part exists.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    stem = path.name[: -len(".mcap")] if path.name.endswith(".mcap") else path.name
    pattern = re.compile(re.escape(stem) + r"_(\d{3,})\.mcap")
    parts: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = pattern.fullmatch(candidate.name)
            if match:
                parts.append((int(match.group(1)), candidate))
    if not parts:
        raise RecordingNotFoundError(
            f"recording {path} not found, and no split parts like {split_path(path, 0).name} beside it", path
        )
    parts.sort()
    indexes = [index for index, _ in parts]
    if indexes != list(range(indexes[0], indexes[0] + len(indexes))):
        log.warning("recording %s: parts are missing between %s; reading the ones present", path, indexes)
    return [part for _, part in parts]


class RecordedMessage(NamedTuple):
    """One bus message read back: unpacks as ``topic, header_bytes, payload``."""

    topic: str
    header_bytes: bytes
    payload: bytes

    @property
    def capture_ns(self) -> int:
        """Capture time on the monotonic clock, in nanoseconds, from the header."""
        return int(json.loads(self.header_bytes)["capture_ns"])

    def decode(self) -> Message:
        """Check and decode the message as a receiver would.

        Raises:
            messages.MessageRejected: The recorded message fails the bus checks.
        """
        return messages.decode([self.topic.encode(), self.header_bytes, self.payload])


@dataclass(frozen=True)
class _ChannelRole:
    topic: str
    role: str
    payload_form: str
    schema_name: str


def _find_damage(path: Path) -> tuple[int, str]:
    """Scan a file record by record; return the end offset of the last readable record and why reading stopped."""
    good = 0
    with open(path, "rb") as stream:
        try:
            for record in StreamReader(stream, emit_chunks=True).records:
                if isinstance(record, Chunk):
                    breakup_chunk(record, validate_crc=True)
                good = stream.tell()
        except _DAMAGE_ERRORS as error:
            return good, str(error) or type(error).__name__
    return good, "the summary section is unreadable"


class _RecordingFile:
    """One MCAP file of a recording, read chunk by chunk through its summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._stream = open(path, "rb")
        except FileNotFoundError:
            raise RecordingNotFoundError(f"recording {path} not found", path) from None
        except OSError as error:
            raise RecordingError(f"cannot open recording {path}: {error.strerror or error}", path) from None
        self.size = os.fstat(self._stream.fileno()).st_size

        magic = self._stream.read(8)
        self._stream.seek(0)
        if not magic.startswith(b"\x89MCAP"):
            self._stream.close()
            raise RecordingError(
                f"{path} is not an MCAP file (it does not start with the MCAP magic bytes); "
                "replay takes MCAP recordings and video files",
                path,
                0,
            )
        try:
            summary = SeekingReader(self._stream).get_summary()
        except _DAMAGE_ERRORS:
            self._stream.close()
            offset, reason = _find_damage(path)
            raise RecordingError(
                f"recording {path} is truncated or corrupt at byte {offset} of {self.size} ({reason}); {_damaged_hint(path)}",
                path,
                offset,
            ) from None
        if summary is None:
            self._stream.close()
            raise RecordingError(f"recording {path} has no summary section; {_damaged_hint(path)}", path)

        self.summary: Summary = summary
        self.chunk_indexes = sorted(summary.chunk_indexes, key=lambda index: index.chunk_start_offset)
        self.roles: dict[int, _ChannelRole] = {}
        for channel in summary.channels.values():
            topic = channel.metadata.get(META_TOPIC)
            role = channel.metadata.get(META_ROLE)
            if topic and role:
                schema = summary.schemas.get(channel.schema_id)
                self.roles[channel.id] = _ChannelRole(
                    topic, role, channel.metadata.get(META_PAYLOAD, PAYLOAD_VERBATIM), schema.name if schema else ""
                )
        self.topics = sorted({role.topic for role in self.roles.values()})
        self._cache: collections.OrderedDict[int, list[Any]] = collections.OrderedDict()

    def close(self) -> None:
        self._stream.close()

    def chunk_records(self, index: ChunkIndex) -> list[Any]:
        """Return the records of one chunk, decompressed and CRC-checked.

        Raises:
            RecordingError: The chunk is damaged; names the file and offset.
        """
        offset = index.chunk_start_offset
        records = self._cache.get(offset)
        if records is not None:
            self._cache.move_to_end(offset)
            return records
        try:
            self._stream.seek(offset + 1 + 8)
            chunk = Chunk.read(ReadDataStream(self._stream))
            records = breakup_chunk(chunk, validate_crc=True)
        except _DAMAGE_ERRORS as error:
            raise RecordingError(
                f"recording {self.path} has a corrupt chunk at byte {offset} ({error}); {_damaged_hint(self.path)}",
                self.path,
                offset,
            ) from None
        self._cache[offset] = records
        if len(self._cache) > _CHUNK_CACHE:
            self._cache.popitem(last=False)
        return records

    def chunks_with(self, channel_ids: set[int]) -> Iterator[ChunkIndex]:
        for index in self.chunk_indexes:
            offsets = index.message_index_offsets
            if not offsets or channel_ids.intersection(offsets):
                yield index

    def iter_topic(self, topic: str) -> Iterator[RecordedMessage]:
        """Yield the messages of one topic in file order, pairing each header with its payload.

        Raises:
            RecordingError: A chunk is damaged or a header has no payload.
        """
        channel_ids = {channel_id for channel_id, role in self.roles.items() if role.topic == topic}
        for index in self.chunks_with(channel_ids):
            where = f"recording {self.path}, chunk at byte {index.chunk_start_offset}, topic {topic!r}"
            pending: McapMessage | None = None
            for record in self.chunk_records(index):
                if not isinstance(record, McapMessage) or record.channel_id not in channel_ids:
                    continue
                role = self.roles[record.channel_id]
                if role.role == ROLE_HEADER:
                    if pending is not None:
                        raise RecordingError(f"{where}: header of seq {pending.sequence} has no payload", self.path)
                    pending = record
                elif role.role == ROLE_PAYLOAD:
                    if pending is None:
                        raise RecordingError(f"{where}: payload of seq {record.sequence} has no header", self.path)
                    payload = _decode_payload(role.payload_form, role.schema_name, record.data, where)
                    yield RecordedMessage(topic, bytes(pending.data), payload)
                    pending = None
            if pending is not None:
                raise RecordingError(f"{where}: header of seq {pending.sequence} has no payload", self.path)

    def iter_headers(self) -> Iterator[tuple[str, bytes, int]]:
        """Yield ``(topic, header_bytes, log_time)`` of every message in file order."""
        header_ids = {channel_id for channel_id, role in self.roles.items() if role.role == ROLE_HEADER}
        for index in self.chunks_with(header_ids):
            for record in self.chunk_records(index):
                if isinstance(record, McapMessage) and record.channel_id in header_ids:
                    yield self.roles[record.channel_id].topic, bytes(record.data), record.log_time


class RecordingReader:
    """Read a recording back as ``(topic, header_bytes, payload)`` in capture-time order.

    Messages of all topics and all split parts are merged by the header's
    ``capture_ns``. The merge assumes that each topic's messages were
    received in capture order. That is true for a topic with one publisher
    that sends in capture order, as every scenewatch node does. A topic that
    breaks it is logged once and read in received order.

    Args:
        path: A ``.mcap`` file, or the name of a split recording
            (``NAME.mcap`` for ``NAME_000.mcap`` onwards), or a list of files.
        topics: Topics to read; None reads all.

    Raises:
        RecordingNotFoundError: A file does not exist.
        RecordingError: A file is truncated or corrupt (names the file and
            byte offset), or a requested topic is not in the recording.
    """

    def __init__(self, path: Path | str | Sequence[Path | str], topics: Iterable[str] | None = None) -> None:
        if isinstance(path, (str, Path)):
            self.files = recording_files(path)
        else:
            self.files = [Path(item) for item in path]
        self._parts: list[_RecordingFile] = []
        try:
            for file in self.files:
                self._parts.append(_RecordingFile(file))
        except RecordingError:
            self.close()
            raise
        known = sorted({topic for part in self._parts for topic in part.topics})
        self.topics = known if topics is None else list(topics)
        missing = [topic for topic in self.topics if topic not in known]
        if missing:
            self.close()
            raise RecordingError(f"topics {', '.join(missing)} are not in recording {self.files[0]}; it has {', '.join(known)}")

    def __len__(self) -> int:
        """Return the number of bus messages of the selected topics, from the summaries."""
        total = 0
        for part in self._parts:
            statistics = part.summary.statistics
            if statistics is None:
                continue
            for channel_id, count in statistics.channel_message_counts.items():
                role = part.roles.get(channel_id)
                if role is not None and role.role == ROLE_HEADER and role.topic in self.topics:
                    total += count
        return total

    def _iter_topic(self, topic: str) -> Iterator[tuple[int, RecordedMessage]]:
        last = None
        warned = False
        for part in self._parts:
            for message in part.iter_topic(topic):
                capture_ns = message.capture_ns
                if last is not None and capture_ns < last and not warned:
                    log.warning("recording %s: topic %r is not in capture order; reading it in received order", part.path, topic)
                    warned = True
                last = capture_ns
                yield capture_ns, message

    def __iter__(self) -> Iterator[RecordedMessage]:
        streams = [self._iter_topic(topic) for topic in self.topics]
        for _, message in heapq.merge(*streams, key=lambda item: item[0]):
            yield message

    def close(self) -> None:
        for part in self._parts:
            part.close()

    def __enter__(self) -> "RecordingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- inspect --------------------------------------------------------------------------------


@dataclass
class PublisherInfo:
    """One publisher instance (``source`` and ``session``) of a topic."""

    source: str
    session: str
    count: int = 0
    first_seq: int = 0
    last_seq: int = 0

    @property
    def gaps(self) -> int:
        """Sequence numbers missing between the first and last recorded message."""
        return max(0, self.last_seq - self.first_seq + 1 - self.count)


@dataclass
class TopicInfo:
    """Counts and times of one recorded topic."""

    topic: str
    kind: str
    count: int = 0
    payload_bytes: int = 0
    encodings: set[str] = field(default_factory=set)
    first_capture_ns: int = 0
    last_capture_ns: int = 0
    publishers: dict[tuple[str, str], PublisherInfo] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Capture time from the first to the last message, in seconds."""
        return (self.last_capture_ns - self.first_capture_ns) / 1e9

    @property
    def rate_hz(self) -> float:
        """Mean message rate over ``duration_s``, in Hz; 0 with fewer than two messages."""
        return (self.count - 1) / self.duration_s if self.count > 1 and self.duration_s > 0 else 0.0

    @property
    def gaps(self) -> int:
        return sum(publisher.gaps for publisher in self.publishers.values())


@dataclass
class RecordingInfo:
    """Summary of a recording: files, chunks, topics and capture times, from :func:`inspect`."""

    files: list[Path]
    file_bytes: int
    chunks: int
    compression: set[str]
    topics: dict[str, TopicInfo]
    start_wall_ns: int
    """Earliest capture wall-clock time, Unix nanoseconds."""
    end_wall_ns: int

    @property
    def count(self) -> int:
        return sum(topic.count for topic in self.topics.values())

    @property
    def duration_s(self) -> float:
        """Capture wall-clock time from the first to the last message, in seconds."""
        return (self.end_wall_ns - self.start_wall_ns) / 1e9


def inspect(path: Path | str) -> RecordingInfo:
    """Read every header of a recording and return its topics, counts, rates and sequence gaps.

    Raises:
        RecordingNotFoundError: The recording does not exist.
        RecordingError: A file is truncated or corrupt.
    """
    with RecordingReader(path) as reader:
        topics: dict[str, TopicInfo] = {}
        start_wall = end_wall = None
        chunks = 0
        compression: set[str] = set()
        for part in reader._parts:
            chunks += len(part.chunk_indexes)
            compression.update(index.compression or "none" for index in part.chunk_indexes)
            for topic, header_bytes, _log_time in part.iter_headers():
                header = json.loads(header_bytes)
                info = topics.get(topic)
                if info is None:
                    info = topics[topic] = TopicInfo(topic, header["kind"], first_capture_ns=header["capture_ns"])
                _add_header(info, header)
                wall = header["capture_wall_ns"]
                start_wall = wall if start_wall is None else min(start_wall, wall)
                end_wall = wall if end_wall is None else max(end_wall, wall)
        return RecordingInfo(
            files=list(reader.files),
            file_bytes=sum(part.size for part in reader._parts),
            chunks=chunks,
            compression=compression,
            topics=dict(sorted(topics.items())),
            start_wall_ns=start_wall or 0,
            end_wall_ns=end_wall or 0,
        )


def _add_header(info: TopicInfo, header: dict[str, Any]) -> None:
    info.count += 1
    info.payload_bytes += int(header.get("size", 0))
    info.encodings.add(str(header.get("encoding", "")))
    info.first_capture_ns = min(info.first_capture_ns, header["capture_ns"])
    info.last_capture_ns = max(info.last_capture_ns, header["capture_ns"])
    key = (str(header["source"]), str(header["session"]))
    seq = int(header["seq"])
    publisher = info.publishers.get(key)
    if publisher is None:
        publisher = info.publishers[key] = PublisherInfo(key[0], key[1], first_seq=seq, last_seq=seq)
    publisher.count += 1
    publisher.first_seq = min(publisher.first_seq, seq)
    publisher.last_seq = max(publisher.last_seq, seq)


# --- recover --------------------------------------------------------------------------------


@dataclass
class RecoverReport:
    """Result of :func:`recover`: messages kept and bytes lost."""

    kept: int = 0
    """Bus messages kept (messages on header channels)."""
    mcap_messages: int = 0
    """MCAP messages kept, on every channel."""
    lost_bytes: int = 0
    """Bytes of the damaged file that were dropped: the unreadable tail and skipped chunks."""
    skipped_chunks: int = 0
    """Chunks that failed their CRC or decompression and were skipped."""
    dropped_messages: int = 0
    """Messages whose channel record was lost, so they could not be written."""
    stopped_at: int | None = None
    """Byte offset where reading stopped because the data ends or is damaged; None when the file ended properly."""
    reason: str | None = None
    """Reason reading stopped at ``stopped_at``."""
    last_capture_wall_ns: int | None = None
    """Latest capture wall-clock time (MCAP ``publish_time``) among kept messages, Unix nanoseconds."""


class _Copier:
    """Write records read from a damaged file into a new MCAP file, renumbering schemas and channels."""

    def __init__(self, writer: McapWriter, report: RecoverReport) -> None:
        self.writer = writer
        self.report = report
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, Channel] = {}
        self._schema_ids: dict[int, int] = {}
        self._channel_ids: dict[int, int] = {}

    def add(self, record: Any) -> None:
        if isinstance(record, Schema):
            self.schemas.setdefault(record.id, record)
        elif isinstance(record, Channel):
            self.channels.setdefault(record.id, record)
        elif isinstance(record, McapMessage):
            self._message(record)
        elif isinstance(record, Metadata):
            self.writer.add_metadata(record.name, record.metadata)
        elif isinstance(record, Attachment):
            self.writer.add_attachment(record.create_time, record.log_time, record.name, record.media_type, record.data)

    def _new_channel_id(self, old_id: int) -> int | None:
        new_id = self._channel_ids.get(old_id)
        if new_id is not None:
            return new_id
        channel = self.channels.get(old_id)
        if channel is None:
            return None
        schema_id = 0
        if channel.schema_id:
            schema = self.schemas.get(channel.schema_id)
            if schema is None:
                return None
            schema_id = self._schema_ids.get(schema.id) or self.writer.register_schema(schema.name, schema.encoding, schema.data)
            self._schema_ids[schema.id] = schema_id
        new_id = self.writer.register_channel(channel.topic, channel.message_encoding, schema_id, dict(channel.metadata))
        self._channel_ids[old_id] = new_id
        return new_id

    def _message(self, message: McapMessage) -> None:
        channel_id = self._new_channel_id(message.channel_id)
        if channel_id is None:
            self.report.dropped_messages += 1
            return
        self.writer.add_message(channel_id, message.log_time, message.data, message.publish_time, message.sequence)
        self.report.mcap_messages += 1
        if self.channels[message.channel_id].metadata.get(META_ROLE) == ROLE_HEADER:
            self.report.kept += 1
            last = self.report.last_capture_wall_ns
            self.report.last_capture_wall_ns = message.publish_time if last is None else max(last, message.publish_time)


def recover(
    broken: Path | str,
    fixed: Path | str,
    *,
    compression: str = "zstd",
    overwrite: bool = False,
) -> RecoverReport:
    """Copy every complete message of a truncated or damaged MCAP file into a new, valid file.

    Records are read in file order until the data ends or a record cannot
    be framed (the usual end of a file whose writer was killed). A chunk
    that fails its CRC or decompression is skipped and reading goes on.
    Bus messages stay whole, because the recorder writes a header and its
    payload into the same chunk.

    Args:
        broken: The damaged file; it is only read.
        fixed: The new file.
        compression: ``zstd``, ``lz4`` or ``none`` for the new file.
        overwrite: Replace ``fixed`` if it exists.

    Returns:
        A :class:`RecoverReport` with the kept and lost counts.

    Raises:
        RecordingNotFoundError: ``broken`` does not exist.
        RecordingError: ``fixed`` is ``broken``, exists without
            ``overwrite``, or cannot be written; or ``broken`` is not MCAP.
    """
    broken, fixed = Path(broken), Path(fixed)
    if not broken.is_file():
        raise RecordingNotFoundError(f"recording {broken} not found", broken)
    if fixed.resolve() == broken.resolve():
        raise RecordingError(f"recover writes a new file; give an output path other than {broken}", broken)
    if fixed.exists() and not overwrite:
        raise RecordingError(f"{fixed} already exists; choose another output path or pass --overwrite", fixed)

    report = RecoverReport()
    size = broken.stat().st_size
    try:
        output = open(fixed, "wb")
    except OSError as error:
        raise RecordingError(f"cannot create {fixed}: {error.strerror or error}", fixed) from None
    with open(broken, "rb") as source, output:
        writer = McapWriter(output, compression=COMPRESSIONS[compression])
        writer.start(profile="", library=f"scenewatch recover {FORMAT_VERSION}")
        copier = _Copier(writer, report)
        _copy_records(source, copier, report, broken)
        if report.stopped_at is not None:
            report.lost_bytes += size - report.stopped_at
        writer.finish()

    log.info(
        "recovered %d messages from %s into %s; lost %d bytes, skipped %d chunks",
        report.kept,
        broken,
        fixed,
        report.lost_bytes,
        report.skipped_chunks,
    )
    return report


def _copy_records(source: IO[bytes], copier: _Copier, report: RecoverReport, path: Path) -> None:
    good = 0
    try:
        for record in StreamReader(source, emit_chunks=True).records:
            if isinstance(record, Chunk):
                try:
                    records = breakup_chunk(record, validate_crc=True)
                except _DAMAGE_ERRORS as error:
                    report.skipped_chunks += 1
                    report.lost_bytes += source.tell() - good
                    log.warning("%s: skipped the damaged chunk at byte %d (%s)", path, good, error)
                    records = []
                for inner in records:
                    copier.add(inner)
            else:
                copier.add(record)
            good = source.tell()
            if isinstance(record, DataEnd):
                return
    except _DAMAGE_ERRORS as error:
        if good == 0:
            raise RecordingError(f"{path} is not an MCAP file ({error})", path, 0) from None
        report.stopped_at = good
        report.reason = str(error) or type(error).__name__
        return
    report.stopped_at = good
    report.reason = "the file ends without a data end record"


# --- command line ---------------------------------------------------------------------------


def byte_size(text: str) -> int:
    """argparse type: a size in bytes, with an optional k, M or G suffix (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use bytes or a k, M or G suffix, for example 64M")
    value = float(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 byte")
    return int(value)


def topic_list(text: str) -> list[str]:
    """argparse type: comma-separated topic names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one topic name, for example camera,alerts")
    return names


def register_cli(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the ``record``, ``inspect`` and ``recover`` subcommands; return their functions by name."""
    from pipeline.cli import positive_float

    record_parser = commands.add_parser("record", help="record the running graph's topics to an MCAP file; Ctrl-C stops")
    record_parser.add_argument("file", help="output .mcap file; with splitting, parts are named FILE_000.mcap and so on")
    record_parser.add_argument("--topics", type=topic_list, default=None, help="comma-separated topics (default: every topic of the graph)")
    record_parser.add_argument("--config", default=None, help="graph YAML file (default: the running graph)")
    record_parser.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS", help="stop after this many seconds (default: run until Ctrl-C)")
    record_parser.add_argument("--compression", choices=tuple(COMPRESSIONS), default="zstd", help="chunk compression (default zstd)")
    record_parser.add_argument("--chunk-bytes", type=byte_size, default=DEFAULT_CHUNK_BYTES, metavar="BYTES", help="close a chunk at this uncompressed size in bytes; k, M, G suffixes allowed (default 1M)")
    record_parser.add_argument("--flush-s", type=positive_float, default=DEFAULT_FLUSH_S, metavar="SECONDS", help="write a chunk once its oldest message is this old; bounds the loss on a crash (default 1.0)")
    record_parser.add_argument("--split-bytes", type=byte_size, default=None, metavar="BYTES", help="start a new file at about this size in bytes; k, M, G suffixes allowed (default: no split)")
    record_parser.add_argument("--split-s", type=positive_float, default=None, metavar="SECONDS", help="start a new file after this many seconds (default: no split)")
    record_parser.add_argument("--overwrite", action="store_true", help="replace existing output files")

    inspect_parser = commands.add_parser("inspect", help="list a recording's topics with counts, rates (Hz) and sequence gaps")
    inspect_parser.add_argument("file", help="recording .mcap file, or NAME.mcap for split parts NAME_000.mcap onwards")

    recover_parser = commands.add_parser("recover", help="copy every complete message of a truncated recording into a valid file")
    recover_parser.add_argument("broken", help="truncated or damaged .mcap file (only read)")
    recover_parser.add_argument("fixed", help="new .mcap file to write")
    recover_parser.add_argument("--overwrite", action="store_true", help="replace FIXED if it exists")

    return {"record": _cmd_record, "inspect": _cmd_inspect, "recover": _cmd_recover}


def _cmd_record(args: argparse.Namespace) -> int:
    from pipeline.cli import resolve_graph
    from pipeline.transport import topic_specs

    graph = resolve_graph(args.config)
    try:
        specs = topic_specs(list(graph.topic_specs().values()), args.topics or list(graph.topics))
    except KeyError as error:
        print(f"scenewatch record: {error.args[0]}", file=sys.stderr)
        return 2

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        previous = {signum: signal.signal(signum, lambda _s, _f: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Recorder(
            args.file,
            compression=args.compression,
            chunk_bytes=args.chunk_bytes,
            flush_s=args.flush_s,
            split_bytes=args.split_bytes,
            split_s=args.split_s,
            overwrite=args.overwrite,
        ) as recorder:
            print(f"recording {', '.join(spec.name for spec in specs)} to {recorder.current_path}; Ctrl-C stops", flush=True)
            stats = record(specs, recorder, stop, duration_s=args.duration)
    except RecordingError as error:
        print(f"scenewatch record: {error}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    counts = ", ".join(f"{name} {recorder.counts[name]} (lost {stats[name].gaps})" for name in stats)
    print(f"recorded {recorder.messages} messages to {', '.join(map(str, recorder.paths))}: {counts}")
    return 0


def _format_wall(wall_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_ns / 1e9)) + f".{wall_ns // 1_000_000 % 1000:03d}"


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    try:
        info = inspect(args.file)
    except RecordingError as error:
        print(f"scenewatch inspect: {error}", file=sys.stderr)
        return 1

    from pipeline.cli import table_width

    console = Console(width=table_width())
    console.print(
        f"{len(info.files)} file(s), {info.file_bytes / 1e6:.2f} MB, {info.chunks} chunks ({', '.join(sorted(info.compression)) or '-'}), "
        f"{info.count} messages over {info.duration_s:.2f} s"
    )
    if info.count:
        console.print(f"capture from {_format_wall(info.start_wall_ns)} to {_format_wall(info.end_wall_ns)}")
    table = Table(title=f"recording {args.file}")
    for column in ("topic", "kind", "encoding", "messages", "rate (Hz)", "payload MB", "duration (s)", "publishers", "gaps"):
        table.add_column(column, justify="left" if column in ("topic", "kind", "encoding", "publishers") else "right")
    for topic in info.topics.values():
        table.add_row(
            topic.topic,
            topic.kind,
            ", ".join(sorted(topic.encodings)),
            str(topic.count),
            f"{topic.rate_hz:.2f}",
            f"{topic.payload_bytes / 1e6:.2f}",
            f"{topic.duration_s:.2f}",
            ", ".join(f"{p.source}/{p.session[:6]}" for p in topic.publishers.values()),
            str(topic.gaps),
        )
    console.print(table)
    return 0


def _cmd_recover(args: argparse.Namespace) -> int:
    try:
        report = recover(args.broken, args.fixed, overwrite=args.overwrite)
    except RecordingError as error:
        print(f"scenewatch recover: {error}", file=sys.stderr)
        return 1
    print(f"kept {report.kept} messages ({report.mcap_messages} MCAP messages) in {args.fixed}")
    if report.stopped_at is not None:
        print(f"reading stopped at byte {report.stopped_at}: {report.reason}; {report.lost_bytes} bytes lost")
    if report.skipped_chunks or report.dropped_messages:
        print(f"skipped {report.skipped_chunks} damaged chunks, dropped {report.dropped_messages} messages without a channel")
    return 0 if report.kept else 1
