"""Transport benchmark: our Publisher/Subscriber against plain pyzmq PUB/SUB, same payloads, same run.

Payloads: 640x480x3 raw frames (``bgr8``), JPEG frames (a real dashcam still
when the shared data folder has one, else a synthetic frame encoded at
quality 85) and 100 ms audio chunks (16 kHz mono float32). Endpoints:
``ipc://`` and ``tcp://127.0.0.1``. The publisher and the subscriber run in
two spawned worker processes that live for the whole benchmark and take one
task after another over a pipe, so process start-up is not timed.

"ours" is the real path: a :class:`~pipeline.transport.Publisher` that builds
and validates a header per message (``send_frame``, ``send_audio``, or
``send_parts`` with a fresh JPEG header) and a
:class:`~pipeline.transport.Subscriber` with policy ``all`` that decodes
every header, checks sequence numbers and hands messages to the consumer
thread. "plain" sends ``[topic, header, payload]`` with ``copy=False`` on a
PUB socket, with one precomputed header of the same size, and receives with
``recv_multipart(copy=False)`` and nothing else. Both sides use a queue
larger than the message count, so nothing is dropped; a drop is reported.

Throughput is measured at the subscriber: messages after the first divided by
the time from the first to the last arrival.

Example::

    python -m bench transport --repeat 5
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from bench.common import SHARED_DATA, BenchOptions, Row

__all__ = ["NAME", "run", "PAYLOADS", "SCHEMES"]

NAME = "transport"

log = logging.getLogger(__name__)

PAYLOADS = ("raw", "jpeg", "audio")
SCHEMES = ("ipc", "tcp")
PAYLOAD_LABELS = {"raw": "raw frame 640x480x3", "jpeg": "JPEG frame", "audio": "audio chunk 100 ms"}

FULL_COUNTS = {"raw": 1500, "jpeg": 6000, "audio": 20000}
QUICK_COUNTS = {"raw": 150, "jpeg": 500, "audio": 2000}

SUBSCRIBE_SETTLE_S = 0.3
"""Pause between connecting and sending, in seconds, so that a PUB socket's subscription has arrived."""

IDLE_TIMEOUT_S = 5.0
"""The subscriber stops waiting when nothing arrives for this long, in seconds."""


# ---------------------------------------------------------------- payloads


def _dashcam_image() -> tuple[np.ndarray, bytes | None]:
    """Return a 640x480 BGR frame and the bytes of a real dashcam JPEG, or None when none is present."""
    import cv2

    stills = sorted((SHARED_DATA / "images").glob("*.jpg")) if (SHARED_DATA / "images").is_dir() else []
    if stills:
        data = stills[0].read_bytes()
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        return cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA), data
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None]
    image = np.clip(gradient + rng.normal(0, 20, (480, 640, 3)), 0, 255).astype(np.uint8)
    return image, None


def _payloads() -> dict[str, Any]:
    import cv2

    image, jpeg = _dashcam_image()
    if jpeg is None:
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        jpeg = buffer.tobytes()
    height, width = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR).shape[:2]
    audio = (0.1 * np.sin(np.arange(1600, dtype=np.float32) * 0.3)).astype(np.float32)[:, None]
    return {"raw": image, "jpeg": (jpeg, width, height), "audio": audio}


def payload_bytes(payloads: dict[str, Any], kind: str) -> int:
    """Return the payload size of one message of ``kind``, in bytes."""
    if kind == "jpeg":
        return len(payloads["jpeg"][0])
    return int(payloads[kind].nbytes)


# ---------------------------------------------------------------- ours


def _spec(task: dict[str, Any], endpoint: str) -> Any:
    from pipeline.transport import TopicSpec

    return TopicSpec(name="bench", endpoint=endpoint, policy="all", queue=task["count"] + 100)


def _jpeg_parts(publisher: Any, jpeg: bytes, width: int, height: int) -> list[Any]:
    """Build a JPEG frame message the way ``messages.encode_frame`` does, without encoding the image again."""
    from pipeline import messages
    from pipeline.messages import FrameInfo, Header

    header = Header(
        kind="frame",
        capture_ns=time.monotonic_ns(),
        capture_wall_ns=time.time_ns(),
        encoding="jpeg",
        shape=(height, width, 3),
        size=len(jpeg),
        frame=FrameInfo(width=width, height=height, channels=3, channel_order="bgr", jpeg_quality=85),
        **publisher.next_header_fields(),
    )
    return messages.encode(header, jpeg)


def _send_ours(publisher: Any, kind: str, payloads: dict[str, Any], count: int) -> None:
    if kind == "raw":
        image = payloads["raw"]
        for _ in range(count):
            publisher.send_frame(image, encoding="bgr8")
    elif kind == "jpeg":
        jpeg, width, height = payloads["jpeg"]
        for _ in range(count):
            publisher.send_parts(_jpeg_parts(publisher, jpeg, width, height))
    else:
        samples = payloads["audio"]
        for _ in range(count):
            publisher.send_audio(samples, 16_000)


def _plain_header(kind: str, payloads: dict[str, Any]) -> bytes:
    """Return one header of our wire format for ``kind``, so plain messages have the same size."""
    from pipeline import messages

    fields = {"topic": "bench", "source": "bench", "seq": 0, "session": messages.new_session_id()}
    if kind == "raw":
        return messages.encode_frame(payloads["raw"], encoding="bgr8", **fields)[1]
    if kind == "jpeg":
        jpeg, width, height = payloads["jpeg"]
        parts = messages.encode_frame(np.zeros((height, width, 3), np.uint8), encoding="jpeg", **fields)
        return parts[1]
    return messages.encode_audio(payloads["audio"], sample_rate=16_000, **fields)[1]


# ---------------------------------------------------------------- workers


def publisher_worker(conn: Connection) -> None:
    """Spawned publisher: bind, send and close on the main process's commands until ``stop``."""
    import zmq

    from pipeline.transport import Publisher, get_context

    payloads = _payloads()
    socket: Any = None
    publisher: Any = None
    while True:
        command, task = conn.recv()
        if command == "stop":
            return
        if command == "bind":
            if task["impl"] == "ours":
                publisher = Publisher(_spec(task, task["endpoint"]), source="bench")
                conn.send(publisher.spec.endpoint)
            else:
                socket = get_context().socket(zmq.PUB)
                socket.setsockopt(zmq.SNDHWM, task["count"] + 100)
                socket.setsockopt(zmq.LINGER, 2000)
                socket.bind(task["endpoint"])
                conn.send(socket.getsockopt_string(zmq.LAST_ENDPOINT))
        elif command == "send":
            time.sleep(SUBSCRIBE_SETTLE_S)
            began = time.perf_counter()
            if task["impl"] == "ours":
                publisher.wait_for_subscribers(1, timeout_s=5.0)
                began = time.perf_counter()
                _send_ours(publisher, task["payload"], payloads, task["count"])
            else:
                header = _plain_header(task["payload"], payloads)
                kind = task["payload"]
                payload = payloads["jpeg"][0] if kind == "jpeg" else payloads[kind]
                for _ in range(task["count"]):
                    socket.send_multipart([b"bench", header, payload], copy=False)
            conn.send({"send_s": time.perf_counter() - began})
        elif command == "close":
            if publisher is not None:
                publisher.close()
                publisher = None
            if socket is not None:
                socket.close()
                socket = None
            conn.send("closed")


def _receive_ours(endpoint: str, task: dict[str, Any], conn: Connection) -> dict[str, Any]:
    from pipeline.transport import Subscriber

    subscriber = Subscriber([_spec(task, endpoint)])
    conn.send("ready")
    arrivals = []
    size = 0
    try:
        while len(arrivals) < task["count"]:
            message = subscriber.recv(timeout_s=IDLE_TIMEOUT_S)
            if message is None:
                break
            arrivals.append(time.perf_counter())
            size += len(message.payload)
        stats = subscriber.stats["bench"]
        lost = stats.gaps + sum(stats.rejected.values())
    finally:
        subscriber.close()
    return {"arrivals": (arrivals[0], arrivals[-1]) if arrivals else None, "received": len(arrivals), "bytes": size, "lost": lost}


def _receive_plain(endpoint: str, task: dict[str, Any], conn: Connection) -> dict[str, Any]:
    import zmq

    from pipeline.transport import get_context

    socket = get_context().socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, task["count"] + 100)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"bench")
    socket.connect(endpoint)
    conn.send("ready")
    first = last = 0.0
    received = 0
    size = 0
    try:
        while received < task["count"]:
            if not socket.poll(int(IDLE_TIMEOUT_S * 1000)):
                break
            parts = socket.recv_multipart(copy=False)
            last = time.perf_counter()
            if received == 0:
                first = last
            received += 1
            size += len(parts[2].buffer)
    finally:
        socket.close(0)
    return {"arrivals": (first, last) if received else None, "received": received, "bytes": size, "lost": task["count"] - received}


def subscriber_worker(conn: Connection) -> None:
    """Spawned subscriber: connect, receive ``count`` messages and report arrival times until ``stop``."""
    while True:
        command, task = conn.recv()
        if command == "stop":
            return
        receive = _receive_ours if task["impl"] == "ours" else _receive_plain
        conn.send(receive(task["endpoint"], task, conn))


# ---------------------------------------------------------------- driver


class _Workers:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.pub_conn, pub_child = context.Pipe()
        self.sub_conn, sub_child = context.Pipe()
        self.pub = context.Process(target=publisher_worker, args=(pub_child,), name="bench-publisher", daemon=True)
        self.sub = context.Process(target=subscriber_worker, args=(sub_child,), name="bench-subscriber", daemon=True)
        self.pub.start()
        self.sub.start()

    def _reply(self, conn: Connection, what: str, timeout_s: float = 60.0) -> Any:
        if not conn.poll(timeout_s):
            raise TimeoutError(f"transport benchmark: the {what} worker did not answer within {timeout_s:.0f} s")
        return conn.recv()

    def measure(self, task: dict[str, Any]) -> dict[str, Any]:
        self.pub_conn.send(("bind", task))
        endpoint = self._reply(self.pub_conn, "publisher")
        self.sub_conn.send(("receive", {**task, "endpoint": endpoint}))
        self._reply(self.sub_conn, "subscriber")
        self.pub_conn.send(("send", task))
        result = self._reply(self.sub_conn, "subscriber")
        result.update(self._reply(self.pub_conn, "publisher"))
        self.pub_conn.send(("close", task))
        self._reply(self.pub_conn, "publisher")
        return result

    def close(self) -> None:
        for conn in (self.pub_conn, self.sub_conn):
            try:
                conn.send(("stop", None))
            except (BrokenPipeError, OSError):
                pass
        for process in (self.pub, self.sub):
            process.join(5.0)
            if process.is_alive():
                process.kill()


def _endpoint(scheme: str, folder: str, index: int) -> str:
    if scheme == "ipc":
        return f"ipc://{folder}/t{index}"
    return "tcp://127.0.0.1:0"


def run(options: BenchOptions) -> list[Row]:
    """Measure messages/s and GB/s per payload, endpoint and implementation, and the ratio ours/plain."""
    counts = QUICK_COUNTS if options.quick else FULL_COUNTS
    repeats = 1 if options.quick else options.repeat
    sizes = {kind: payload_bytes(_payloads(), kind) for kind in PAYLOADS}
    rates: dict[tuple[str, str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    lost: dict[tuple[str, str, str], int] = {}
    folder = tempfile.mkdtemp(prefix="swb-")
    workers = _Workers()
    index = 0
    try:
        for repeat in range(repeats):
            for kind in PAYLOADS:
                for scheme in SCHEMES:
                    # Alternate which implementation goes first, so warm caches favour neither.
                    order = ("ours", "plain") if repeat % 2 == 0 else ("plain", "ours")
                    measured = {}
                    for impl in order:
                        index += 1
                        task = {"impl": impl, "payload": kind, "count": counts[kind], "endpoint": _endpoint(scheme, folder, index)}
                        result = workers.measure(task)
                        key = (kind, scheme, impl)
                        lost[key] = lost.get(key, 0) + result["lost"]
                        if result["arrivals"] is None or result["received"] < 2:
                            raise RuntimeError(f"transport benchmark: {impl} {kind} over {scheme} received {result['received']} of {counts[kind]} messages")
                        first, last = result["arrivals"]
                        rate = (result["received"] - 1) / (last - first)
                        rates.setdefault(key, []).append(rate)
                        measured[impl] = rate
                    ratios.setdefault((kind, scheme), []).append(measured["ours"] / measured["plain"])
    finally:
        workers.close()
        shutil.rmtree(folder, ignore_errors=True)

    rows: list[Row] = []
    for kind in PAYLOADS:
        for scheme in SCHEMES:
            for impl in ("ours", "plain"):
                key = (kind, scheme, impl)
                case = f"{PAYLOAD_LABELS[kind]} ({sizes[kind] / 1000:.1f} kB), {scheme}, {impl}"
                note = f"{lost[key]} lost" if lost[key] else ""
                rows.append(Row.from_samples(NAME, case, "throughput", rates[key], "msg/s", note))
                rows.append(Row.from_samples(NAME, case, "bandwidth", [rate * sizes[kind] / 1e9 for rate in rates[key]], "GB/s", note))
            rows.append(Row.from_samples(NAME, f"{PAYLOAD_LABELS[kind]}, {scheme}", "ratio ours/plain", ratios[(kind, scheme)], "x"))
    return rows
