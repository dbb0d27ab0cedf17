"""Fusion node: window frames, audio chunks and alerts by capture time, run the models, publish summaries.

Inputs (names in the graph's ``inputs``): ``frames``, ``audio`` and
``alerts``, any of which may be absent. Output: ``summary``, one JSON
:class:`~pipeline.summary.Summary` per window.

Live (``processing_time: true``, the default) windows also close by the host
clock, so a stalled stream never holds the pipeline. Replays set
``processing_time: false`` and a ``flow`` endpoint: the node then grants the
replayer one message of credit at a time, which keeps the arrival order
equal to the capture order across topics, and stops after the replayer's
END report once every announced message has arrived. Summaries of a replay
therefore do not depend on machine speed.

Graph entry::

    - id: fusion
      node: fusion
      inputs: {frames: camera, audio: audio, alerts: alerts}
      outputs: {summary: summary}
      params:
        window: {length_s: 1.0, hop_s: 0.5, allowed_lateness_s: 0.3}
        perception: {clip: {model: openai/clip-vit-base-patch32}}
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.messages import Alert, AudioChunk, Frame, Message
from pipeline.node import NodeContext, standalone_main
from pipeline.perception import PerceptionSettings, WindowPerception
from pipeline.summary import format_summary
from pipeline.windows import Window, Windower

__all__ = ["Params", "WindowParams", "run", "OUTPUTS", "FusionNode"]

log = logging.getLogger(__name__)

OUTPUTS = ("summary",)

END_GRACE_S = 3.0
"""After a replay's END report, how long fusion waits for messages still on their way, in seconds."""


class WindowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length_s: float = Field(default=1.0, gt=0)
    hop_s: float = Field(default=0.5, gt=0)
    allowed_lateness_s: float = Field(default=0.3, ge=0)
    stale_after_s: float = Field(default=2.0, gt=0)


class Params(BaseModel):
    """Fusion node parameters."""

    model_config = ConfigDict(extra="forbid")

    window: WindowParams = Field(default_factory=WindowParams)
    perception: PerceptionSettings = Field(default_factory=PerceptionSettings)
    expected: list[str] | None = None
    """Continuous inputs a window waits for; default: the configured frames and audio inputs."""
    processing_time: bool = True
    """Close windows by the host clock too (live capture). Replays set False."""
    flow: str | None = None
    """Replayer flow-control endpoint: take one message at a time and stop at the replay's end."""
    print_summaries: bool = False
    """Also log each summary sentence at INFO."""
    summary_log: Path | None = None
    """Append every summary as a JSON line to this file."""


class FusionNode:
    """The node loop: route messages, close windows, publish summaries."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.params: Params = node.params
        inputs = node.config.inputs
        self.topic_to_input = {topic: name for name, topic in inputs.items()}
        expected = self.params.expected or [name for name in ("frames", "audio") if name in inputs]
        self.windower = Windower(
            expected,
            length_s=self.params.window.length_s,
            hop_s=self.params.window.hop_s,
            allowed_lateness_s=self.params.window.allowed_lateness_s,
            stale_after_s=self.params.window.stale_after_s,
            processing_time=self.params.processing_time,
        )
        self.perception = WindowPerception(self.params.perception, expected=expected, live=self.params.processing_time)
        self.publisher = node.publisher("summary")
        self.subscriber = node.subscriber()
        self.seq = 0
        self.received: dict[str, int] = {name: 0 for name in inputs}
        self.flow = None
        self._last_message = time.monotonic()
        self._summary_file = open(self.params.summary_log, "a", encoding="utf-8") if self.params.summary_log else None  # noqa: SIM115
        log.info("fusion: windows of %.2f s every %.2f s, waiting for %s", self.params.window.length_s, self.params.window.hop_s, ", ".join(expected) or "nothing")
        if self.perception.unavailable:
            log.warning("fusion: running degraded, without %s", ", ".join(self.perception.unavailable))

    def run(self) -> None:
        if self.params.flow:
            from pipeline.replay import FlowControl

            self.flow = FlowControl(self.params.flow)
            # Give the subscriptions time to reach the replayer's publishers
            # before the first credit lets it send.
            time.sleep(0.3)
            self.flow.grant(1)
        try:
            while not self.node.stopped:
                message = self.subscriber.recv(timeout_s=0.05)
                if message is None:
                    self._publish(self.windower.poll())
                    if self.flow is not None and self._replay_finished():
                        break
                    continue
                self._last_message = time.monotonic()
                self._route(message)
                if self.flow is not None:
                    self.flow.grant(1)
        finally:
            if self.flow is not None:
                # A replay's last windows hold data; a live stop drops the open ones.
                self._publish(self.windower.flush())
            if self.flow is not None:
                self.flow.close()
            if self._summary_file is not None:
                self._summary_file.close()
            log.info("fusion: stopped after %d summaries; late messages %s", self.seq, dict(self.windower.late))

    def _replay_finished(self) -> bool:
        assert self.flow is not None
        report = self.flow.poll_end()
        if report is None:
            return False
        sent: dict[str, int] = report.get("sent", {})
        if all(self.received.get(self.topic_to_input.get(topic, topic), 0) >= count for topic, count in sent.items()):
            return True
        if time.monotonic() - self._last_message > END_GRACE_S:
            log.warning(
                "fusion: replay ended with messages missing (sent %s, received %s); closing after %.0f s without data",
                sent,
                self.received,
                END_GRACE_S,
            )
            return True
        return False

    def _route(self, message: Message) -> None:
        name = self.topic_to_input.get(message.topic)
        if name is None:
            return
        self.received[name] = self.received.get(name, 0) + 1
        header = message.header
        if isinstance(message, Alert):
            self.perception.add_alert(message)
            closed = self.windower.add("alerts", header.capture_ns, header.capture_ns, message)
        elif isinstance(message, AudioChunk):
            end_ns = header.capture_ns + round(message.duration_s * 1e9)
            closed = self.windower.add(name, header.capture_ns, end_ns, message)
        elif isinstance(message, Frame):
            closed = self.windower.add(name, header.capture_ns, header.capture_ns, message)
        else:
            return
        self._publish(closed)

    def _publish(self, windows: list[Window]) -> None:
        for window in windows:
            summary = self.perception.process(window, self.seq)
            body = summary.to_json().encode()
            self.publisher.send_json("summary", body, capture_ns=window.end_ns, capture_wall_ns=summary.window.end_wall_ns or time.time_ns())
            self.seq += 1
            if self._summary_file is not None:
                self._summary_file.write(body.decode() + "\n")
                self._summary_file.flush()
            if self.params.print_summaries:
                log.info("%s", format_summary(summary))
            budget_ms = self.params.window.hop_s * 1000
            if summary.processing_ms and summary.processing_ms > budget_ms:
                log.warning("fusion: window %d took %.0f ms, more than the %.0f ms hop", window.index, summary.processing_ms, budget_ms)


def run(node: NodeContext) -> None:
    """Fuse until stopped (live) or until the replay has ended (with ``flow``)."""
    FusionNode(node).run()


if __name__ == "__main__":
    standalone_main("fusion")
