"""Publisher and subscriber over ZeroMQ, with per-topic delivery policies.

Every topic has one publishing node that binds the topic's endpoint with an
XPUB socket; subscribers connect to it. XPUB instead of PUB lets the
publisher see subscriptions, which gives two things:

- ``durability: transient_local`` topics (alerts by default) keep their last
  ``history`` messages and send them again whenever a subscriber joins, so a
  subscriber that connects late still gets every message. Subscribers drop
  the repeats by sequence number, so each message is delivered once.
- ``Publisher.wait_for_subscribers`` for replays and tests.

Delivery policies, set per topic on both sides:

- ``latest``: the subscriber's receiver thread drains the socket all the time
  and keeps only the newest message, so a slow consumer never reads a stale
  frame. Replaced messages are counted in ``stale_dropped``. Send and receive
  high-water marks are small so that no queue of old frames builds up.
- ``all``: messages queue up to ``queue`` messages on each side; beyond that
  the publisher's socket drops them, and the subscriber counts the sequence
  gaps.

Example::

    >>> from pipeline.transport import TopicSpec, Publisher, Subscriber
    >>> spec = TopicSpec(name="alerts", endpoint="tcp://127.0.0.1:0", policy="all")
    >>> pub = Publisher(spec, source="doc")                    # binds, resolves port 0
    >>> sub = Subscriber([pub.spec])
    >>> pub.wait_for_subscribers(1, timeout_s=2.0)
    True
    >>> header = pub.send_alert("Road work ahead")
    >>> sub.recv(timeout_s=2.0).text
    'Road work ahead'
    >>> sub.close(); pub.close()
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline import messages
from pipeline.messages import Header, Message, MessageRejected

__all__ = [
    "TopicSpec",
    "Publisher",
    "Subscriber",
    "TopicStats",
    "get_context",
    "validate_endpoint",
    "RateLimitedLog",
]

log = logging.getLogger(__name__)

LATEST_HWM = 2
"""High-water mark, in messages, of each side of a ``latest`` topic."""

LINGER_MS = {"latest": 0, "all": 500}
"""How long close() may wait to flush unsent messages, in milliseconds."""


class TopicSpec(BaseModel):
    """A topic: where it is bound and how it is delivered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_./-]+$")
    endpoint: str
    """ZeroMQ endpoint the publisher binds, ``tcp://HOST:PORT`` or ``ipc://PATH``."""
    policy: Literal["latest", "all"] = "all"
    queue: int = Field(default=1000, gt=0)
    """For ``all``: messages buffered on each side before the publisher drops."""
    durability: Literal["volatile", "transient_local"] = "volatile"
    history: int = Field(default=256, ge=0)
    """For ``transient_local``: messages kept and sent again to a joining subscriber."""
    max_payload_bytes: int = Field(default=messages.DEFAULT_MAX_PAYLOAD_BYTES, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        validate_endpoint(value)
        return value


def validate_endpoint(endpoint: str) -> None:
    """Check that an endpoint is ``tcp://HOST:PORT`` or ``ipc://PATH``.

    Raises:
        ValueError: With the endpoint and the expected form.
    """
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"endpoint {endpoint!r} is not tcp://HOST:PORT (for example tcp://127.0.0.1:5550)")
        if host in ("*", "0.0.0.0", "[::]"):
            log.warning("endpoint %s binds on every interface; use 127.0.0.1 unless remote hosts subscribe", endpoint)
        return
    if endpoint.startswith("ipc://"):
        path = endpoint[6:]
        if not path:
            raise ValueError(f"endpoint {endpoint!r} has no path; use ipc:///tmp/scenewatch/NAME")
        if len(path.encode()) > 107:
            raise ValueError(f"ipc path of {endpoint!r} is longer than the 107 bytes a Unix socket allows")
        return
    raise ValueError(f"endpoint {endpoint!r} must start with tcp:// or ipc://")


_context_lock = threading.Lock()
_context: zmq.Context | None = None
_context_pid: int | None = None


def get_context() -> zmq.Context:
    """Return this process's ZeroMQ context, making a new one after a fork."""
    global _context, _context_pid
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            _context = zmq.Context()
            _context_pid = os.getpid()
        return _context


class RateLimitedLog:
    """Log a repeated event at most once per ``interval_s``, with the count since the last line."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def warning(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] += 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            self._logger.warning(message + " (%d more since last report)", *args, suppressed)
        else:
            self._logger.warning(message, *args)


class Publisher:
    """Bind one topic's endpoint and send messages with a per-instance sequence.

    Args:
        spec: The topic. A ``tcp://HOST:0`` endpoint binds a free port;
            ``spec`` is then replaced by one with the real port.
        source: Node id written in every header.
        context: ZeroMQ context; defaults to this process's.

    Raises:
        zmq.ZMQError: The endpoint cannot be bound (address in use, bad path).
    """

    def __init__(self, spec: TopicSpec, source: str, context: zmq.Context | None = None) -> None:
        self.source = source
        self.session = messages.new_session_id()
        self.seq = 0
        self.sent = 0
        self.source_drops = 0
        self.subscribers = 0
        self._history: collections.deque[tuple[bytes, Any]] = collections.deque(
            maxlen=spec.history if spec.durability == "transient_local" else 0
        )

        self._socket = (context or get_context()).socket(zmq.XPUB)
        self._socket.setsockopt(zmq.LINGER, LINGER_MS[spec.policy])
        self._socket.setsockopt(zmq.SNDHWM, LATEST_HWM if spec.policy == "latest" else spec.queue)
        self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)
        if spec.endpoint.startswith("ipc://"):
            os.makedirs(os.path.dirname(spec.endpoint[6:]) or ".", exist_ok=True)
        try:
            self._socket.bind(spec.endpoint)
        except zmq.ZMQError as error:
            self._socket.close(0)
            raise zmq.ZMQError(
                error.errno, f"cannot bind topic {spec.name!r} on {spec.endpoint}: {error.strerror}"
            ) from None
        bound = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        if spec.endpoint.startswith("tcp://") and spec.endpoint.endswith(":0"):
            spec = spec.model_copy(update={"endpoint": bound})
        self.spec = spec
        self._topic = spec.name.encode()
        log.info("publisher %s: topic %r bound on %s (policy %s)", source, spec.name, spec.endpoint, spec.policy)

    def _service(self) -> None:
        """Read subscription messages; replay history to a subscriber that joins."""
        while self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = self._socket.recv()
            if not event:
                continue
            if event[0] == 1:
                self.subscribers += 1
                if self._history:
                    log.debug("topic %r: subscriber joined, replaying %d messages", self.spec.name, len(self._history))
                    for header_bytes, payload in self._history:
                        self._socket.send_multipart([self._topic, header_bytes, payload], copy=False)
            elif event[0] == 0:
                self.subscribers = max(0, self.subscribers - 1)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve subscription events for up to ``timeout_s`` seconds; call it from idle loops."""
        if self._socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            self._service()

    def wait_for_subscribers(self, count: int = 1, timeout_s: float = 5.0) -> bool:
        """Block until ``count`` subscribers are connected; return False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.subscribers < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(min(remaining, 0.05))
        return True

    def next_header_fields(self) -> dict[str, Any]:
        """Return the fields this publisher stamps on the next message."""
        return {
            "topic": self.spec.name,
            "source": self.source,
            "session": self.session,
            "seq": self.seq,
            "source_drops": self.source_drops,
        }

    def send_parts(self, parts: list[Any]) -> None:
        """Send already encoded parts (topic, header, payload) and advance the sequence."""
        self._service()
        if self._history.maxlen:
            payload = parts[2]
            self._history.append((parts[1], payload))
        self._socket.send_multipart(parts, copy=False)
        self.seq += 1
        self.sent += 1

    def send_raw(self, header_bytes: bytes, payload: Any) -> None:
        """Send a header as it is (replay keeps recorded headers unchanged)."""
        self.send_parts([self._topic, header_bytes, payload])

    def send_frame(self, image: np.ndarray, **kwargs: Any) -> None:
        """Encode and send a frame; keyword arguments go to :func:`messages.encode_frame`."""
        self.send_parts(messages.encode_frame(image, **self.next_header_fields(), **kwargs))

    def send_audio(self, samples: np.ndarray, sample_rate: int, **kwargs: Any) -> None:
        """Encode and send an audio chunk; see :func:`messages.encode_audio`."""
        self.send_parts(
            messages.encode_audio(samples, sample_rate=sample_rate, **self.next_header_fields(), **kwargs)
        )

    def send_alert(self, text: str, **kwargs: Any) -> Header:
        """Encode and send an alert; return its header. See :func:`messages.encode_alert`."""
        fields = self.next_header_fields()
        fields.pop("source_drops")
        parts = messages.encode_alert(text, **fields, **kwargs)
        self.send_parts(parts)
        return messages.decode_header(parts[1])

    def send_json(self, kind: str, body: bytes, capture_ns: int, capture_wall_ns: int) -> None:
        """Send a JSON document (summaries) as the payload."""
        header = Header(
            kind=kind,  # type: ignore[arg-type]
            capture_ns=capture_ns,
            capture_wall_ns=capture_wall_ns,
            encoding="json",
            shape=(len(body),),
            size=len(body),
            **self.next_header_fields(),
        )
        self.send_parts(messages.encode(header, body))

    def close(self) -> None:
        self._socket.close()
        log.info("publisher %s: topic %r closed after %d messages", self.source, self.spec.name, self.sent)


@dataclass
class TopicStats:
    """Counters of one subscribed topic; plain attributes that a metrics exporter can read."""

    received: int = 0
    delivered: int = 0
    bytes: int = 0
    gaps: int = 0
    """Sequence numbers never received (lost at the sender or on the way)."""
    stale_dropped: int = 0
    """Messages replaced by a newer one before the consumer read them (``latest`` only)."""
    duplicates: int = 0
    """Repeats of delivered messages (history replays), dropped."""
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    source_drops: int = 0
    """Latest ``source_drops`` reported by the publishers, summed."""
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def dropped(self) -> int:
        """Every message that did not reach the consumer: gaps plus stale replacements."""
        return self.gaps + self.stale_dropped

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "delivered": self.delivered,
            "bytes": self.bytes,
            "gaps": self.gaps,
            "stale_dropped": self.stale_dropped,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "source_drops": self.source_drops,
        }


class _TopicState:
    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec
        self.stats = TopicStats()
        self.last_seq: dict[tuple[str, str], int] = {}
        self.source_drops: dict[tuple[str, str], int] = {}
        self.pending: Message | None = None  # latest policy: newest undelivered message


class Subscriber:
    """Receive several topics on a background thread and hand messages out in arrival order.

    Args:
        specs: Topics to subscribe, each with its endpoint and policy.
        connect: Extra endpoints per topic name (several publishers of one topic).
        context: ZeroMQ context; defaults to this process's.

    ``recv`` returns decoded messages; rejected ones are counted in
    ``stats[topic].rejected`` by reason and logged at a limited rate.
    """

    def __init__(
        self,
        specs: Iterable[TopicSpec],
        connect: dict[str, list[str]] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self._topics = {spec.name: _TopicState(spec) for spec in specs}
        if not self._topics:
            raise ValueError("Subscriber needs at least one topic")
        self._endpoints = {name: [state.spec.endpoint, *(connect or {}).get(name, [])] for name, state in self._topics.items()}
        self._context = context or get_context()
        self._ready: collections.deque[Message | str] = collections.deque()
        self._queued_all = 0
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._drop_log = RateLimitedLog(log)
        self._thread = threading.Thread(target=self._run, name="scenewatch-subscriber", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    @property
    def stats(self) -> dict[str, TopicStats]:
        return {name: state.stats for name, state in self._topics.items()}

    def _run(self) -> None:
        sockets: dict[zmq.Socket, _TopicState] = {}
        for name, state in self._topics.items():
            socket = self._context.socket(zmq.SUB)
            socket.setsockopt(zmq.LINGER, 0)
            hwm = LATEST_HWM if state.spec.policy == "latest" else state.spec.queue
            socket.setsockopt(zmq.RCVHWM, hwm)
            socket.setsockopt(zmq.SUBSCRIBE, name.encode())
            for endpoint in self._endpoints[name]:
                socket.connect(endpoint)
            sockets[socket] = state
        self._started.set()

        try:
            poller = zmq.Poller()
            registered: set[zmq.Socket] = set()
            while not self._stop.is_set():
                # An `all` topic whose local queue is full stays unpolled, so
                # its messages wait in ZeroMQ's queue under the high-water mark.
                for socket, state in sockets.items():
                    wanted = state.spec.policy == "latest" or self._queued_all < state.spec.queue
                    if wanted and socket not in registered:
                        poller.register(socket, zmq.POLLIN)
                        registered.add(socket)
                    elif not wanted and socket in registered:
                        poller.unregister(socket)
                        registered.discard(socket)
                for socket, _ in poller.poll(50):
                    self._drain(socket, sockets[socket])
        finally:
            for socket in sockets:
                socket.close(0)

    def _drain(self, socket: zmq.Socket, state: _TopicState) -> None:
        for _ in range(256):
            try:
                parts = socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._accept(parts, state)
            if state.spec.policy == "all" and self._queued_all >= state.spec.queue:
                return

    def _accept(self, parts: list[Any], state: _TopicState) -> None:
        stats = state.stats
        try:
            message = messages.decode(parts, state.spec.max_payload_bytes)
        except MessageRejected as error:
            stats.rejected[error.reason] += 1
            self._drop_log.warning(
                f"reject:{state.spec.name}:{error.reason}",
                "topic %r: dropped a message (%s)",
                state.spec.name,
                error,
            )
            return

        header = message.header
        key = (header.source, header.session)
        last = state.last_seq.get(key)
        if last is not None and header.seq <= last:
            stats.duplicates += 1
            return
        if last is not None and header.seq > last + 1:
            lost = header.seq - last - 1
            stats.gaps += lost
            self._drop_log.warning(
                f"gap:{state.spec.name}:{header.source}",
                "topic %r: %d messages from %s lost before seq %d",
                state.spec.name,
                lost,
                header.source,
                header.seq,
            )
        elif last is None and header.seq > 0 and state.spec.durability == "transient_local":
            # A durable topic replays its history from the oldest kept message,
            # so a first seq above 0 means older messages fell out of the history.
            stats.gaps += header.seq
        state.last_seq[key] = header.seq
        state.source_drops[key] = header.source_drops
        stats.source_drops = sum(state.source_drops.values())
        stats.received += 1
        stats.bytes += len(message.payload)
        now = time.monotonic_ns()
        stats.first_ns = stats.first_ns or now
        stats.last_ns = now

        with self._condition:
            if state.spec.policy == "latest":
                if state.pending is not None:
                    stats.stale_dropped += 1
                else:
                    self._ready.append(state.spec.name)
                state.pending = message
            else:
                self._ready.append(message)
                self._queued_all += 1
            self._condition.notify()

    def recv(self, timeout_s: float | None = None) -> Message | None:
        """Return the next message, or None when ``timeout_s`` seconds pass without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._condition:
            while not self._ready:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                if self._stop.is_set():
                    return None
                self._condition.wait(remaining if remaining is not None else 0.5)
            item = self._ready.popleft()
            if isinstance(item, str):
                state = self._topics[item]
                message = state.pending
                state.pending = None
            else:
                message = item
                self._queued_all -= 1
                state = self._topics[message.topic]
            state.stats.delivered += 1
            assert message is not None
            return message

    def __iter__(self) -> Iterator[Message]:
        while not self._stop.is_set():
            message = self.recv(timeout_s=0.5)
            if message is not None:
                yield message

    def close(self) -> None:
        """Stop the receiver thread and close the sockets."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def topic_specs(specs: Sequence[TopicSpec], names: Iterable[str]) -> list[TopicSpec]:
    """Select topics by name, raising KeyError with the known names when one is missing."""
    by_name = {spec.name: spec for spec in specs}
    selected = []
    for name in names:
        if name not in by_name:
            raise KeyError(f"topic {name!r} is not in the graph; known topics: {', '.join(sorted(by_name))}")
        selected.append(by_name[name])
    return selected
