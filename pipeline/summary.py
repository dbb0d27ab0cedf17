"""Scene summaries: the JSON document fusion publishes on the ``summary`` topic.

The schema is versioned (``SUMMARY_SCHEMA_VERSION``) and documented in
``docs/summaries.md``. Programs read summaries with :func:`subscribe`::

    from pipeline import subscribe

    for summary in subscribe("tcp://127.0.0.1:5553"):
        if summary.has_hazard("emergency_vehicle"):
            print(summary.sentence)

ZeroMQ reconnects by itself, so a fusion node that restarts simply resumes
the stream; :func:`subscribe` notes the new publisher session in the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SUMMARY_SCHEMA_VERSION",
    "Evidence",
    "Hazard",
    "WindowSpan",
    "ActiveAlertInfo",
    "Summary",
    "subscribe",
    "format_summary",
]

log = logging.getLogger(__name__)

SUMMARY_SCHEMA_VERSION = "1.0"

HAZARD_KINDS = (
    "pedestrian",
    "cyclist",
    "emergency_vehicle",
    "vehicle_horn",
    "construction_zone",
    "accident",
    "road_closure",
    "traffic_light_red",
    "stopped_traffic",
    "weather",
    "road_hazard",
)
"""Stable hazard kinds. New kinds may be added in a minor schema version."""


class Evidence(BaseModel):
    """One model's support for a hazard in this window."""

    model_config = ConfigDict(extra="ignore")

    modality: Literal["vision", "audio", "alert"]
    source: str
    """Model or input that produced it: clip, detector, yamnet, alert."""
    label: str
    score: float = Field(ge=0, le=1)


class Hazard(BaseModel):
    """A hazard that fusion reports, with its life cycle state."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    id: str
    """Stable while the hazard stays active: ``KIND-N``."""
    state: Literal["new", "update", "end"]
    confidence: float = Field(ge=0, le=1)
    """Smoothed fused confidence, 0 to 1."""
    trend: Literal["approaching", "receding", "steady", "unknown"] = "unknown"
    qualifier: str | None = None
    """Extra detail for the sentence, for example ``crosswalk`` for a pedestrian."""
    evidence: list[Evidence] = Field(default_factory=list)
    since_ns: int
    """Capture time at which the hazard became active, in nanoseconds."""


class WindowSpan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int
    start_ns: int
    """Window start on the capture clock, in nanoseconds."""
    end_ns: int
    start_wall_ns: int | None = None
    """Window start as Unix wall-clock time, in nanoseconds, from the capture headers."""
    end_wall_ns: int | None = None
    closed_by: str = "watermark"


class ActiveAlertInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    alert_id: str
    text: str
    severity: str
    category: str
    hazard_kind: str | None = None
    expires_ns: int


class Summary(BaseModel):
    """One window's scene summary: a sentence for people and structured evidence for programs."""

    model_config = ConfigDict(extra="ignore")

    schema_version: str = SUMMARY_SCHEMA_VERSION
    seq: int
    window: WindowSpan
    sentence: str
    hazards: list[Hazard] = Field(default_factory=list)
    top_labels: dict[str, list[tuple[str, float]]] = Field(default_factory=dict)
    """Per modality (vision, audio, alert), the highest model labels with scores."""
    active_alerts: list[ActiveAlertInfo] = Field(default_factory=list)
    loudness_dbfs: float | None = None
    degraded: list[str] = Field(default_factory=list)
    """Inputs and models this summary lacks: ``missing:audio``, ``stale:camera``, ``model:clip`` and the like."""
    latency_ms: float | None = None
    """Host time from the window's end to the summary, in milliseconds (see docs/summaries.md)."""
    processing_ms: float | None = None
    """Time spent on this window's models and fusion, in milliseconds."""
    stage_ms: dict[str, float] = Field(default_factory=dict)
    """Time per stage (decode, clip, detector, yamnet, fusion), in milliseconds."""
    image_embedding: list[float] | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    """Messages per stream in this window."""

    def has_hazard(self, kind: str, include_ended: bool = False) -> bool:
        """Return True when a hazard of ``kind`` is active (or just ended, with ``include_ended``)."""
        return any(h.kind == kind and (include_ended or h.state != "end") for h in self.hazards)

    def hazard(self, kind: str) -> Hazard | None:
        return next((h for h in self.hazards if h.kind == kind and h.state != "end"), None)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Summary":
        """Parse a summary.

        Raises:
            ValueError: The document is not a summary of a known major version.
        """
        raw: Any = json.loads(text)
        version = str(raw.get("schema_version", ""))
        if version.split(".")[0] != SUMMARY_SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"summary schema {version!r} is not {SUMMARY_SCHEMA_VERSION.split('.')[0]}.x")
        return cls.model_validate(raw)


def format_summary(summary: Summary) -> str:
    """Return one human-readable line: window time, sentence and hazard confidences."""
    seconds = summary.window.end_ns / 1e9
    details = ", ".join(
        f"{h.kind} {h.confidence:.2f}{' ' + h.trend if h.trend not in ('unknown', 'steady') else ''}"
        for h in summary.hazards
        if h.state != "end"
    )
    degraded = f"  [degraded: {', '.join(summary.degraded)}]" if summary.degraded else ""
    return f"[{seconds:10.2f} s] {summary.sentence}" + (f"  ({details})" if details else "") + degraded


def subscribe(endpoint: str, topic: str = "summary", timeout_s: float | None = None) -> Iterator[Summary]:
    """Yield summaries published on ``endpoint`` until the caller stops iterating.

    Args:
        endpoint: The fusion node's summary endpoint, for example ``tcp://127.0.0.1:5553``.
        topic: Topic name of the summaries.
        timeout_s: Stop after this many seconds without a summary; None waits forever.
    """
    from pipeline.transport import Subscriber, TopicSpec

    spec = TopicSpec(name=topic, endpoint=endpoint, policy="all", durability="volatile")
    session = None
    with Subscriber([spec]) as subscriber:
        while True:
            message = subscriber.recv(timeout_s=timeout_s)
            if message is None:
                return
            if message.header.session != session:
                if session is not None:
                    log.info("summary publisher on %s restarted (session %s)", endpoint, message.header.session)
                session = message.header.session
            try:
                yield Summary.from_json(bytes(message.payload))
            except ValueError as error:
                log.warning("dropped summary seq %d from %s: %s", message.header.seq, endpoint, error)
