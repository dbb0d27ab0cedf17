"""Run the models on one window and turn their outputs into a :class:`~pipeline.summary.Summary`.

:class:`WindowPerception` owns the models (CLIP, the HOG pedestrian detector
and tracker, YAMNet, the alert categoriser), the active alerts, the loudness
trend and the :class:`~pipeline.fusion.HazardFuser`. A model that cannot load
is left out and named in every summary's ``degraded`` list; the others run.

Example::

    perception = WindowPerception(PerceptionSettings())
    perception.add_alert(alert_message)            # when an alert arrives
    summary = perception.process(window, seq=0)    # when the windower closes a window
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.fusion import DEFAULT_FUSION_CONFIG, FusionConfig, HazardFuser, compose_sentence
from pipeline.messages import Alert, AudioChunk, Frame, MessageRejected
from pipeline.summary import ActiveAlertInfo, Summary, WindowSpan
from pipeline.windows import Window

__all__ = ["ClipSettings", "DetectorSettings", "AudioSettings", "AlertSettings", "PerceptionSettings", "WindowPerception"]

log = logging.getLogger(__name__)

FRAMES, AUDIO, ALERTS = "frames", "audio", "alerts"


class ClipSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    model: str = "openai/clip-vit-base-patch32"
    """Hugging Face id or local folder of a CLIP-family checkpoint."""
    concepts: Path | None = None
    """Concept prompts YAML; default configs/concepts.yaml."""
    pad_to_square: bool = False
    frames_per_window: int = Field(default=3, ge=1)
    dedup_threshold: float = Field(default=1.5, ge=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantize: bool = False
    device: str = "cpu"
    return_embedding: bool = False
    allow_download: bool = False
    """Let transformers fetch missing weights from the Hugging Face Hub (needs network)."""


class DetectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    upscale: float = Field(default=1.0, gt=0)
    """Enlarge frames before HOG; people under about 96 px tall need 1.5 to 2."""
    max_width: int = Field(default=960, gt=0)
    min_score: float = Field(default=0.5, ge=0)
    min_track_hits: int = Field(default=2, ge=1)
    """Detections must persist this many windows before they count as evidence."""


class AudioSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    model_path: Path | None = None
    """YAMNet ONNX file; default: the model store's copy (scenewatch models pull yamnet)."""
    mapping: Path | None = None
    trend_windows: int = Field(default=5, ge=2)
    trend_threshold_db_per_s: float = Field(default=1.5, gt=0)


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_embeddings: bool = True
    categories: Path | None = None


class PerceptionSettings(BaseModel):
    """Models and fusion rules of the fusion node."""

    model_config = ConfigDict(extra="forbid")

    fusion_config: Path = DEFAULT_FUSION_CONFIG
    clip: ClipSettings = Field(default_factory=ClipSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)


@dataclass
class _Loaded:
    clip: Any = None
    detector: Any = None
    audio: Any = None
    categorizer: Any = None
    unavailable: list[str] = field(default_factory=list)


def _load_models(settings: PerceptionSettings) -> _Loaded:
    loaded = _Loaded()
    # transformers draws a progress bar per checkpoint load, which garbles logs.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    if settings.clip.enabled:
        if not settings.clip.allow_download:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from pipeline.models.clip import ClipScorer, ClipUnavailableError

            kwargs: dict[str, Any] = {}
            if settings.clip.concepts is not None:
                kwargs["concepts_path"] = settings.clip.concepts
            loaded.clip = ClipScorer(
                model=settings.clip.model,
                pad_to_square=settings.clip.pad_to_square,
                device=settings.clip.device,
                frames_per_window=settings.clip.frames_per_window,
                dedup_threshold=settings.clip.dedup_threshold,
                dtype=settings.clip.dtype,
                quantize=settings.clip.quantize,
                **kwargs,
            )
            log.info("CLIP %s loaded", settings.clip.model)
        except ClipUnavailableError as error:
            one_line = " ".join(str(error).split())
            log.warning("CLIP unavailable, running without it: %s", one_line)
            loaded.unavailable.append("model:clip")
    if settings.detector.enabled:
        from pipeline.models.detector import BoxTracker, PedestrianDetector

        loaded.detector = PedestrianDetector(
            upscale=settings.detector.upscale,
            max_width=settings.detector.max_width,
            min_score=settings.detector.min_score,
            tracker=BoxTracker(),
        )
    if settings.audio.enabled:
        from pipeline.models.audio import AudioEventClassifier
        from pipeline.models.store import ModelStoreError

        try:
            kwargs = {"mapping_path": settings.audio.mapping} if settings.audio.mapping else {}
            loaded.audio = AudioEventClassifier(model_path=settings.audio.model_path, **kwargs)
        except (ModelStoreError, FileNotFoundError) as error:
            log.warning("YAMNet unavailable, running without audio events: %s", error)
            loaded.unavailable.append("model:yamnet")
    from pipeline.models.alerts import AlertCategorizer

    kwargs = {"config_path": settings.alerts.categories} if settings.alerts.categories else {}
    loaded.categorizer = AlertCategorizer(use_embeddings=settings.alerts.use_embeddings, **kwargs)
    if loaded.categorizer.degraded:
        loaded.unavailable.append("model:text_embedder")
    return loaded


def window_audio(chunks: list[AudioChunk], start_ns: int, end_ns: int) -> tuple[np.ndarray, int, float]:
    """Cut the window's audio out of its chunks, by sample time.

    Returns:
        Mono float32 samples covering ``[start_ns, end_ns)`` (silence where no
        chunk covers), the sample rate in Hz, and the covered fraction, 0 to 1.
    """
    rate = chunks[0].header.audio.sample_rate  # type: ignore[union-attr]
    length = round((end_ns - start_ns) * rate / 1e9)
    out = np.zeros(length, dtype=np.float32)
    covered = np.zeros(length, dtype=bool)
    for chunk in chunks:
        info = chunk.header.audio
        if info is None or info.sample_rate != rate:
            continue
        samples = chunk.float32().mean(axis=1)
        offset = round((chunk.header.capture_ns - start_ns) * rate / 1e9)
        first, last = max(0, offset), min(length, offset + len(samples))
        if last > first:
            out[first:last] = samples[first - offset : last - offset]
            covered[first:last] = True
    return out, rate, float(covered.mean()) if length else 0.0


def _spread(items: list[Any], count: int) -> list[Any]:
    """Pick up to ``count`` items spread evenly over the list, in order."""
    if len(items) <= count:
        return items
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(positions.tolist()))]


class WindowPerception:
    """Models, active alerts and hazard fusion for a stream of windows.

    Args:
        settings: Which models to run and the fusion rules.
        expected: Streams a window should contain; missing ones are named in ``degraded``.
        live: The capture clock is this host's monotonic clock, so latency from the window's end is meaningful.
    """

    def __init__(self, settings: PerceptionSettings, expected: list[str] | None = None, live: bool = True) -> None:
        from pipeline.models.alerts import ActiveAlerts
        from pipeline.models.audio import LoudnessTrend

        self.settings = settings
        self.expected = expected if expected is not None else [FRAMES, AUDIO]
        self.live = live
        self.fusion_config = FusionConfig.load(settings.fusion_config)
        self.fuser = HazardFuser(self.fusion_config)
        self.models = _load_models(settings)
        self.active_alerts = ActiveAlerts()
        self.loudness = LoudnessTrend(
            window_count=settings.audio.trend_windows, threshold_db_per_s=settings.audio.trend_threshold_db_per_s
        )
        self._wall_offset_ns: int | None = None
        self._previous_clip: dict[str, float] = {}

    @property
    def unavailable(self) -> list[str]:
        return list(self.models.unavailable)

    def add_alert(self, alert: Alert) -> None:
        """Categorise an alert and keep it active until its expiry."""
        info = alert.info
        category = self.models.categorizer.categorize(alert.text, declared_category=info.category if info.category else None)
        expires_ns = alert.header.capture_ns + round(info.expires_s * 1e9) if info.expires_s else None
        added = self.active_alerts.add(
            info.alert_id,
            alert.text,
            info.severity,
            category,
            capture_ns=alert.header.capture_ns,
            expires_ns=expires_ns,
            default_ttl_s=self.fusion_config.alert_default_ttl_s,
        )
        if added:
            log.info("alert %s categorised as %s (%s, %.2f): %s", info.alert_id, category.category, category.method, category.confidence, alert.text)

    def process(self, window: Window, seq: int) -> Summary:
        """Run the models on a closed window and return its summary."""
        began = time.perf_counter()
        stage_ms: dict[str, float] = {}
        scores: dict[str, dict[str, float]] = {}
        top_labels: dict[str, list[tuple[str, float]]] = {}
        trends: dict[str, str] = {}
        degraded = [f"missing:{name}" for name in window.missing] + [f"stale:{name}" for name in window.stale if name not in window.missing]
        degraded += self.models.unavailable
        embedding = None

        frames = [entry[2] for entry in window.stream(FRAMES) if isinstance(entry[2], Frame)]
        for message in (frames[-1:] or []) + [entry[2] for entry in window.stream(AUDIO)][-1:]:
            self._wall_offset_ns = message.header.capture_wall_ns - message.header.capture_ns
        if frames:
            embedding = self._vision(frames, scores, top_labels, trends, stage_ms, degraded)

        chunks = [entry[2] for entry in window.stream(AUDIO) if isinstance(entry[2], AudioChunk)]
        dbfs = None
        if chunks and self.models.audio is not None:
            dbfs = self._audio(chunks, window, scores, top_labels, trends, stage_ms, degraded)

        # A window covers [start_ns, end_ns): an alert captured at end_ns
        # belongs to the next window, so alerts are taken at the last nanosecond inside.
        last_ns = window.end_ns - 1
        self._alerts(last_ns, scores, top_labels)
        alerts = [
            ActiveAlertInfo(
                alert_id=active.alert_id,
                text=active.text,
                severity=active.severity,
                category=active.category,
                hazard_kind=active.hazard_kind,
                expires_ns=active.expires_ns,
            )
            for active in self.active_alerts.active(last_ns)
        ]

        fuse_began = time.perf_counter()
        hazards = self.fuser.update(scores, window.end_ns, trends)
        sentence = compose_sentence(hazards, self.fusion_config)
        stage_ms["fusion"] = (time.perf_counter() - fuse_began) * 1000

        offset = self._wall_offset_ns
        summary = Summary(
            seq=seq,
            window=WindowSpan(
                index=window.index,
                start_ns=window.start_ns,
                end_ns=window.end_ns,
                start_wall_ns=window.start_ns + offset if offset is not None else None,
                end_wall_ns=window.end_ns + offset if offset is not None else None,
                closed_by=window.closed_by,
            ),
            sentence=sentence,
            hazards=hazards,
            top_labels=top_labels,
            active_alerts=alerts,
            loudness_dbfs=round(dbfs, 2) if dbfs is not None else None,
            degraded=sorted(set(degraded)),
            latency_ms=round((time.monotonic_ns() - window.end_ns) / 1e6, 2) if self.live else None,
            processing_ms=round((time.perf_counter() - began) * 1000, 2),
            image_embedding=embedding,
            counts={name: len(entries) for name, entries in window.items.items()},
            stage_ms={name: round(value, 2) for name, value in stage_ms.items()},
        )
        return summary

    def _vision(self, frames: list[Frame], scores: dict, top_labels: dict, trends: dict, stage_ms: dict, degraded: list[str]) -> list[float] | None:
        clip_settings = self.settings.clip
        began = time.perf_counter()
        picked = _spread(frames, max(clip_settings.frames_per_window, 1))
        images = []
        for frame in picked:
            try:
                images.append(frame.bgr())
            except MessageRejected as error:
                log.warning("frame seq %d from %s not decoded: %s", frame.header.seq, frame.header.source, error)
        stage_ms["decode"] = (time.perf_counter() - began) * 1000
        if not images:
            degraded.append("missing:frames")
            return None

        embedding = None
        if self.models.clip is not None:
            began = time.perf_counter()
            result = self.models.clip.score(images, return_embedding=clip_settings.return_embedding)
            stage_ms["clip"] = (time.perf_counter() - began) * 1000
            scores["clip"] = dict(result.probabilities)
            top_labels["vision"] = [(label, round(score, 4)) for label, score in result.top_labels]
            embedding = result.image_embedding

        if self.models.detector is not None:
            began = time.perf_counter()
            detection = self.models.detector.update(images[-1])
            stage_ms["detector"] = (time.perf_counter() - began) * 1000
            steady_tracks = [track for track in detection.tracks if track.hits >= self.settings.detector.min_track_hits]
            scores["detector"] = {"person": detection.pedestrian_score if steady_tracks else 0.0}
            if steady_tracks:
                top_labels.setdefault("vision", []).append(("person (detector)", round(detection.pedestrian_score, 4)))
                ranked = {"approaching": 2, "receding": 1, "steady": 0}
                trends["pedestrian"] = max((track.trend for track in steady_tracks), key=lambda trend: ranked.get(trend, 0))
        if "pedestrian" not in trends and "clip" in scores:
            trends["pedestrian"] = self._clip_trend("pedestrian", scores["clip"])
        return embedding

    def _clip_trend(self, kind: str, probabilities: dict[str, float]) -> str:
        """Rising CLIP support over consecutive windows reads as approaching."""
        current = sum(probabilities.get(name, 0.0) for name in (kind, f"{kind}_on_crosswalk"))
        previous = self._previous_clip.get(kind)
        self._previous_clip[kind] = current
        if previous is None:
            return "unknown"
        if current > previous * 1.15:
            return "approaching"
        if current < previous / 1.15:
            return "receding"
        return "steady"

    def _audio(self, chunks: list[AudioChunk], window: Window, scores: dict, top_labels: dict, trends: dict, stage_ms: dict, degraded: list[str]) -> float:
        samples, rate, coverage = window_audio(chunks, window.start_ns, window.end_ns)
        if coverage < 0.5:
            degraded.append("partial:audio")
        began = time.perf_counter()
        result = self.models.audio.classify(samples, rate)
        stage_ms["yamnet"] = (time.perf_counter() - began) * 1000
        scores["yamnet"] = dict(result.events)
        top_labels["audio"] = [(label, round(score, 4)) for label, score in result.top_labels]
        trends["emergency_vehicle"] = self.loudness.update(window.end_ns, result.dbfs)
        trends["vehicle_horn"] = "unknown"
        return result.dbfs

    def _alerts(self, at_ns: int, scores: dict, top_labels: dict) -> None:
        severity_scores = self.fusion_config.alert_severity_scores
        alert_scores: dict[str, float] = {}
        for active in self.active_alerts.active(at_ns):
            result = active.category_result
            # An explicit alert counts mostly by its severity; the categoriser's
            # confidence only trims it, by at most a quarter.
            score = severity_scores.get(active.severity, 0.6) * (0.75 + 0.25 * result.confidence)
            alert_scores[result.category] = max(alert_scores.get(result.category, 0.0), score)
        if alert_scores:
            scores["alert"] = alert_scores
            top_labels["alert"] = sorted(((name, round(value, 4)) for name, value in alert_scores.items()), key=lambda item: -item[1])
