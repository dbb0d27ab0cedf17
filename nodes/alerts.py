"""Alerts node: publish text alerts from ``scenewatch alert``, a tailed JSONL file and stdin.

All three inputs feed one queue that the main loop publishes in arrival
order on the ``alerts`` output, a ``transient_local`` topic, so a subscriber
that joins later still gets every alert. No input drops an alert:

- ``scenewatch alert`` sends a request to the node's ``ingest`` endpoint
  (a ZeroMQ ROUTER socket) and gets the reply only after the alert is
  published; a retried request with the same ``alert_id`` is published once.
- A JSONL file is tailed from a saved byte offset (``FILE.offset`` beside it),
  so lines written while the node was down are read after a restart, and
  each line is published once. A truncated or replaced file is read again
  from its start.
- Standard input is read line by line when the node runs alone
  (``python -m nodes.alerts``); under ``scenewatch run`` the launcher process
  owns stdin, so use ``scenewatch alert --stdin`` there.

A line is either plain text or a JSON object::

    {"text": "Road work ahead", "severity": "warning", "category": "construction", "expires_s": 600}
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.messages import SEVERITIES
from pipeline.node import NodeContext, standalone_main
from pipeline.transport import get_context, validate_endpoint

__all__ = ["Params", "run", "OUTPUTS", "AlertRequest", "parse_alert_line"]

log = logging.getLogger(__name__)

OUTPUTS = ("alerts",)
DEFAULT_INGEST = "tcp://127.0.0.1:5559"


class Params(BaseModel):
    """Alerts node parameters."""

    model_config = ConfigDict(extra="forbid")

    ingest: str = DEFAULT_INGEST
    """Endpoint where ``scenewatch alert`` sends alerts."""
    watch_file: Path | None = None
    """JSONL (or plain text) file to tail for alerts, one per line."""
    from_beginning: bool = True
    """For a watched file without a saved offset: read it from its start (True) or only new lines."""
    poll_interval_s: float = Field(default=0.2, gt=0)
    stdin: bool = False
    """Read alerts from standard input, one per line (when the node runs alone)."""


class AlertRequest(BaseModel):
    """One alert as the inputs deliver it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    severity: str = "info"
    category: str | None = None
    expires_s: float | None = Field(default=None, gt=0)
    alert_id: str | None = None
    origin: str = "cli"

    def check(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        if not self.text.strip():
            raise ValueError("alert text is empty")


def parse_alert_line(line: str, origin: str) -> AlertRequest | None:
    """Parse one input line: a JSON object, or plain text. Return None for a blank line.

    Raises:
        ValueError: The line starts with ``{`` but is not a valid alert object.
    """
    stripped = line.strip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        try:
            fields: Any = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ValueError(f"invalid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(fields, dict):
            raise ValueError("a JSON alert must be an object with 'text'")
        fields.setdefault("origin", origin)
        try:
            request = AlertRequest.model_validate(fields)
        except ValidationError as error:
            first = error.errors()[0]
            raise ValueError(f"field {'.'.join(map(str, first['loc']))!r}: {first['msg']}") from None
    else:
        request = AlertRequest(text=stripped, origin=origin)
    request.check()
    return request


@dataclass
class _Pending:
    request: AlertRequest
    reply_to: list[bytes] | None = None  # ROUTER envelope of a CLI request
    on_published: Any = None  # callback after publishing (file offset commit)


class FileTail(threading.Thread):
    """Tail a file line by line from a byte offset saved beside it."""

    def __init__(self, path: Path, output: "queue.Queue[_Pending]", stop: threading.Event, params: Params) -> None:
        super().__init__(name="alerts-tail", daemon=True)
        self.path = path
        self.offset_path = path.with_name(path.name + ".offset")
        self.output = output
        self.stop = stop
        self.params = params
        self.line_number = 0
        self.invalid_lines = 0

    def _load_offset(self) -> tuple[int, int]:
        try:
            saved = json.loads(self.offset_path.read_text())
            return int(saved["offset"]), int(saved["line"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as error:
            log.warning("alerts: offset file %s is unreadable (%s); starting over", self.offset_path, error)
        if self.params.from_beginning or not self.path.exists():
            return 0, 0
        return self.path.stat().st_size, 0

    def _save_offset(self, offset: int, line: int) -> None:
        temporary = self.offset_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"offset": offset, "line": line}))
        os.replace(temporary, self.offset_path)

    def run(self) -> None:
        offset, self.line_number = self._load_offset()
        inode = None
        buffer = b""
        log.info("alerts: tailing %s from byte %d", self.path, offset)
        while not self.stop.is_set():
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self.stop.wait(self.params.poll_interval_s)
                continue
            if inode is not None and (stat.st_ino != inode or stat.st_size < offset):
                log.info("alerts: %s was replaced or truncated; reading it from the start", self.path)
                offset, self.line_number, buffer = 0, 0, b""
            inode = stat.st_ino
            if stat.st_size > offset + len(buffer):
                with open(self.path, "rb") as handle:
                    handle.seek(offset + len(buffer))
                    buffer += handle.read()
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                offset += len(raw) + 1
                self.line_number += 1
                self._emit(raw, offset)
            self.stop.wait(self.params.poll_interval_s)

    def _emit(self, raw: bytes, end_offset: int) -> None:
        line_number = self.line_number
        try:
            request = parse_alert_line(raw.decode("utf-8"), origin="file")
        except (UnicodeDecodeError, ValueError) as error:
            self.invalid_lines += 1
            log.error("alerts: %s line %d skipped: %s", self.path, line_number, error)
            self._save_offset(end_offset, line_number)
            return
        if request is None:
            return
        if request.alert_id is None:
            request.alert_id = f"{self.path.name}:{line_number}"
        done = threading.Event()
        self.output.put(_Pending(request, on_published=done.set))
        # Commit the offset only after the alert is published, so a crash
        # in between repeats the line instead of losing it.
        while not done.wait(0.1):
            if self.stop.is_set():
                return
        self._save_offset(end_offset, line_number)


def _read_stdin(output: "queue.Queue[_Pending]", stop: threading.Event) -> None:
    line_number = 0
    for line in sys.stdin:
        line_number += 1
        if stop.is_set():
            return
        try:
            request = parse_alert_line(line, origin="stdin")
        except ValueError as error:
            log.error("alerts: stdin line %d skipped: %s", line_number, error)
            continue
        if request is not None:
            output.put(_Pending(request))
    log.info("alerts: end of stdin after %d lines", line_number)


def run(node: NodeContext) -> None:
    """Publish alerts from every enabled input until stopped."""
    params: Params = node.params
    validate_endpoint(params.ingest)
    publisher = node.publisher("alerts")
    pending: queue.Queue[_Pending] = queue.Queue()
    seen_ids: collections.OrderedDict[str, Any] = collections.OrderedDict()

    router = get_context().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 500)
    try:
        router.bind(params.ingest)
    except zmq.ZMQError as error:
        router.close(0)
        raise OSError(f"alerts: cannot bind ingest endpoint {params.ingest}: {error}; choose a free port in params.ingest") from None
    log.info("alerts: accepting alerts on %s", params.ingest)

    if params.watch_file is not None:
        FileTail(params.watch_file, pending, node.stop_event, params).start()
    if params.stdin:
        threading.Thread(target=_read_stdin, args=(pending, node.stop_event), name="alerts-stdin", daemon=True).start()

    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    try:
        while not node.stopped:
            if dict(poller.poll(50)).get(router):
                _receive_requests(router, pending)
            publisher.poll(0)
            while True:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    break
                _publish(item, publisher, router, seen_ids)
    finally:
        router.close()


def _receive_requests(router: zmq.Socket, pending: "queue.Queue[_Pending]") -> None:
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        envelope, body = frames[:-1], frames[-1]
        try:
            fields = json.loads(body)
            fields.setdefault("origin", "cli")
            request = AlertRequest.model_validate(fields)
            request.check()
        except (json.JSONDecodeError, ValidationError, ValueError, AttributeError) as error:
            log.error("alerts: rejected an ingest request: %s", error)
            router.send_multipart([*envelope, json.dumps({"ok": False, "error": str(error)}).encode()])
            continue
        pending.put(_Pending(request, reply_to=envelope))


def _publish(item: _Pending, publisher: Any, router: zmq.Socket, seen_ids: "collections.OrderedDict[str, Any]") -> None:
    request = item.request
    reply: dict[str, Any]
    if request.alert_id and request.alert_id in seen_ids:
        reply = {"ok": True, "duplicate": True, **seen_ids[request.alert_id]}
    else:
        header = publisher.send_alert(
            request.text,
            severity=request.severity,
            category=request.category,
            expires_s=request.expires_s,
            origin=request.origin,
            alert_id=request.alert_id,
        )
        assert header.alert is not None
        reply = {"ok": True, "alert_id": header.alert.alert_id, "seq": header.seq}
        seen_ids[header.alert.alert_id] = {"alert_id": header.alert.alert_id, "seq": header.seq}
        while len(seen_ids) > 10_000:
            seen_ids.popitem(last=False)
        log.info("alerts: published %s (%s, %s): %s", header.alert.alert_id, request.severity, request.origin, request.text)
    if item.reply_to is not None:
        router.send_multipart([*item.reply_to, json.dumps(reply).encode()])
    if item.on_published is not None:
        item.on_published()


def send_alert(
    endpoint: str,
    request: AlertRequest,
    timeout_s: float = 2.0,
    retries: int = 3,
) -> dict[str, Any]:
    """Send one alert to an alerts node and wait for its acknowledgement.

    A request that times out is sent again on a new socket with the same
    ``alert_id``; the node publishes it once.

    Raises:
        TimeoutError: No alerts node replied on ``endpoint``.
        ValueError: The node rejected the alert.
    """
    import uuid

    if request.alert_id is None:
        request.alert_id = f"cli-{uuid.uuid4().hex[:12]}"
    body = request.model_dump_json().encode()
    for attempt in range(1, retries + 1):
        socket = get_context().socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        try:
            socket.send_multipart([b"", body])
            if socket.poll(int(timeout_s * 1000), zmq.POLLIN):
                reply = json.loads(socket.recv_multipart()[-1])
                if not reply.get("ok"):
                    raise ValueError(f"alerts node rejected the alert: {reply.get('error')}")
                return reply
            log.warning("no reply from alerts node at %s (attempt %d/%d)", endpoint, attempt, retries)
        finally:
            socket.close(0)
    raise TimeoutError(
        f"no alerts node replied on {endpoint} after {retries} attempts; "
        "start one with 'scenewatch run CONFIG' or pass --endpoint"
    )


if __name__ == "__main__":
    standalone_main("alerts")
