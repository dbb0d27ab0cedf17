"""Replay: publish a source's messages with their recorded timing, or as fast as a consumer takes them.

:class:`Replayer` only handles timing and sending; the sources in
:mod:`pipeline.sources` read the files. Two pacing modes:

- ``rate``: each message is sent at ``start + (capture_ns - first_capture_ns) / rate``,
  anchored to the start of the replay, so timing errors do not add up. A
  message sent more than ``late_threshold_s`` after its target time is
  counted and logged, at a limited rate, with how late it was. The messages
  after it keep their own targets.
- ``fast``: no sleeping. With a :class:`CreditGate`, every message costs one
  credit that the consumer grants through :class:`FlowControl`, so a slow
  consumer slows the replay down and loses nothing.

Flow-control protocol, on one ZeroMQ ROUTER (replayer, binds) / DEALER
(consumer, connects) pair, each message a list of frames:

- consumer to replayer: ``[b"CREDIT", b"<n>"]`` with ``n`` a positive
  decimal integer: the consumer can take ``n`` more messages. A consumer
  grants its buffer size once at start and one credit after each message it
  has handled.
- replayer to consumer: ``[b"END", <JSON report>]`` after the last message.
  The report's ``sent`` maps each topic to the number of messages sent. The
  topics travel on other sockets, so END can arrive before the last
  messages: the consumer is done when it has received ``sent[topic]``
  messages of every topic.

Example::

    >>> from pipeline.replay import Replayer, CreditGate, FlowControl
    >>> from pipeline.sources import VideoFileSource
    >>> from pipeline.transport import Publisher, Subscriber, TopicSpec
    >>> spec = TopicSpec(name="camera", endpoint="tcp://127.0.0.1:0")
    >>> publisher = Publisher(spec, source="replay")
    >>> gate = CreditGate("tcp://127.0.0.1:0")
    >>> subscriber = Subscriber([publisher.spec])
    >>> flow = FlowControl(gate.endpoint)
    >>> flow.grant(8)
    >>> replayer = Replayer(VideoFileSource("clip.mp4"), {"camera": publisher}, fast=True, flow=gate)
    >>> report = replayer.run()      # meanwhile a consumer thread calls flow.grant(1) per message
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import zmq

from pipeline.sources import (
    McapSource,
    ReplayError,
    ReplayItem,
    ReplaySource,
    VideoFileSource,
    item_capture_ns,
)
from pipeline.transport import Publisher, RateLimitedLog, TopicSpec, get_context, validate_endpoint

__all__ = [
    "DEFAULT_FLOW_ENDPOINT",
    "REPLAY_TOPICS",
    "ReplayReport",
    "Replayer",
    "CreditGate",
    "FlowControl",
    "ReplayOptions",
    "open_source",
    "replay_topic_specs",
    "replay_into_topics",
    "run_fusion",
    "run_private_fusion",
    "private_topics",
    "register_cli",
]

log = logging.getLogger(__name__)

DEFAULT_FLOW_ENDPOINT = "tcp://127.0.0.1:5557"
"""Default endpoint of the replayer's :class:`CreditGate`."""

SUMMARY_TOPIC = TopicSpec(
    name="summary", endpoint="tcp://127.0.0.1:5553", policy="all", durability="transient_local", history=100_000
)
"""Summary topic of a replay's fusion node; durable, so the replay's own printer misses none."""

REPLAY_TOPICS: dict[str, TopicSpec] = {
    "camera": TopicSpec(name="camera", endpoint="tcp://127.0.0.1:5550", policy="latest"),
    "audio": TopicSpec(name="audio", endpoint="tcp://127.0.0.1:5551", policy="all", queue=600),
    "alerts": TopicSpec(
        name="alerts", endpoint="tcp://127.0.0.1:5552", policy="all", durability="transient_local", history=256
    ),
}
"""Topics of the built-in replay graph: the endpoints of ``configs/live.yaml``, so a replay takes the place of the capture nodes."""

CREDIT = b"CREDIT"
END = b"END"

_STALL_LOG_S = 5.0
"""Interval between warnings while the replayer waits for credit or subscribers, in seconds."""


# ---------------------------------------------------------------- flow control


class CreditGate:
    """Replayer side of flow control: bind a ROUTER socket and count the credits consumers grant.

    Credits from every connected consumer add up into one count.

    NOTE: With two consumers, the faster one's credits let the replay run
    ahead of the slower one, so only one flow-control consumer is lossless.

    Args:
        endpoint: ``tcp://HOST:PORT`` or ``ipc://PATH``; port 0 binds a free
            port, and ``endpoint`` then contains the real one.
        context: ZeroMQ context; defaults to this process's.

    Raises:
        zmq.ZMQError: The endpoint cannot be bound.
    """

    def __init__(self, endpoint: str = DEFAULT_FLOW_ENDPOINT, context: zmq.Context | None = None) -> None:
        validate_endpoint(endpoint)
        self.credits = 0
        self.granted = 0
        self.consumers: set[bytes] = set()
        self._bad_log = RateLimitedLog(log)
        self._socket = (context or get_context()).socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 500)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as error:
            self._socket.close(0)
            raise zmq.ZMQError(error.errno, f"cannot bind flow-control endpoint {endpoint}: {error.strerror}") from None
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT) if endpoint.endswith(":0") else endpoint
        log.info("flow control: waiting for credit on %s", self.endpoint)

    def _receive(self, timeout_s: float) -> None:
        """Read every pending grant, waiting up to ``timeout_s`` seconds for the first."""
        if not self._socket.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN):
            return
        while True:
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._accept(parts)

    def _accept(self, parts: list[bytes]) -> None:
        identity = parts[0]
        self.consumers.add(identity)
        if len(parts) == 3 and parts[1] == CREDIT and parts[2].isdigit() and int(parts[2]) > 0:
            count = int(parts[2])
            self.credits += count
            self.granted += count
            return
        self._bad_log.warning("bad-credit", "flow control: ignored a malformed message %r on %s", parts[1:], self.endpoint)

    def acquire(self, timeout_s: float) -> bool:
        """Take one credit, waiting up to ``timeout_s`` seconds for a grant; return False on timeout."""
        self._receive(0.0)
        deadline = time.monotonic() + timeout_s
        while self.credits == 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._receive(remaining)
        self.credits -= 1
        return True

    def finish(self, report: Mapping[str, Any]) -> None:
        """Send END with ``report`` (JSON) to every consumer that has granted credit."""
        self._receive(0.0)  # learn consumers whose grants were never read (timed replays)
        body = json.dumps(report).encode()
        for identity in self.consumers:
            self._socket.send_multipart([identity, END, body])

    def close(self) -> None:
        self._socket.close()


class FlowControl:
    """Consumer side of flow control: grant credits to a replayer and learn when it has finished.

    Grant the number of messages the consumer can buffer once, then one
    credit after each message it has handled::

        flow = FlowControl(endpoint)
        flow.grant(32)
        for message in subscriber:
            handle(message)
            flow.grant(1)

    Subscribe to the topics before the first grant: the replayer sends as
    soon as it has credit, and a message published before the subscription
    reaches the publisher is lost.

    Args:
        endpoint: The replayer's flow-control endpoint.
        context: ZeroMQ context; defaults to this process's.
    """

    def __init__(self, endpoint: str = DEFAULT_FLOW_ENDPOINT, context: zmq.Context | None = None) -> None:
        validate_endpoint(endpoint)
        self.endpoint = endpoint
        self.end_report: dict[str, Any] | None = None
        self.unsent_credits = 0
        self._unsent_log = RateLimitedLog(log)
        self._socket = (context or get_context()).socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)

    def grant(self, count: int = 1) -> None:
        """Allow the replayer to send ``count`` more messages.

        A grant that cannot be queued (the replayer has been gone for
        thousands of grants) is counted in ``unsent_credits`` and logged.

        Raises:
            ValueError: ``count`` is not a positive integer.
        """
        if not isinstance(count, int) or count <= 0:
            raise ValueError(f"credit count {count!r} must be a positive integer")
        try:
            self._socket.send_multipart([CREDIT, str(count).encode()], zmq.NOBLOCK)
        except zmq.Again:
            self.unsent_credits += count
            self._unsent_log.warning(
                "unsent", "flow control: %d credits not sent; is the replayer on %s running?", self.unsent_credits, self.endpoint
            )

    def poll_end(self, timeout_s: float = 0.0) -> dict[str, Any] | None:
        """Return the replayer's END report once it has arrived, waiting up to ``timeout_s`` seconds."""
        if self.end_report is None and self._socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            parts = self._socket.recv_multipart()
            if len(parts) == 2 and parts[0] == END:
                self.end_report = json.loads(parts[1])
            else:
                log.warning("flow control: ignored a malformed message %r from %s", parts[:1], self.endpoint)
        return self.end_report

    def close(self) -> None:
        self._socket.close()


# ---------------------------------------------------------------- replayer


@dataclass
class ReplayReport:
    """Counters of one replay; plain attributes that a metrics exporter can read."""

    source: str
    sent: dict[str, int] = field(default_factory=dict)
    """Messages sent, per topic."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Messages of topics without a publisher, per topic."""
    late: int = 0
    """Messages sent more than the late threshold after their target time (rate mode)."""
    max_late_ms: float = 0.0
    passes: int = 0
    """Passes over the source begun (more than 1 only with loop)."""
    wall_s: float = 0.0
    """Time from the first message to the last, in seconds."""
    media_s: float = 0.0
    """Capture time from the first message to the last, in seconds."""
    stopped: bool = False
    """True when stop() ended the replay before the source did."""

    @property
    def speed(self) -> float:
        """Capture time replayed per second of replay time (1.0 is real time); 0.0 before two messages."""
        return self.media_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sent": dict(self.sent),
            "skipped": dict(self.skipped),
            "late": self.late,
            "max_late_ms": round(self.max_late_ms, 3),
            "passes": self.passes,
            "wall_s": round(self.wall_s, 6),
            "media_s": round(self.media_s, 6),
            "speed": round(self.speed, 4),
            "stopped": self.stopped,
        }


class _LoopStamps:
    """Shift capture times, sequence numbers and alert ids of loop passes after the first.

    Pass ``k`` adds ``k * period_ns`` to both capture times and ``k`` times
    the sequence span of pass 0 to each ``(topic, source, session)``
    sequence, so subscribers see one continuous stream.
    """

    def __init__(self) -> None:
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.count = 0
        self._seq_range: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.period_ns = 0

    def observe(self, header: dict[str, Any]) -> None:
        capture_ns = header["capture_ns"]
        self.first_ns = capture_ns if self.first_ns is None else self.first_ns
        self.last_ns = capture_ns
        self.count += 1
        key = (header.get("topic", ""), header.get("source", ""), header.get("session", ""))
        seq = header.get("seq", 0)
        low, high = self._seq_range.get(key, (seq, seq))
        self._seq_range[key] = (min(low, seq), max(high, seq))

    def close_first_pass(self, span_ns: int | None) -> None:
        if span_ns is not None and span_ns > 0:
            self.period_ns = span_ns
        elif self.count >= 2 and self.first_ns is not None and self.last_ns is not None:
            # One more mean interval after the last message, so the passes do not overlap.
            elapsed = self.last_ns - self.first_ns
            self.period_ns = elapsed + elapsed // (self.count - 1)
        else:
            self.period_ns = 1_000_000_000

    def shift(self, header: dict[str, Any], pass_index: int) -> bytes:
        shift_ns = pass_index * self.period_ns
        header["capture_ns"] += shift_ns
        header["capture_wall_ns"] = header.get("capture_wall_ns", 0) + shift_ns
        key = (header.get("topic", ""), header.get("source", ""), header.get("session", ""))
        low, high = self._seq_range.get(key, (0, -1))
        header["seq"] = header.get("seq", 0) + pass_index * (high - low + 1)
        alert = header.get("alert")
        if isinstance(alert, dict) and "alert_id" in alert:
            alert["alert_id"] = f"{alert['alert_id']}-loop{pass_index}"
        return json.dumps(header, separators=(",", ":")).encode()


class _Progress:
    """A rich progress bar on stderr: position, duration and speed against real time."""

    def __init__(self, name: str, duration_s: float | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[position]}"),
            TextColumn("{task.fields[speed]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._duration_s = duration_s
        self._task = self._progress.add_task(f"replay {name}", total=duration_s, position="", speed="")
        self._last_update = 0.0

    def __enter__(self) -> "_Progress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, position_s: float, pass_index: int, speed: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_update < 0.1:
            return
        self._last_update = now
        total = f"{self._duration_s:.1f} s" if self._duration_s is not None else "?"
        loop = f" (pass {pass_index + 1})" if pass_index else ""
        self._progress.update(
            self._task,
            completed=position_s,
            position=f"{position_s:.1f} / {total}{loop}",
            speed=f"{speed:.2f}x real time",
        )


class _NoProgress:
    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, position_s: float, pass_index: int, speed: float, force: bool = False) -> None:
        return None


class Replayer:
    """Send a source's items through publishers, paced by their capture times or by consumer credit.

    Args:
        source: Items in capture order, see :class:`pipeline.sources.ReplaySource`.
        publishers: Publisher per topic name; items of other topics are
            skipped and counted in ``report.skipped``. Headers are sent as
            they are, with ``send_raw``.
        rate: Speed against real time (2.0 replays twice as fast); ignored
            with ``fast``.
        fast: Send without sleeping. With ``flow``, the consumer's credits
            pace the replay. Without it, messages go out as fast as the
            publishers accept them, and a subscriber more than its topic's
            ``queue`` messages behind loses messages.
        loop: Start over at the end of the source; capture times keep
            increasing across passes.
        max_loops: Passes to make with ``loop``; None loops until ``stop()``.
        progress: Show a progress bar when stderr is a terminal.
        flow: Credit gate of the consumer, for ``fast``.
        late_threshold_s: Lateness, in seconds, beyond which a message is
            counted and logged as late.
        subscriber_timeout_s: Time to wait, in seconds, for at least one
            subscriber per publisher before the first message; the replay
            then starts anyway.
        credit_timeout_s: Time without credit, in seconds, after which a
            fast replay with ``flow`` gives up and ends (stopped); None waits
            until ``stop()``.

    Raises:
        ValueError: ``rate`` is not a positive finite number, both ``fast``
            and a rate other than 1 are given, or ``flow`` is given without
            ``fast``.
    """

    def __init__(
        self,
        source: ReplaySource,
        publishers: Mapping[str, Publisher],
        rate: float = 1.0,
        fast: bool = False,
        loop: bool = False,
        max_loops: int | None = None,
        progress: bool = True,
        flow: CreditGate | None = None,
        late_threshold_s: float = 0.02,
        subscriber_timeout_s: float = 5.0,
        credit_timeout_s: float | None = None,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate {rate!r} must be a positive number (1.0 is real time)")
        if fast and rate != 1.0:
            raise ValueError(f"fast and rate {rate} exclude each other; pass one of them")
        if flow is not None and not fast:
            raise ValueError("flow control paces fast replays only; pass fast=True or drop flow")
        if max_loops is not None and max_loops <= 0:
            raise ValueError(f"max_loops {max_loops} must be positive")
        self.source = source
        self.publishers = dict(publishers)
        self.rate = rate
        self.fast = fast
        self.loop = loop
        self.max_loops = max_loops if loop else 1
        self.progress = progress
        self.flow = flow
        self.late_threshold_ns = round(late_threshold_s * 1e9)
        self.subscriber_timeout_s = subscriber_timeout_s
        self.credit_timeout_s = credit_timeout_s
        self.report = ReplayReport(source=getattr(source, "name", type(source).__name__))
        self._stop = threading.Event()
        self._late_log = RateLimitedLog(log)
        self._warned_topics: set[str] = set()

    def stop(self) -> None:
        """Ask ``run`` to return after the message it is sending; safe from signal handlers and threads."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self) -> ReplayReport:
        """Replay the source and return the report; ends at the end of the source or on ``stop()``.

        Raises:
            ReplayError: The source fails while being read.
        """
        self._wait_for_subscribers()
        display = self._progress_display()
        start_ns: int | None = None
        first_ns = 0
        with display:
            for pass_index, capture_ns, item in self._timed_items():
                publisher = self.publishers.get(item.topic)
                if publisher is None:
                    self._skip(item.topic)
                    continue
                if start_ns is None:
                    start_ns, first_ns = time.monotonic_ns(), capture_ns
                if not self._pace(item, capture_ns - first_ns, start_ns):
                    break
                publisher.send_raw(item.header_bytes, item.payload)
                self._count(item.topic, capture_ns - first_ns, start_ns)
                display.update(self.report.media_s % self._pass_length_s(), pass_index, self.report.speed)
            display.update(self.report.media_s % self._pass_length_s(), 0, self.report.speed, force=True)

        self.report.stopped = self.stopped
        if self.flow is not None:
            self.flow.finish(self.report.as_dict())
        log.info(
            "replay of %s: %s sent in %.2f s (%.2fx real time), %d late",
            self.report.source,
            ", ".join(f"{count} on {topic}" for topic, count in self.report.sent.items()) or "nothing",
            self.report.wall_s,
            self.report.speed,
            self.report.late,
        )
        return self.report

    def _pass_length_s(self) -> float:
        duration = getattr(self.source, "duration_s", None)
        return duration if duration else math.inf

    def _wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + self.subscriber_timeout_s
        for topic, publisher in self.publishers.items():
            remaining = max(0.0, deadline - time.monotonic())
            if not publisher.wait_for_subscribers(1, remaining):
                log.warning(
                    "replay: no subscriber on topic %r after %.1f s; its first messages may reach no one",
                    topic,
                    self.subscriber_timeout_s,
                )

    def _progress_display(self) -> _Progress | _NoProgress:
        if self.progress and sys.stderr.isatty():
            return _Progress(self.report.source, getattr(self.source, "duration_s", None))
        return _NoProgress()

    def _timed_items(self) -> Iterator[tuple[int, int, ReplayItem]]:
        """Yield ``(pass index, capture_ns, item)`` over every pass, loop passes shifted."""
        stamps = _LoopStamps()
        pass_index = 0
        while not self.stopped:
            self.report.passes = pass_index + 1
            for item in self.source:
                if self.stopped:
                    return
                capture_ns = item_capture_ns(item)
                header = json.loads(item.header_bytes)
                if pass_index == 0:
                    stamps.observe(header)
                    yield pass_index, capture_ns, item
                    continue
                header_bytes = stamps.shift(header, pass_index)
                yield pass_index, header["capture_ns"], ReplayItem(item.topic, header_bytes, item.payload)

            if stamps.count == 0:
                log.warning("replay: source %s yielded no messages", self.report.source)
                return
            if pass_index == 0:
                stamps.close_first_pass(getattr(self.source, "span_ns", None))
            pass_index += 1
            if self.max_loops is not None and pass_index >= self.max_loops:
                return

    def _pace(self, item: ReplayItem, elapsed_capture_ns: int, start_ns: int) -> bool:
        """Wait until ``item`` may be sent; return False when the replay must end instead."""
        if self.fast:
            return self._take_credit()

        target_ns = start_ns + round(elapsed_capture_ns / self.rate)
        while True:
            remaining_ns = target_ns - time.monotonic_ns()
            if remaining_ns <= 0:
                break
            if self._stop.wait(min(remaining_ns / 1e9, 0.2)):
                return False

        late_ns = time.monotonic_ns() - target_ns
        if late_ns > self.late_threshold_ns:
            self.report.late += 1
            self.report.max_late_ms = max(self.report.max_late_ms, late_ns / 1e6)
            self._late_log.warning(
                "late",
                "replay: message on topic %r sent %.1f ms after its target time at rate %.2f; "
                "the host or a publisher is slower than the recording",
                item.topic,
                late_ns / 1e6,
                self.rate,
            )
        return not self.stopped

    def _take_credit(self) -> bool:
        if self.flow is None:
            return not self.stopped
        started = time.monotonic()
        next_warning = started + _STALL_LOG_S
        while not self.stopped:
            if self.flow.acquire(timeout_s=0.2):
                return True
            now = time.monotonic()
            if self.credit_timeout_s is not None and now - started >= self.credit_timeout_s:
                log.error(
                    "replay: no credit from a consumer on %s for %.1f s; ending the replay",
                    self.flow.endpoint,
                    now - started,
                )
                self._stop.set()
                return False
            if now >= next_warning:
                next_warning = now + _STALL_LOG_S
                log.warning("replay: waiting %.0f s for credit from a consumer on %s", now - started, self.flow.endpoint)
        return False

    def _count(self, topic: str, elapsed_capture_ns: int, start_ns: int) -> None:
        report = self.report
        report.sent[topic] = report.sent.get(topic, 0) + 1
        report.media_s = elapsed_capture_ns / 1e9
        report.wall_s = (time.monotonic_ns() - start_ns) / 1e9

    def _skip(self, topic: str) -> None:
        self.report.skipped[topic] = self.report.skipped.get(topic, 0) + 1
        if topic not in self._warned_topics:
            self._warned_topics.add(topic)
            log.warning("replay: topic %r has no publisher in this graph; its messages are skipped", topic)


# ---------------------------------------------------------------- wiring and CLI


@dataclass
class ReplayOptions:
    """Settings of one ``scenewatch replay`` run, as parsed from the command line."""

    rate: float = 1.0
    fast: bool = False
    loop: bool = False
    progress: bool = True
    flow_endpoint: str | None = None
    """Credit endpoint to bind for a fast replay; None sends without flow control."""
    subscriber_timeout_s: float = 5.0
    json_report: bool = False
    out: Path | None = None
    """JSONL file for fusion summaries."""


def open_source(
    path: str | Path,
    *,
    audio: str | Path | None = None,
    audio_offset_s: float = 0.0,
    alerts: str | Path | None = None,
    start_s: float = 0.0,
    duration_s: float | None = None,
    **video_options: Any,
) -> ReplaySource:
    """Open a replay source by file type: ``.mcap`` is a recording, anything else a video file.

    Raises:
        ReplayError: The file is missing or invalid, or ``audio`` or
            ``alerts`` is given for a recording (it already has its own).
    """
    path = Path(path)
    if path.suffix.lower() == ".mcap":
        if audio is not None or alerts is not None or audio_offset_s:
            raise ReplayError(f"{path} is a recording; --audio, --audio-offset and --alerts apply to video files only")
        return McapSource(path, start_s=start_s, duration_s=duration_s)
    return VideoFileSource(
        path,
        audio=audio,
        audio_offset_s=audio_offset_s,
        alerts=alerts,
        start_s=start_s,
        duration_s=duration_s,
        **video_options,
    )


def replay_topic_specs(specs: Mapping[str, TopicSpec], fast: bool) -> dict[str, TopicSpec]:
    """Return the topic specs a replay publishes on; a fast replay turns every ``latest`` topic into ``all``.

    A ``latest`` topic keeps only the newest frame at the subscriber, which
    is right for live capture but loses frames in a replay that outruns its
    consumer. The consumer of a fast replay must subscribe with the specs
    returned here.
    """
    if not fast:
        return dict(specs)
    return {name: spec.model_copy(update={"policy": "all"}) if spec.policy == "latest" else spec for name, spec in specs.items()}


def replay_into_topics(
    source: ReplaySource,
    specs: Mapping[str, TopicSpec],
    options: ReplayOptions,
    on_replayer: Callable[[Replayer], None] | None = None,
) -> ReplayReport:
    """Bind a publisher per topic the source produces, replay the source into them and close them.

    Args:
        source: What to replay.
        specs: Topics of the graph, by name.
        options: Pacing and flow-control settings.
        on_replayer: Called with the replayer before it starts, for example
            to install signal handlers that call its ``stop()``.

    Raises:
        zmq.ZMQError: An endpoint cannot be bound (another graph is running).
        ReplayError: The source fails while being read.
    """
    names = getattr(source, "topic_names", None) or list(specs)
    publishers: dict[str, Publisher] = {}
    gate: CreditGate | None = None
    try:
        for name in names:
            if name in specs:
                publishers[name] = Publisher(specs[name], source="replay")
        if options.fast and options.flow_endpoint:
            gate = CreditGate(options.flow_endpoint)
        replayer = Replayer(
            source,
            publishers,
            rate=options.rate,
            fast=options.fast,
            loop=options.loop,
            progress=options.progress,
            flow=gate,
            subscriber_timeout_s=options.subscriber_timeout_s,
        )
        if on_replayer is not None:
            on_replayer(replayer)
        report = replayer.run()
        # NOTE: a `latest` topic closes with linger 0, so this pause lets its
        # last frame leave the socket; 0.2 s is an estimate, not a guarantee.
        time.sleep(0.2)
        return report
    finally:
        if gate is not None:
            gate.close()
        for publisher in publishers.values():
            publisher.close()


def _fusion_graph(
    source: ReplaySource,
    specs: Mapping[str, TopicSpec],
    flow_endpoint: str,
    fusion_params: dict[str, Any],
    summary_spec: TopicSpec | None,
) -> Any:
    """Return the graph of the fusion node that consumes a replay: its inputs are the source's topics."""
    from pipeline.config import parse_graph

    topic_names = [name for name in (getattr(source, "topic_names", None) or list(specs)) if name in specs]
    input_names = {"camera": "frames", "audio": "audio", "alerts": "alerts"}
    inputs = {input_names.get(name, name): name for name in topic_names}
    topics = {name: specs[name].model_dump(exclude={"name"}) for name in topic_names}
    topics["summary"] = (summary_spec or SUMMARY_TOPIC).model_dump(exclude={"name", "durability", "history"})
    topics["summary"].update(durability="transient_local", history=SUMMARY_TOPIC.history)
    params = dict(fusion_params)
    params.update(
        processing_time=False,
        flow=flow_endpoint,
        expected=[name for name in ("frames", "audio") if name in inputs],
    )
    return parse_graph(
        {
            "name": "replay",
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "topics": topics,
            "nodes": [
                {
                    "id": "fusion",
                    "node": "fusion",
                    "inputs": inputs,
                    "outputs": {"summary": "summary"},
                    "params": params,
                    "restart": {"policy": "never", "required": True},
                }
            ],
        },
        "<replay>",
    )


def private_topics(specs: Mapping[str, TopicSpec], folder: Path) -> dict[str, TopicSpec]:
    """Return ``specs`` moved onto ``ipc://`` endpoints in ``folder``, so a replay clashes with no running graph."""
    return {name: spec.model_copy(update={"endpoint": f"ipc://{folder / name}"}) for name, spec in specs.items()}


def run_private_fusion(
    source: ReplaySource,
    options: ReplayOptions,
    fusion_params: Mapping[str, Any] | None = None,
    on_replayer: Callable[[Replayer], None] | None = None,
) -> int:
    """Run :func:`run_fusion` on private ``ipc://`` sockets in a temporary folder; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="scenewatch-replay-") as name:
        folder = Path(name)
        options.flow_endpoint = f"ipc://{folder / 'flow'}"
        summary_spec = private_topics({"summary": SUMMARY_TOPIC}, folder)["summary"]
        return run_fusion(source, private_topics(REPLAY_TOPICS, folder), options, fusion_params, on_replayer, summary_spec)


def run_fusion(
    source: ReplaySource,
    specs: Mapping[str, TopicSpec],
    options: ReplayOptions,
    fusion_params: Mapping[str, Any] | None = None,
    on_replayer: Callable[[Replayer], None] | None = None,
    summary_spec: TopicSpec | None = None,
) -> int:
    """Replay ``source`` into a fusion node process, print its summaries, and return the exit status.

    The fusion node runs under a :class:`~pipeline.launcher.Launcher` with
    host-clock window closing off, and takes messages one credit at a time
    through :class:`FlowControl`, so that it receives them in capture order. A
    fast replay is paced by those credits; a timed replay ignores them and
    only uses the END report, after which fusion closes its last windows and
    exits. Summaries print as ``scenewatch listen`` prints them (JSON lines
    with ``options.json_report``) and go to ``options.out`` as JSON lines.

    Args:
        summary_spec: Summary topic; default :data:`SUMMARY_TOPIC`.

    Raises:
        zmq.ZMQError: An endpoint cannot be bound (another graph is running).
    """
    from pipeline.launcher import Launcher
    from pipeline.summary import Summary, format_summary
    from pipeline.transport import Subscriber

    flow_endpoint = options.flow_endpoint or DEFAULT_FLOW_ENDPOINT
    graph = _fusion_graph(source, replay_topic_specs(specs, fast=True), flow_endpoint, dict(fusion_params or {}), summary_spec)
    launcher = Launcher(graph, write_state=False)
    out = open(options.out, "w", encoding="utf-8") if options.out else None  # noqa: SIM115
    summaries = Subscriber([graph.topic_spec("summary")])
    printed = 0

    printing = threading.Event()
    printing.set()

    def print_summaries() -> None:
        nonlocal printed
        while printing.is_set():
            message = summaries.recv(timeout_s=0.1)
            if message is None:
                continue
            text = bytes(message.payload).decode("utf-8")
            summary = Summary.from_json(text)
            print(text if options.json_report else format_summary(summary), flush=True)
            if out is not None:
                out.write(text + "\n")
            printed += 1

    printer = threading.Thread(target=print_summaries, name="replay-summaries", daemon=True)
    printer.start()
    supervisor = threading.Thread(target=launcher.run, kwargs={"install_signal_handlers": False}, name="replay-fusion")
    supervisor.start()
    gate = CreditGate(flow_endpoint) if not options.fast else None
    timed = ReplayOptions(**{**options.__dict__, "flow_endpoint": flow_endpoint if options.fast else None})
    # Fusion needs several seconds to load its models before it subscribes.
    timed.subscriber_timeout_s = max(options.subscriber_timeout_s, 120.0)
    report: ReplayReport | None = None

    def watch(replayer: Replayer) -> None:
        if on_replayer is not None:
            on_replayer(replayer)

        def stop_when_fusion_exits() -> None:
            supervisor.join()
            # Fusion exits with status 0 only after the replay's END report;
            # any other exit means it failed and nothing consumes the replay.
            if launcher.exit_status and not replayer.stopped:
                log.error("replay: the fusion node failed; stopping the replay")
                replayer.stop()

        threading.Thread(target=stop_when_fusion_exits, name="replay-watch", daemon=True).start()

    try:
        report = replay_into_topics(source, replay_topic_specs(specs, fast=True), timed, watch)
        if gate is not None:
            gate.finish(report.as_dict())
        if report.stopped:
            launcher.request_stop()
        supervisor.join()
        # The summary topic is durable and local: what fusion sent before it
        # exited is in the printer's queue within moments.
        time.sleep(0.3)
        log.info("replay: %s; fusion published %d summaries", ", ".join(f"{n} {t}" for t, n in report.sent.items()), printed)
    finally:
        launcher.request_stop()
        supervisor.join(5)
        printing.clear()
        printer.join(2)
        if gate is not None:
            gate.close()
        summaries.close()
        if out is not None:
            out.close()
    stopped = report is None or report.stopped
    if launcher.exit_status:
        return launcher.exit_status
    return 130 if stopped else 0


def _finite_float(text: str) -> float:
    """argparse type: any finite float, negative included."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def _jpeg_quality(text: str) -> int:
    """argparse type: an integer from 1 to 100."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 1 and 100")
    return value


def _endpoint(text: str) -> str:
    """argparse type: a ZeroMQ endpoint, ``tcp://HOST:PORT`` or ``ipc://PATH``."""
    try:
        validate_endpoint(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def register_cli(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the ``replay`` command to the ``scenewatch`` subcommands; return its handler by name."""
    from pipeline.cli import non_negative_float, positive_float, positive_int

    parser = commands.add_parser(
        "replay",
        help="replay a video file or an MCAP recording into the graph's topics",
        description=(
            "Publish a video file (with optional audio and alerts files) or an MCAP recording with "
            "its recorded timing. See docs/replay.md."
        ),
    )
    parser.add_argument("source", help="video file (mp4, mkv, mov, avi, gif) or MCAP recording (.mcap)")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--rate", type=positive_float, default=1.0, metavar="FACTOR", help="speed as a multiple of real time (default 1.0)"
    )
    pacing.add_argument("--fast", action="store_true", help="send as fast as the consumer takes messages, losing none")
    parser.add_argument("--loop", action="store_true", help="start over at the end; capture times keep increasing")
    parser.add_argument("--start", type=non_negative_float, default=0.0, metavar="SECONDS", help="media time to start at, in seconds (default 0)")
    parser.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS", help="seconds of media to replay (default: to the end)")
    parser.add_argument("--audio", default=None, metavar="FILE", help="audio file (wav, flac, mp3) replacing the video's own audio track")
    parser.add_argument(
        "--audio-offset", type=_finite_float, default=0.0, metavar="SECONDS",
        help="start of --audio relative to the video start, in seconds; positive starts the audio later (default 0)",
    )
    parser.add_argument("--alerts", default=None, metavar="FILE", help="alerts JSONL file, one {\"offset_s\", \"text\", ...} object per line")
    parser.add_argument("--no-fusion", action="store_true", help="only publish into the graph's topics; start no fusion node")
    parser.add_argument("--json", action="store_true", help="print summaries as JSON lines (with --no-fusion: the replay report as one JSON object)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE", help="write fusion summaries to this JSONL file")
    parser.add_argument("--config", default=None, metavar="FILE", help="graph YAML file whose topics to publish on (default: built-in replay graph on loopback)")
    parser.add_argument("--encoding", choices=("jpeg", "bgr8", "rgb8"), default="jpeg", help="frame encoding (default jpeg)")
    parser.add_argument("--jpeg-quality", type=_jpeg_quality, default=85, metavar="1-100", help="JPEG quality, 1 to 100 (default 85)")
    parser.add_argument("--sample-rate", type=positive_int, default=16_000, metavar="HZ", help="sample rate of the published audio, in Hz (default 16000)")
    parser.add_argument(
        "--flow-endpoint", type=_endpoint, default=None, metavar="ENDPOINT",
        help=f"with --fast: bind this credit endpoint and send only with a consumer's credit (fusion uses {DEFAULT_FLOW_ENDPOINT})",
    )
    parser.add_argument(
        "--subscriber-timeout", type=non_negative_float, default=5.0, metavar="SECONDS",
        help="time to wait for subscribers before the first message, in seconds (default 5)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown only when stderr is a terminal)")
    return {"replay": cmd_replay}


def cmd_replay(args: argparse.Namespace) -> int:
    """Run ``scenewatch replay``; return the exit status."""
    from pipeline.config import load_graph

    if args.no_fusion and args.out is not None:
        print("scenewatch replay: --out FILE records fusion summaries; drop --no-fusion or --out", file=sys.stderr)
        return 2
    source = open_source(
        args.source,
        audio=args.audio,
        audio_offset_s=args.audio_offset,
        alerts=args.alerts,
        start_s=args.start,
        duration_s=args.duration,
        **({} if Path(args.source).suffix.lower() == ".mcap" else {
            "encoding": args.encoding,
            "jpeg_quality": args.jpeg_quality,
            "sample_rate": args.sample_rate,
        }),
    )
    specs = load_graph(args.config).topic_specs() if args.config else dict(REPLAY_TOPICS)
    options = ReplayOptions(
        rate=args.rate,
        fast=args.fast,
        loop=args.loop,
        progress=not args.no_progress,
        flow_endpoint=args.flow_endpoint if args.no_fusion else (args.flow_endpoint or DEFAULT_FLOW_ENDPOINT),
        subscriber_timeout_s=args.subscriber_timeout,
        json_report=args.json,
        out=args.out,
    )

    received: list[int] = []

    def install_handlers(replayer: Replayer) -> None:
        def handle(signum: int, _frame: Any) -> None:
            received.append(signum)
            replayer.stop()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if not args.no_fusion:
        fusion_params: dict[str, Any] = {}
        if args.config:
            fusion_node = next((node for node in load_graph(args.config).nodes if node.node == "fusion"), None)
            fusion_params = dict(fusion_node.params) if fusion_node else {}
        try:
            if args.config:
                summary_spec = load_graph(args.config).topic_specs().get("summary")
                return run_fusion(source, specs, options, fusion_params, install_handlers, summary_spec)
            # Without a graph, the replay and its fusion node talk over
            # private sockets, so they clash with no running graph.
            return run_private_fusion(source, options, fusion_params, install_handlers)
        except zmq.ZMQError as error:
            print(f"scenewatch replay: {error}; is another graph running on these endpoints? Stop it or pass --config", file=sys.stderr)
            return 1
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    try:
        report = replay_into_topics(source, replay_topic_specs(specs, options.fast), options, install_handlers)
    except zmq.ZMQError as error:
        print(f"scenewatch replay: {error}; is another graph running on these endpoints? Stop it or pass --config", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    if options.json_report:
        print(json.dumps(report.as_dict()))
    else:
        counts = ", ".join(f"{count} on {topic}" for topic, count in report.sent.items()) or "no messages"
        print(
            f"replayed {report.source}: {counts} in {report.wall_s:.2f} s "
            f"({report.speed:.2f}x real time, {report.passes} pass(es), {report.late} late)"
        )
    return 128 + received[0] if received else 0
