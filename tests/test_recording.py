"""Recording to MCAP: exact round trips, Foxglove schemas, splitting, damage, recovery and the recorder node."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory

from pipeline import cli, messages
from pipeline.config import parse_graph
from pipeline.launcher import Launcher
from pipeline.recording import (
    Recorder,
    RecordingError,
    RecordingNotFoundError,
    RecordingReader,
    byte_size,
    inspect,
    record,
    recording_files,
    recover,
)
from pipeline.transport import Publisher, TopicSpec

Sent = tuple[str, bytes, bytes]


def _image(index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    width, height = size
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : (index * 3) % width] = (40, 160, 220)
    cv2.putText(image, str(index), (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return image


def _sample_messages(count: int) -> list[Sent]:
    """Return ``count`` messages per kind, audio captured 0.1 s before the frames sent beside it."""
    sent: list[Sent] = []
    base_ns = time.monotonic_ns()
    for index in range(count):
        capture_ns = base_ns + index * 50_000_000
        wall_ns = time.time_ns() + index * 50_000_000
        samples = np.sin(np.linspace(0, 40, 1600, dtype=np.float32)) * 0.5
        batch = [
            messages.encode_frame(_image(index), topic="camera", source="cam", seq=index, capture_ns=capture_ns, capture_wall_ns=wall_ns),
            messages.encode_frame(
                _image(index), topic="raw", source="raw", seq=index, capture_ns=capture_ns + 1, capture_wall_ns=wall_ns, encoding="bgr8"
            ),
            messages.encode_audio(
                samples, sample_rate=16000, topic="audio", source="mic", seq=index,
                capture_ns=capture_ns - 100_000_000, capture_wall_ns=wall_ns - 100_000_000,
            ),
            messages.encode_audio(
                (samples * 32767).astype(np.int16), sample_rate=16000, topic="audio16", source="mic16", seq=index,
                capture_ns=capture_ns - 50_000_000, capture_wall_ns=wall_ns - 50_000_000,
            ),
            messages.encode_alert(f"Road work ahead, lane {index} ✓", topic="alerts", source="alerts", seq=index,
                                  capture_ns=capture_ns + 2, capture_wall_ns=wall_ns, severity="warning"),
        ]
        summary = json.dumps({"window": index, "text": "a truck passes"}).encode()
        header = messages.Header(
            kind="summary", source="fusion", topic="summaries", session="s", seq=index, capture_ns=capture_ns + 3,
            capture_wall_ns=wall_ns, encoding="json", shape=(len(summary),), size=len(summary),
        )
        batch.append(messages.encode(header, summary))
        sent += [(parts[0].decode(), parts[1], bytes(parts[2])) for parts in batch]
    return sent


def _write(path: Path, sent: list[Sent], **kwargs: Any) -> Recorder:
    recorder = Recorder(path, **kwargs)
    for topic, header_bytes, payload in sent:
        recorder.write(topic, header_bytes, payload)
    recorder.close()
    return recorder


def _capture_ns(header_bytes: bytes) -> int:
    return json.loads(header_bytes)["capture_ns"]


def _mount_tmpfs(directory: Path, options: str) -> None:
    directory.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {directory} ({result.stderr.strip()}); this test needs root and CAP_SYS_ADMIN")


def _unmount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], check=False)


# --- round trip ---------------------------------------------------------------------------


def test_bus_recording_keeps_every_header_byte(tmp_path: Path) -> None:
    specs = {
        name: TopicSpec(name=name, endpoint="tcp://127.0.0.1:0", policy="all")
        for name in ("camera", "raw", "audio", "audio16", "alerts", "summaries")
    }
    publishers = {name: Publisher(spec, source=f"test-{name}") for name, spec in specs.items()}
    path = tmp_path / "bus.mcap"
    recorder = Recorder(path, flush_s=0.2)
    stop = threading.Event()
    connected = threading.Event()
    worker = threading.Thread(
        target=record,
        args=([publisher.spec for publisher in publishers.values()], recorder, stop),
        kwargs={"on_start": lambda _subscriber: connected.set()},
    )
    worker.start()
    try:
        assert connected.wait(5.0)
        for publisher in publishers.values():
            assert publisher.wait_for_subscribers(1, timeout_s=5.0)

        sent: list[Sent] = []
        for topic, header_bytes, payload in _sample_messages(20):
            fields = {**json.loads(header_bytes), **publishers[topic].next_header_fields()}
            header_bytes = messages.Header.model_validate(fields).to_bytes()
            publishers[topic].send_raw(header_bytes, payload)
            sent.append((topic, header_bytes, payload))
            time.sleep(0.002)

        deadline = time.monotonic() + 10.0
        while recorder.messages < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10.0)
        recorder.close()
        for publisher in publishers.values():
            publisher.close()

    with RecordingReader(path) as reader:
        received = list(reader)
    assert len(received) == len(sent) == 120
    assert collections.Counter(received) == collections.Counter(sent)
    for topic in specs:
        assert [item for item in received if item[0] == topic] == [item for item in sent if item[0] == topic]
    captures = [_capture_ns(header) for _, header, _ in received]
    assert captures == sorted(captures)


def test_reader_merges_topics_by_capture_time(tmp_path: Path) -> None:
    sent = _sample_messages(10)
    _write(tmp_path / "order.mcap", sent)

    received = list(RecordingReader(tmp_path / "order.mcap"))

    assert [message.capture_ns for message in received] == sorted(_capture_ns(header) for _, header, _ in sent)
    assert received[0].topic == "audio"  # captured 0.1 s before the first frame, written after it
    assert all(message.decode().header.topic == message.topic for message in received)


def test_reader_selects_topics(tmp_path: Path) -> None:
    _write(tmp_path / "topics.mcap", _sample_messages(5))

    reader = RecordingReader(tmp_path / "topics.mcap", topics=["alerts"])

    assert len(reader) == 5
    assert {message.topic for message in reader} == {"alerts"}
    with pytest.raises(RecordingError, match="nosuch"):
        RecordingReader(tmp_path / "topics.mcap", topics=["nosuch"])


# --- MCAP validity and Foxglove ------------------------------------------------------------


def test_mcap_summary_counts_every_channel(tmp_path: Path) -> None:
    sent = _sample_messages(8)
    _write(tmp_path / "valid.mcap", sent)

    with open(tmp_path / "valid.mcap", "rb") as stream:
        reader = make_reader(stream, validate_crcs=True)
        summary = reader.get_summary()
        assert summary is not None
        messages_read = list(reader.iter_messages())

    assert summary.statistics is not None
    # One header and one payload per bus message, plus the int16 preview of each float32 audio chunk.
    assert summary.statistics.message_count == 2 * len(sent) + 8
    assert len(messages_read) == summary.statistics.message_count
    assert summary.statistics.chunk_count >= 1
    assert {index.compression for index in summary.chunk_indexes} == {"zstd"}
    topics = {channel.topic for channel in summary.channels.values()}
    assert {"/camera", "/camera/header", "/audio", "/audio/preview", "/alerts", "/summaries/header"} <= topics


def test_foxglove_schema_names_and_encodings(tmp_path: Path) -> None:
    _write(tmp_path / "fox.mcap", _sample_messages(3))

    with open(tmp_path / "fox.mcap", "rb") as stream:
        summary = make_reader(stream).get_summary()
    assert summary is not None
    by_topic = {channel.topic: channel for channel in summary.channels.values()}

    def schema_of(topic: str) -> tuple[str, str, str]:
        channel = by_topic[topic]
        schema = summary.schemas[channel.schema_id]
        return schema.name, schema.encoding, channel.message_encoding

    assert schema_of("/camera") == ("foxglove.CompressedImage", "protobuf", "protobuf")
    assert schema_of("/raw") == ("foxglove.RawImage", "protobuf", "protobuf")
    assert schema_of("/audio") == ("foxglove.RawAudio", "protobuf", "protobuf")
    assert schema_of("/audio/preview") == ("foxglove.RawAudio", "protobuf", "protobuf")
    assert schema_of("/alerts") == ("scenewatch.Alert", "jsonschema", "json")
    assert schema_of("/summaries") == ("scenewatch.Summary", "jsonschema", "json")
    assert schema_of("/camera/header") == ("scenewatch.Header", "jsonschema", "json")
    header_schema = json.loads(summary.schemas[by_topic["/camera/header"].schema_id].data)
    assert "capture_ns" in header_schema["properties"]


def test_foxglove_messages_decode_to_images_and_audio(tmp_path: Path) -> None:
    sent = _sample_messages(2)
    _write(tmp_path / "decode.mcap", sent)

    decoded: dict[str, Any] = {}
    with open(tmp_path / "decode.mcap", "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, value in reader.iter_decoded_messages(topics=["/camera", "/raw", "/audio", "/audio/preview", "/audio16"]):
            decoded.setdefault(channel.topic, (message, value))

    camera_message, image = decoded["/camera"]
    first_frame = next(item for item in sent if item[0] == "camera")
    assert image.format == "jpeg"
    assert cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert camera_message.publish_time == json.loads(first_frame[1])["capture_wall_ns"]
    assert image.timestamp.ToNanoseconds() == json.loads(first_frame[1])["capture_wall_ns"]
    raw = decoded["/raw"][1]
    assert (raw.encoding, raw.width, raw.height, raw.step) == ("bgr8", 64, 48, 192)
    assert decoded["/audio"][1].format == "pcm-f32"
    assert decoded["/audio16"][1].format == "pcm-s16"
    preview = decoded["/audio/preview"][1]
    assert (preview.format, preview.sample_rate, preview.number_of_channels) == ("pcm-s16", 16000, 1)
    assert len(preview.data) == 1600 * 2


# --- splitting ----------------------------------------------------------------------------


def test_split_by_size_reads_back_in_order(tmp_path: Path) -> None:
    sent = _sample_messages(30)

    recorder = _write(tmp_path / "split.mcap", sent, split_bytes=100_000, chunk_bytes=32 * 1024)

    assert len(recorder.paths) >= 3
    assert [path.name for path in recorder.paths] == [f"split_{index:03d}.mcap" for index in range(len(recorder.paths))]
    assert not (tmp_path / "split.mcap").exists()
    assert recording_files(tmp_path / "split.mcap") == recorder.paths
    for path in recorder.paths[:-1]:
        assert path.stat().st_size < 100_000 + 32 * 1024  # the last chunk and the summary may pass the bound
    received = list(RecordingReader(tmp_path / "split.mcap"))
    assert collections.Counter(received) == collections.Counter(sent)
    captures = [message.capture_ns for message in received]
    assert captures == sorted(captures)


def test_split_by_duration_starts_new_files(tmp_path: Path) -> None:
    sent = _sample_messages(6)
    recorder = Recorder(tmp_path / "timed.mcap", split_s=0.15)
    for index, (topic, header_bytes, payload) in enumerate(sent):
        recorder.write(topic, header_bytes, payload)
        if index % 12 == 11:
            time.sleep(0.2)
    recorder.close()

    assert len(recorder.paths) == 3
    assert [len(RecordingReader(path)) for path in recorder.paths] == [12, 12, 12]
    assert collections.Counter(RecordingReader(tmp_path / "timed.mcap")) == collections.Counter(sent)


# --- damage and errors --------------------------------------------------------------------


def test_truncated_file_error_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "cut.mcap"
    _write(path, _sample_messages(20), chunk_bytes=32 * 1024)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])

    with pytest.raises(RecordingError) as caught:
        RecordingReader(path)

    message = str(caught.value)
    assert str(path) in message
    assert f"at byte {caught.value.offset} of {len(data) * 2 // 3}" in message
    assert "scenewatch recover" in message
    assert 0 < caught.value.offset < len(data) * 2 // 3


def test_corrupt_chunk_error_names_offset(tmp_path: Path) -> None:
    path = tmp_path / "flipped.mcap"
    _write(path, _sample_messages(10), compression="none")
    with open(path, "rb") as stream:
        chunk_offset = make_reader(stream).get_summary().chunk_indexes[0].chunk_start_offset
    data = bytearray(path.read_bytes())
    data[chunk_offset + 200 : chunk_offset + 216] = b"\xff" * 16
    path.write_bytes(bytes(data))

    with pytest.raises(RecordingError) as caught:
        list(RecordingReader(path))

    assert caught.value.offset == chunk_offset
    assert f"{path} has a corrupt chunk at byte {chunk_offset}" in str(caught.value)


def test_missing_recording_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingNotFoundError, match="no split parts like absent_000.mcap"):
        RecordingReader(tmp_path / "absent.mcap")
    with pytest.raises(FileNotFoundError):
        inspect(tmp_path / "absent.mcap")


def test_not_mcap_file_error(tmp_path: Path) -> None:
    path = tmp_path / "text.mcap"
    path.write_text("not a recording\n" * 10)

    with pytest.raises(RecordingError, match=f"{path} is not an MCAP file"):
        RecordingReader(path)


def test_existing_file_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "kept.mcap"
    path.write_bytes(b"previous run")

    with pytest.raises(RecordingError, match="already exists"):
        Recorder(path)
    assert path.read_bytes() == b"previous run"


def test_unwritable_directory_error_names_path(tmp_path: Path) -> None:
    directory = tmp_path / "readonly"
    if os.geteuid() == 0:  # permission bits do not stop root, a read-only mount does
        _mount_tmpfs(directory, "ro,size=64k")
    else:
        directory.mkdir()
        directory.chmod(0o500)
    try:
        with pytest.raises(RecordingError) as caught:
            Recorder(directory / "rec.mcap")
    finally:
        if os.geteuid() == 0:
            _unmount(directory)
        else:
            directory.chmod(0o700)

    assert f"cannot create recording {directory / 'rec.mcap'}" in str(caught.value)
    assert "Read-only file system" in str(caught.value) or "Permission denied" in str(caught.value)


def test_disk_full_error_keeps_complete_chunks(tmp_path: Path) -> None:
    directory = tmp_path / "small"
    _mount_tmpfs(directory, "size=1m")
    path = directory / "full.mcap"
    try:
        recorder = Recorder(path, chunk_bytes=64 * 1024, compression="none")
        rng = np.random.default_rng(0)
        with pytest.raises(RecordingError) as caught:
            for index in range(1000):
                noise = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)  # incompressible
                parts = messages.encode_frame(noise, topic="raw", source="cam", seq=index, encoding="bgr8")
                recorder.write("raw", parts[1], bytes(parts[2]))
        with pytest.raises(RecordingError):
            recorder.write("raw", parts[1], bytes(parts[2]))
        recorder.close()

        assert str(path) in str(caught.value)
        assert "No space left on device" in str(caught.value)
        report = recover(path, tmp_path / "fixed.mcap")
    finally:
        _unmount(directory)

    assert report.kept > 0
    assert report.kept < recorder.messages
    received = list(RecordingReader(tmp_path / "fixed.mcap"))
    assert len(received) == report.kept
    assert [json.loads(header)["seq"] for _, header, _ in received] == list(range(report.kept))


# --- recover ------------------------------------------------------------------------------


def test_recover_keeps_flushed_chunks_of_open_file(tmp_path: Path) -> None:
    sent = _sample_messages(5)  # 30 messages
    path = tmp_path / "open.mcap"
    recorder = Recorder(path, flush_s=60.0)
    for number, (topic, header_bytes, payload) in enumerate(sent, start=1):
        recorder.write(topic, header_bytes, payload)
        if number in (10, 20):
            recorder.flush()
    shutil.copy(path, tmp_path / "killed.mcap")  # the file as a SIGKILL would leave it
    recorder.close()

    report = recover(tmp_path / "killed.mcap", tmp_path / "fixed.mcap")

    assert report.kept == 20
    assert report.stopped_at is not None
    assert report.skipped_chunks == 0
    received = list(RecordingReader(tmp_path / "fixed.mcap"))
    assert collections.Counter(received) == collections.Counter(sent[:20])


def test_recover_truncated_mid_chunk(tmp_path: Path) -> None:
    sent = _sample_messages(5)
    path = tmp_path / "mid.mcap"
    recorder = Recorder(path, flush_s=60.0)
    for number, (topic, header_bytes, payload) in enumerate(sent, start=1):
        recorder.write(topic, header_bytes, payload)
        if number in (12, 24):
            recorder.flush()
    recorder.close()
    with open(path, "rb") as stream:
        second_chunk = sorted(index.chunk_start_offset for index in make_reader(stream).get_summary().chunk_indexes)[1]
    data = path.read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[: second_chunk + 500])

    report = recover(tmp_path / "cut.mcap", tmp_path / "fixed.mcap")

    assert report.kept == 12
    assert report.stopped_at == second_chunk
    assert report.lost_bytes == 500
    assert len(list(RecordingReader(tmp_path / "fixed.mcap"))) == 12


def test_recover_skips_corrupt_chunk_and_continues(tmp_path: Path) -> None:
    sent = _sample_messages(5)
    path = tmp_path / "bad.mcap"
    recorder = Recorder(path, flush_s=60.0, compression="none")
    for number, (topic, header_bytes, payload) in enumerate(sent, start=1):
        recorder.write(topic, header_bytes, payload)
        if number in (6, 18):
            recorder.flush()
    recorder.close()
    with open(path, "rb") as stream:
        chunks = sorted(index.chunk_start_offset for index in make_reader(stream).get_summary().chunk_indexes)
    data = bytearray(path.read_bytes())
    data[chunks[1] + 300 : chunks[1] + 310] = b"\x00" * 10
    path.write_bytes(bytes(data))

    report = recover(path, tmp_path / "fixed.mcap")

    assert report.skipped_chunks == 1
    assert report.kept == 6 + 12
    assert report.stopped_at is None


def test_recover_rejects_same_output(tmp_path: Path) -> None:
    path = tmp_path / "same.mcap"
    _write(path, _sample_messages(1))

    with pytest.raises(RecordingError, match="other than"):
        recover(path, path)


# --- inspect ------------------------------------------------------------------------------


def test_inspect_counts_rates_and_gaps(tmp_path: Path) -> None:
    sent = [item for item in _sample_messages(21) if item[0] in ("camera", "alerts")]
    dropped = {3, 4, 10}
    kept = [item for item in sent if not (item[0] == "camera" and json.loads(item[1])["seq"] in dropped)]
    _write(tmp_path / "gaps.mcap", kept)

    info = inspect(tmp_path / "gaps.mcap")

    camera = info.topics["camera"]
    assert camera.count == 18
    assert camera.gaps == 3
    assert camera.rate_hz == pytest.approx(17 / 1.0, rel=1e-3)  # frames 50 ms apart over seq 0..20
    assert info.topics["alerts"].gaps == 0
    assert camera.encodings == {"jpeg"}
    assert info.duration_s == pytest.approx(1.0, abs=0.01)
    assert info.count == 18 + 21


# --- CLI ----------------------------------------------------------------------------------


def test_byte_size_parses_suffixes() -> None:
    assert byte_size("512") == 512
    assert byte_size("64k") == 64 * 1024
    assert byte_size("1.5M") == 1536 * 1024
    assert byte_size("2GiB") == 2 * 1024**3


def test_cli_record_inspect_recover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "CLI_MODULES", ["pipeline.recording"])
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the table at 80 columns without a terminal
    spec = TopicSpec(name="alerts", endpoint=f"ipc://{tmp_path}/alerts", policy="all")
    config = tmp_path / "graph.yaml"
    config.write_text(
        json.dumps(
            {
                "name": "clitest",
                "topics": {"alerts": {"endpoint": spec.endpoint, "policy": "all"}},
                "nodes": [{"id": "alerts", "node": "alerts", "outputs": {"alerts": "alerts"}}],
            }
        )
    )
    publisher = Publisher(spec, source="cli-test")
    stop = threading.Event()

    def publish() -> None:
        publisher.wait_for_subscribers(1, timeout_s=5.0)
        while not stop.wait(0.05):
            publisher.send_alert("Bridge closed")

    sender = threading.Thread(target=publish)
    sender.start()
    output = tmp_path / "cli.mcap"
    try:
        status = cli.main(["record", str(output), "--config", str(config), "--duration", "1.5", "--flush-s", "0.2"])
    finally:
        stop.set()
        sender.join(5.0)
        publisher.close()
    assert status == 0
    assert "recorded" in capsys.readouterr().out

    assert cli.main(["inspect", str(output)]) == 0
    table = capsys.readouterr().out
    assert "alerts" in table
    assert "rate (Hz)" in table

    (tmp_path / "cut.mcap").write_bytes(output.read_bytes()[:-200])
    assert cli.main(["inspect", str(tmp_path / "cut.mcap")]) == 1
    assert "scenewatch recover" in capsys.readouterr().err
    assert cli.main(["recover", str(tmp_path / "cut.mcap"), str(tmp_path / "fixed.mcap")]) == 0
    assert "kept" in capsys.readouterr().out


def test_cli_rejects_invalid_flag_values(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "CLI_MODULES", ["pipeline.recording"])

    for flags in (["--split-bytes", "12x"], ["--flush-s", "0"], ["--duration", "-1"], ["--topics", ","]):
        with pytest.raises(SystemExit) as caught:
            cli.main(["record", "out.mcap", *flags])
        assert caught.value.code == 2
        assert f"argument {flags[0]}" in capsys.readouterr().err


# --- recorder node ------------------------------------------------------------------------


def _node_graph(tmp_path: Path, output: Path, flush_s: float) -> Any:
    return parse_graph(
        {
            "name": "recorder-test",
            "topics": {"camera": {"endpoint": f"ipc://{tmp_path}/camera", "policy": "latest"}},
            "nodes": [
                {
                    "id": "camera",
                    "node": "camera",
                    "outputs": {"frames": "camera"},
                    "params": {"source": "testpattern", "fps": 20, "pattern_size": [320, 240], "wait_for_subscribers": 1},
                },
                {
                    "id": "recorder",
                    "node": "recorder",
                    "params": {"path": str(output), "flush_s": flush_s},
                    "restart": {"policy": "never"},
                },
            ],
            "stop_timeout_s": 3.0,
        }
    )


def _run_launcher(launcher: Launcher) -> threading.Thread:
    thread = threading.Thread(target=launcher.run, kwargs={"install_signal_handlers": False})
    thread.start()
    return thread


def _wait_for_file(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.stat().st_size > 10_000):
        assert time.monotonic() < deadline, f"{path} was not written within {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_recorder_node_sigterm_writes_valid_file(tmp_path: Path) -> None:
    output = tmp_path / "node.mcap"
    launcher = Launcher(_node_graph(tmp_path, output, flush_s=0.5), write_state=False)
    thread = _run_launcher(launcher)
    try:
        _wait_for_file(output, 30.0)
        time.sleep(2.0)
    finally:
        launcher.request_stop()
        thread.join(15.0)

    info = inspect(output)
    camera = info.topics["camera"]
    assert camera.count >= 30
    assert camera.rate_hz == pytest.approx(20.0, rel=0.25)
    assert len(camera.publishers) == 1
    frames = [message.decode() for message in RecordingReader(output)]
    assert frames[0].image().shape == (240, 320, 3)


@pytest.mark.slow
def test_recorder_node_sigkill_loses_at_most_flush_interval(tmp_path: Path) -> None:
    flush_s = 0.5
    output = tmp_path / "killed.mcap"
    launcher = Launcher(_node_graph(tmp_path, output, flush_s=flush_s), write_state=False)
    thread = _run_launcher(launcher)
    try:
        _wait_for_file(output, 30.0)
        time.sleep(2.0)
        pid = launcher.pids()["recorder"]
        assert pid is not None
        kill_wall_ns = time.time_ns()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
    finally:
        launcher.request_stop()
        thread.join(15.0)

    with pytest.raises(RecordingError, match="scenewatch recover"):
        RecordingReader(output)
    report = recover(output, tmp_path / "fixed.mcap")

    assert report.kept >= 30
    assert report.last_capture_wall_ns is not None
    lost_s = (kill_wall_ns - report.last_capture_wall_ns) / 1e9
    # flush_s, plus the recorder's 0.1 s idle poll and one 50 ms frame period, plus scheduling slack.
    assert lost_s < flush_s + 0.4
    frames = [message.decode() for message in RecordingReader(tmp_path / "fixed.mcap")]
    seqs = [frame.header.seq for frame in frames]
    assert seqs == sorted(seqs)
    assert len(frames) == report.kept

