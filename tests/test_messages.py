"""Wire format: round trips of every message kind, and every rejection a subscriber counts.

The rejection tests send hand-made multipart messages from a raw ZeroMQ XPUB
socket to a real :class:`~pipeline.transport.Subscriber` over TCP on
127.0.0.1, then check the counter and that a good message still arrives.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import pytest
import zmq

from pipeline import messages
from pipeline.messages import MAX_HEADER_BYTES, Alert, AudioChunk, Frame, MessageRejected
from pipeline.transport import Subscriber, TopicSpec, get_context

TOPIC = "camera"
MAX_PAYLOAD_BYTES = 1000


def gradient_image(height: int = 48, width: int = 64) -> np.ndarray:
    """Return a smooth BGR image, which JPEG keeps close to the original."""
    rows = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return np.stack([np.broadcast_to(rows, (height, width)), np.broadcast_to(columns, (height, width)), np.full((height, width), 128, np.uint8)], axis=2)


def wire(parts: list[Any]) -> list[bytes]:
    """Return the parts as the bytes a receiver gets from the socket."""
    return [bytes(memoryview(part).cast("B")) if not isinstance(part, bytes) else part for part in parts]


# Round trips


def test_frame_jpeg_round_trip() -> None:
    image = gradient_image()
    parts = messages.encode_frame(
        image, topic="camera", source="cam0", seq=7, session="s1", capture_ns=1_000, capture_wall_ns=2_000, stream_time_s=0.28
    )

    frame = messages.decode(wire(parts))

    assert isinstance(frame, Frame)
    assert frame.topic == "camera"
    assert frame.header.kind == "frame"
    assert frame.header.encoding == "jpeg"
    assert (frame.header.source, frame.header.session, frame.header.seq) == ("cam0", "s1", 7)
    assert (frame.header.capture_ns, frame.header.capture_wall_ns) == (1_000, 2_000)
    assert (frame.header.frame.width, frame.header.frame.height, frame.header.frame.channels) == (64, 48, 3)
    assert frame.header.frame.jpeg_quality == 85
    assert frame.header.frame.stream_time_s == 0.28
    assert bytes(frame.payload[:2]) == b"\xff\xd8"
    decoded = frame.image()
    assert decoded.shape == (48, 64, 3)
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3.0


@pytest.mark.parametrize("encoding, order", [("bgr8", "bgr"), ("rgb8", "rgb")])
def test_frame_raw_round_trip(encoding: str, order: str) -> None:
    image = gradient_image(5, 7)
    parts = messages.encode_frame(image, topic="camera", source="cam0", seq=0, encoding=encoding, channel_order=order)

    frame = messages.decode(wire(parts))

    assert frame.header.encoding == encoding
    assert frame.header.size == 5 * 7 * 3
    assert frame.header.shape == (5, 7, 3)
    assert frame.header.frame.channel_order == order
    np.testing.assert_array_equal(frame.image(), image)
    expected_bgr = image if order == "bgr" else image[..., ::-1]
    np.testing.assert_array_equal(frame.bgr(), expected_bgr)


def test_frame_decodes_in_process_without_wire() -> None:
    image = gradient_image(4, 6)
    parts = messages.encode_frame(image, topic="camera", source="cam0", seq=0, encoding="bgr8")

    frame = messages.decode(parts)

    np.testing.assert_array_equal(frame.image(), image)


def test_frame_raw_encoding_contradicting_order_raises() -> None:
    with pytest.raises(ValueError, match="contradicts channel_order"):
        messages.encode_frame(gradient_image(), topic="camera", source="cam0", seq=0, encoding="rgb8", channel_order="bgr")


def test_audio_float32_round_trip() -> None:
    samples = np.linspace(-1.0, 1.0, 1600 * 2, dtype=np.float32).reshape(1600, 2)
    parts = messages.encode_audio(
        samples, sample_rate=16_000, topic="audio", source="mic", seq=3, capture_ns=5, gap_before=True, lost_frames=160
    )

    chunk = messages.decode(wire(parts))

    assert isinstance(chunk, AudioChunk)
    assert chunk.header.encoding == "pcm_f32le"
    assert chunk.header.audio.sample_rate == 16_000
    assert (chunk.header.audio.frames, chunk.header.audio.channels) == (1600, 2)
    assert chunk.header.audio.gap_before is True
    assert chunk.header.audio.lost_frames == 160
    assert chunk.duration_s == pytest.approx(0.1)
    np.testing.assert_array_equal(chunk.samples(), samples)
    np.testing.assert_array_equal(chunk.float32(), samples)


def test_audio_int16_round_trip() -> None:
    samples = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    parts = messages.encode_audio(samples, sample_rate=44_100, topic="audio", source="mic", seq=0)

    chunk = messages.decode(wire(parts))

    assert chunk.header.encoding == "pcm_s16le"
    assert chunk.header.size == 10
    assert chunk.samples().shape == (5, 1)
    np.testing.assert_array_equal(chunk.samples()[:, 0], samples)
    np.testing.assert_allclose(chunk.float32()[:, 0], samples / 32768.0)


def test_audio_float64_raises() -> None:
    with pytest.raises(ValueError, match="float64"):
        messages.encode_audio(np.zeros(10), sample_rate=16_000, topic="audio", source="mic", seq=0)


def test_alert_round_trip() -> None:
    text = "Straßensperrung ahead: right lane closed ⚠"
    parts = messages.encode_alert(
        text, topic="alerts", source="alerts", seq=2, session="abc", severity="warning", category="closure", expires_s=600.0, origin="file"
    )

    alert = messages.decode(wire(parts))

    assert isinstance(alert, Alert)
    assert alert.text == text
    assert alert.info.severity == "warning"
    assert alert.info.category == "closure"
    assert alert.info.expires_s == 600.0
    assert alert.info.origin == "file"
    assert alert.info.alert_id == "alerts-abc-2"
    assert alert.header.size == len(text.encode("utf-8"))


def test_alert_empty_text_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        messages.encode_alert("   ", topic="alerts", source="alerts", seq=0)


def test_header_newer_minor_version_accepted() -> None:
    parts = wire(messages.encode_alert("hello", topic="alerts", source="alerts", seq=0))
    header = json.loads(parts[1])
    header["version"] = "1.9"
    header["field_from_the_future"] = {"x": 1}
    parts[1] = json.dumps(header).encode()

    alert = messages.decode(parts)

    assert alert.header.version == "1.9"
    assert alert.text == "hello"


# Rejections, each counted by a real Subscriber


def good_frame(seq: int) -> list[bytes]:
    return wire(messages.encode_frame(gradient_image(4, 4), topic=TOPIC, source="raw", seq=seq, encoding="bgr8"))


def with_header(parts: list[bytes], **changes: Any) -> list[bytes]:
    """Return the parts with header fields replaced (a dict value updates a nested block)."""
    header = json.loads(parts[1])
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(header.get(key), dict):
            header[key].update(value)
        else:
            header[key] = value
    return [parts[0], json.dumps(header).encode(), parts[2]]


def bad_alert_utf8() -> list[bytes]:
    parts = wire(messages.encode_alert("ab", topic=TOPIC, source="raw", seq=0))
    return [parts[0], parts[1], b"\xff\xfe"]


def bad_jpeg_magic() -> list[bytes]:
    parts = wire(messages.encode_frame(gradient_image(), topic=TOPIC, source="raw", seq=0))
    payload = b"\x00\x00" + parts[2][2:]
    return [parts[0], parts[1], payload]


REJECTIONS: list[tuple[str, Callable[[], list[bytes]], str]] = [
    ("major_version", lambda: with_header(good_frame(0), version="2.0"), "version"),
    ("missing_parts", lambda: good_frame(0)[:2], "truncated"),
    ("short_payload", lambda: [*good_frame(0)[:2], good_frame(0)[2][:20]], "truncated"),
    ("payload_over_topic_max", lambda: with_header([*good_frame(0)[:2], bytes(MAX_PAYLOAD_BYTES + 1)], size=MAX_PAYLOAD_BYTES + 1), "oversized"),
    ("header_over_max", lambda: with_header(good_frame(0), padding="x" * MAX_HEADER_BYTES), "oversized"),
    ("raw_shape_vs_size", lambda: with_header(good_frame(0), frame={"width": 5}), "mismatch"),
    ("topic_vs_header", lambda: with_header(good_frame(0), topic="audio"), "mismatch"),
    ("jpeg_magic", bad_jpeg_magic, "mismatch"),
    ("alert_not_utf8", bad_alert_utf8, "mismatch"),
    ("header_not_json", lambda: [TOPIC.encode(), b"{not json", bytes(48)], "malformed"),
    ("header_field_invalid", lambda: with_header(good_frame(0), seq=-1), "malformed"),
]


@pytest.mark.parametrize("make_parts, reason", [(m, r) for _, m, r in REJECTIONS], ids=[name for name, _, _ in REJECTIONS])
def test_decode_rejects(make_parts: Callable[[], list[bytes]], reason: str) -> None:
    with pytest.raises(MessageRejected) as caught:
        messages.decode(make_parts(), max_payload_bytes=MAX_PAYLOAD_BYTES)

    assert caught.value.reason == reason


@pytest.fixture
def raw_link() -> Any:
    """A raw XPUB socket bound on a free port and a Subscriber of topic ``camera`` connected to it."""
    publisher = get_context().socket(zmq.XPUB)
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.bind("tcp://127.0.0.1:0")
    endpoint = publisher.getsockopt_string(zmq.LAST_ENDPOINT)
    spec = TopicSpec(name=TOPIC, endpoint=endpoint, policy="all", max_payload_bytes=MAX_PAYLOAD_BYTES)
    subscriber = Subscriber([spec])
    assert publisher.poll(5000, zmq.POLLIN), "the subscription did not reach the raw publisher"
    assert publisher.recv() == b"\x01" + TOPIC.encode()
    yield publisher, subscriber
    subscriber.close()
    publisher.close(0)


@pytest.mark.parametrize("make_parts, reason", [(m, r) for _, m, r in REJECTIONS], ids=[name for name, _, _ in REJECTIONS])
def test_subscriber_counts_rejection(raw_link: Any, make_parts: Callable[[], list[bytes]], reason: str) -> None:
    publisher, subscriber = raw_link

    publisher.send_multipart(make_parts())
    publisher.send_multipart(good_frame(0))
    message = subscriber.recv(timeout_s=5.0)

    assert message is not None, "the good message after the rejected one did not arrive"
    assert message.header.seq == 0
    stats = subscriber.stats[TOPIC]
    assert dict(stats.rejected) == {reason: 1}
    assert stats.received == 1
    assert stats.delivered == 1


def test_subscriber_survives_every_rejection(raw_link: Any) -> None:
    publisher, subscriber = raw_link

    for seq, (_, make_parts, _) in enumerate(REJECTIONS):
        publisher.send_multipart(make_parts())
        publisher.send_multipart(good_frame(seq))
    seqs = []
    for _ in REJECTIONS:
        message = subscriber.recv(timeout_s=5.0)
        assert message is not None
        seqs.append(message.header.seq)

    assert seqs == list(range(len(REJECTIONS)))
    expected: dict[str, int] = {}
    for _, _, reason in REJECTIONS:
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(subscriber.stats[TOPIC].rejected) == expected
    assert subscriber.stats[TOPIC].gaps == 0
