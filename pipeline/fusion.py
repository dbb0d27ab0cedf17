"""Fuse per-window model evidence into hazards, smooth them over time, and word a summary.

Fusion rule, per hazard kind and window (weights and thresholds in
``configs/fusion.yaml``):

1. Each evidence source configured for the kind contributes ``weight *
   score``, where ``score`` is the model's output in [0, 1]: a CLIP concept
   probability, the detector's pedestrian score, a YAMNet event score, or an
   active alert's score (its severity score times ``0.75 + 0.25 *`` the
   categoriser's confidence).
2. The contributions combine as a noisy OR: ``confidence = 1 - prod(1 -
   weight * score)``. Independent sources that agree raise the confidence;
   one strong source is enough on its own.
3. Hysteresis: a kind becomes active after ``min_on_windows`` consecutive
   windows at or above ``enter``, and ends after ``hold_windows`` consecutive
   windows below ``exit``. The reported confidence is an exponential moving
   average (factor ``smoothing``) while it stays active. A transient sound such
   as a horn uses ``min_on_windows: 1`` so it shows in the window where it
   sounds.
4. Wording: a hazard whose reported confidence is below ``plain_confidence``
   is worded "possible ...".

Example::

    >>> fuser = HazardFuser(FusionConfig.load())
    >>> hazards = fuser.update({"yamnet": {"emergency_vehicle": 0.9}}, window_end_ns=10**9)
    >>> [h.kind for h in hazards]
    ['emergency_vehicle']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.summary import Evidence, Hazard

__all__ = ["EvidenceSource", "HazardRule", "FusionConfig", "HazardFuser", "compose_sentence", "DEFAULT_FUSION_CONFIG"]

log = logging.getLogger(__name__)

DEFAULT_FUSION_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fusion.yaml"

MODALITY_OF_SOURCE = {"clip": "vision", "detector": "vision", "yamnet": "audio", "alert": "alert"}


class EvidenceSource(BaseModel):
    """One model output that supports a hazard kind."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["clip", "detector", "yamnet", "alert"]
    label: str
    """CLIP concept, detector label (``person``), YAMNet scene event, or alert category."""
    weight: float = Field(default=1.0, gt=0, le=1)
    qualifier: str | None = None
    """Word added to the sentence when this source is the strongest, for example ``crosswalk``."""


class HazardRule(BaseModel):
    """Evidence, thresholds and wording of one hazard kind."""

    model_config = ConfigDict(extra="forbid")

    label: str
    evidence: list[EvidenceSource] = Field(min_length=1)
    enter: float = Field(default=0.5, gt=0, le=1)
    exit: float = Field(default=0.3, ge=0, le=1)
    min_on_windows: int = Field(default=2, ge=1)
    hold_windows: int = Field(default=2, ge=1)
    smoothing: float = Field(default=0.5, gt=0, le=1)
    """Weight of the newest window in the reported confidence (1 = no smoothing)."""
    phrases: dict[str, str] = Field(default_factory=dict)
    """Sentence per trend (approaching, receding, steady, unknown); ``{label}`` and ``{qualifier}`` are filled in."""

    @model_validator(mode="after")
    def _check_thresholds(self) -> "HazardRule":
        if self.exit > self.enter:
            raise ValueError(f"exit threshold {self.exit} is above enter threshold {self.enter}; it must be lower or equal")
        return self


class FusionConfig(BaseModel):
    """Fusion settings: per-kind rules, alert scores and wording."""

    model_config = ConfigDict(extra="forbid")

    plain_confidence: float = Field(default=0.6, gt=0, le=1)
    """Below this confidence a hazard is worded 'possible'."""
    alert_severity_scores: dict[str, float] = Field(default_factory=lambda: {"info": 0.6, "warning": 0.8, "critical": 0.95})
    alert_default_ttl_s: float = Field(default=600.0, gt=0)
    """Lifetime of an alert that states no expiry, in seconds."""
    clear_sentence: str = "Clear road, no hazards detected."
    hazards: dict[str, HazardRule]

    @classmethod
    def load(cls, path: str | Path = DEFAULT_FUSION_CONFIG) -> "FusionConfig":
        """Read and validate a fusion YAML file.

        Raises:
            ValueError: The file is missing, not YAML, or invalid; the message names the key.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"fusion config {path} not found; the default is configs/fusion.yaml") from None
        except yaml.YAMLError as error:
            raise ValueError(f"fusion config {path} is not valid YAML: {error}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "top level"
            raise ValueError(f"fusion config {path}: {where}: {first['msg']}") from None


@dataclass
class _KindState:
    active: bool = False
    on_count: int = 0
    off_count: int = 0
    confidence: float = 0.0
    serial: int = 0
    since_ns: int = 0
    announced: bool = False


@dataclass
class HazardFuser:
    """Apply the fusion rule and the hysteresis of :class:`FusionConfig` window by window."""

    config: FusionConfig
    _states: dict[str, _KindState] = field(default_factory=dict)

    def update(
        self,
        scores: dict[str, dict[str, float]],
        window_end_ns: int,
        trends: dict[str, str] | None = None,
    ) -> list[Hazard]:
        """Fuse one window's scores and return the hazards to report.

        Args:
            scores: Per source (clip, detector, yamnet, alert), label -> score in [0, 1].
            window_end_ns: End of the window on the capture clock, in nanoseconds.
            trends: Per hazard kind, approaching, receding or steady, where known.

        Returns:
            Active hazards (state new or update) and hazards that ended in this window (state end).
        """
        trends = trends or {}
        reported: list[Hazard] = []
        for kind, rule in self.config.hazards.items():
            evidence, qualifier = self._evidence(rule, scores)
            raw = 1.0
            for item, source in evidence:
                raw *= 1.0 - source.weight * item.score
            raw = 1.0 - raw
            state = self._states.setdefault(kind, _KindState())
            hazard = self._step(kind, rule, state, raw, window_end_ns)
            if hazard is None:
                continue
            reported.append(
                Hazard(
                    kind=kind,
                    id=f"{kind}-{state.serial}",
                    state=hazard,
                    confidence=round(state.confidence, 4),
                    trend=trends.get(kind, "unknown"),  # type: ignore[arg-type]
                    qualifier=qualifier,
                    evidence=[item for item, _ in evidence if item.score > 0],
                    since_ns=state.since_ns,
                )
            )
        return reported

    @staticmethod
    def _evidence(rule: HazardRule, scores: dict[str, dict[str, float]]) -> tuple[list[tuple[Evidence, EvidenceSource]], str | None]:
        evidence: list[tuple[Evidence, EvidenceSource]] = []
        best_contribution, qualifier = 0.0, None
        for source in rule.evidence:
            score = scores.get(source.source, {}).get(source.label)
            if score is None:
                continue
            score = min(1.0, max(0.0, float(score)))
            evidence.append(
                (Evidence(modality=MODALITY_OF_SOURCE[source.source], source=source.source, label=source.label, score=round(score, 4)), source)
            )
            if source.weight * score > best_contribution:
                best_contribution = source.weight * score
                qualifier = source.qualifier
        return evidence, qualifier

    @staticmethod
    def _step(kind: str, rule: HazardRule, state: _KindState, raw: float, window_end_ns: int) -> str | None:
        """Advance one kind's hysteresis; return the state to report, or None."""
        if not state.active:
            state.on_count = state.on_count + 1 if raw >= rule.enter else 0
            if state.on_count < rule.min_on_windows:
                return None
            state.active = True
            state.serial += 1
            state.since_ns = window_end_ns
            state.confidence = raw
            state.off_count = 0
            log.info("hazard %s-%d started (confidence %.2f)", kind, state.serial, raw)
            return "new"

        state.confidence = rule.smoothing * raw + (1.0 - rule.smoothing) * state.confidence
        state.off_count = state.off_count + 1 if raw < rule.exit else 0
        if state.off_count >= rule.hold_windows:
            state.active = False
            state.on_count = 0
            log.info("hazard %s-%d ended", kind, state.serial)
            return "end"
        return "update"


def compose_sentence(hazards: list[Hazard], config: FusionConfig) -> str:
    """Word the active hazards as one sentence, in the order of the config's kinds.

    A hazard below ``plain_confidence`` is "possible"; hazards that ended are left out.
    """
    order = list(config.hazards)
    active = sorted((h for h in hazards if h.state != "end"), key=lambda h: order.index(h.kind) if h.kind in order else len(order))
    if not active:
        return config.clear_sentence
    phrases = []
    for hazard in active:
        rule = config.hazards.get(hazard.kind)
        label = rule.label if rule else hazard.kind.replace("_", " ")
        templates: dict[str, Any] = rule.phrases if rule else {}
        template = templates.get(hazard.trend) or templates.get("default") or "{label} ahead"
        qualifier = hazard.qualifier or ""
        if "{qualifier}" in template and not qualifier:
            template = templates.get(f"{hazard.trend}_plain") or templates.get("default") or "{label} ahead"
        phrase = template.format(label=label, qualifier=qualifier).strip()
        if hazard.confidence < config.plain_confidence:
            phrase = f"possible {phrase}"
        phrases.append(phrase)
    sentence = ", ".join(phrases)
    return sentence[0].upper() + sentence[1:] + "."
