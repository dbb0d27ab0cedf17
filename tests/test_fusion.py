"""Hazard fusion: the noisy OR, hysteresis, sentences, config errors, window audio, and a real replay.

The fuser tests feed model scores directly. The last group replays the
highway dashcam with the siren recording and a road-work alert through
:class:`~pipeline.sources.VideoFileSource`, the :class:`Windower` and
:class:`WindowPerception` with the real HOG detector, YAMNet and alert
categoriser. CLIP is absent offline, so those summaries are degraded by
``model:clip``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import shared_file
from pipeline.fusion import FusionConfig, HazardFuser, compose_sentence
from pipeline.messages import Alert, AudioChunk, Frame, decode, encode_audio
from pipeline.perception import PerceptionSettings, WindowPerception, window_audio
from pipeline.sources import DEFAULT_ORIGIN_NS, VideoFileSource
from pipeline.summary import Hazard, Summary
from pipeline.windows import Windower

S = 1_000_000_000
MS = 1_000_000


@pytest.fixture(scope="module")
def config() -> FusionConfig:
    return FusionConfig.load()


def rule_config(**rule: Any) -> FusionConfig:
    """Return a config with one kind, ``test``, fed by the YAMNet label ``event`` and the alert category ``event``."""
    settings = {
        "label": "test hazard",
        "evidence": [{"source": "yamnet", "label": "event"}, {"source": "alert", "label": "event"}],
        "enter": 0.5,
        "exit": 0.3,
        "min_on_windows": 2,
        "hold_windows": 2,
        "smoothing": 1.0,
        "phrases": {"default": "{label} ahead"},
    }
    return FusionConfig.model_validate({"hazards": {"test": {**settings, **rule}}})


def run_scores(fuser: HazardFuser, scores: list[float], source: str = "yamnet") -> list[tuple[str, str] | None]:
    """Feed one score per window and return ``(state, id)`` of kind ``test`` per window, or None."""
    states = []
    for index, score in enumerate(scores):
        hazards = fuser.update({source: {"event": score}}, window_end_ns=(index + 2) * 500 * MS)
        found = [(hazard.state, hazard.id) for hazard in hazards if hazard.kind == "test"]
        states.append(found[0] if found else None)
    return states


def hazard(kind: str, confidence: float, state: str = "new", trend: str = "unknown", qualifier: str | None = None) -> Hazard:
    return Hazard(kind=kind, id=f"{kind}-1", state=state, confidence=confidence, trend=trend, qualifier=qualifier, since_ns=0)


# ---------------------------------------------------------------- noisy OR


def test_noisy_or_two_half_sources(config: FusionConfig) -> None:
    fuser = HazardFuser(config)

    [emergency] = fuser.update({"yamnet": {"emergency_vehicle": 0.5}, "alert": {"emergency": 0.5}}, window_end_ns=S)

    assert emergency.kind == "emergency_vehicle"
    assert emergency.state == "new"
    assert emergency.confidence == pytest.approx(0.75)
    assert [(item.modality, item.source, item.score) for item in emergency.evidence] == [("audio", "yamnet", 0.5), ("alert", "alert", 0.5)]


def test_noisy_or_applies_weight(config: FusionConfig) -> None:
    fuser = HazardFuser(config)

    [emergency] = fuser.update({"clip": {"emergency_vehicle": 1.0}, "yamnet": {"emergency_vehicle": 0.5}}, window_end_ns=S)

    # yamnet at weight 1.0 and clip at weight 0.7: 1 - (1 - 0.5) * (1 - 0.7)
    assert emergency.confidence == pytest.approx(0.85)


def test_noisy_or_clips_scores_to_unit_range(config: FusionConfig) -> None:
    fuser = HazardFuser(config)

    [emergency] = fuser.update({"yamnet": {"emergency_vehicle": 1.7}}, window_end_ns=S)

    assert emergency.confidence == 1.0
    assert emergency.evidence[0].score == 1.0


# ---------------------------------------------------------------- hysteresis


def test_hysteresis_needs_min_on_windows() -> None:
    fuser = HazardFuser(rule_config(min_on_windows=2))

    states = run_scores(fuser, [0.6, 0.2, 0.6, 0.6])

    assert states == [None, None, None, ("new", "test-1")]


def test_hysteresis_ends_after_hold_windows() -> None:
    fuser = HazardFuser(rule_config(min_on_windows=1, hold_windows=2))

    states = run_scores(fuser, [0.6, 0.2, 0.4, 0.2, 0.2, 0.2])

    assert states == [("new", "test-1"), ("update", "test-1"), ("update", "test-1"), ("update", "test-1"), ("end", "test-1"), None]


def test_hysteresis_no_flicker_between_thresholds() -> None:
    fuser = HazardFuser(rule_config(enter=0.5, exit=0.3, min_on_windows=1, hold_windows=1))
    oscillating = [0.35, 0.45] * 4

    before_start = run_scores(fuser, oscillating)
    start = run_scores(fuser, [0.6])
    while_active = run_scores(fuser, oscillating)

    assert before_start == [None] * 8
    assert start == [("new", "test-1")]
    assert while_active == [("update", "test-1")] * 8


def test_hazard_id_stable_then_new_after_end() -> None:
    fuser = HazardFuser(rule_config(min_on_windows=1, hold_windows=1))

    states = run_scores(fuser, [0.9, 0.8, 0.1, 0.0, 0.9, 0.7])

    assert states == [("new", "test-1"), ("update", "test-1"), ("end", "test-1"), None, ("new", "test-2"), ("update", "test-2")]


def test_hazard_since_ns_is_start_window_end() -> None:
    fuser = HazardFuser(rule_config(min_on_windows=2))

    fuser.update({"yamnet": {"event": 0.9}}, window_end_ns=3 * S)
    [started] = fuser.update({"yamnet": {"event": 0.9}}, window_end_ns=3 * S + 500 * MS)
    [updated] = fuser.update({"yamnet": {"event": 0.9}}, window_end_ns=4 * S)

    assert started.since_ns == 3 * S + 500 * MS
    assert updated.since_ns == 3 * S + 500 * MS


def test_confidence_smoothed_while_active() -> None:
    fuser = HazardFuser(rule_config(min_on_windows=1, smoothing=0.5))

    [started] = fuser.update({"yamnet": {"event": 0.9}}, window_end_ns=S)
    [updated] = fuser.update({"yamnet": {"event": 0.5}}, window_end_ns=S + 500 * MS)

    assert started.confidence == pytest.approx(0.9)
    assert updated.confidence == pytest.approx(0.7)


def test_transient_horn_new_then_end(config: FusionConfig) -> None:
    fuser = HazardFuser(config)
    quiet = {"yamnet": {"vehicle_horn": 0.02, "emergency_vehicle": 0.01}}
    honk = {"yamnet": {"vehicle_horn": 0.9, "emergency_vehicle": 0.01}}

    windows = [fuser.update(scores, window_end_ns=(index + 2) * 500 * MS) for index, scores in enumerate([quiet, honk, quiet, quiet])]

    assert windows[0] == []
    assert [(h.kind, h.state, h.confidence) for h in windows[1]] == [("vehicle_horn", "new", 0.9)]
    assert [(h.kind, h.state) for h in windows[2]] == [("vehicle_horn", "end")]
    assert windows[3] == []
    assert compose_sentence(windows[1], config) == "Vehicle horn sounding."
    assert compose_sentence(windows[2], config) == config.clear_sentence


# ---------------------------------------------------------------- sentences


def test_sentence_possible_below_plain_confidence(config: FusionConfig) -> None:
    sentence = compose_sentence([hazard("emergency_vehicle", 0.59)], config)

    assert config.plain_confidence == 0.6
    assert sentence == "Possible emergency vehicle nearby."


def test_sentence_plain_at_plain_confidence(config: FusionConfig) -> None:
    assert compose_sentence([hazard("emergency_vehicle", 0.6)], config) == "Emergency vehicle nearby."
    assert compose_sentence([hazard("emergency_vehicle", 0.9, trend="approaching")], config) == "Emergency vehicle approaching."


def test_sentence_crosswalk_qualifier(config: FusionConfig) -> None:
    fuser = HazardFuser(config)
    scores = {"clip": {"pedestrian_on_crosswalk": 0.7, "pedestrian": 0.1}}

    first = fuser.update(scores, window_end_ns=S, trends={"pedestrian": "approaching"})
    second = fuser.update(scores, window_end_ns=S + 500 * MS, trends={"pedestrian": "approaching"})

    assert first == []
    assert [(h.kind, h.qualifier, h.trend) for h in second] == [("pedestrian", "crosswalk", "approaching")]
    assert compose_sentence(second, config) == "Pedestrian approaching crosswalk."


def test_sentence_without_qualifier_uses_plain_phrase(config: FusionConfig) -> None:
    sentence = compose_sentence([hazard("pedestrian", 0.8, trend="approaching")], config)

    assert sentence == "Pedestrian approaching."


def test_sentence_follows_config_order(config: FusionConfig) -> None:
    hazards = [hazard("construction_zone", 0.8), hazard("emergency_vehicle", 0.5)]

    sentence = compose_sentence(hazards, config)

    assert list(config.hazards).index("emergency_vehicle") < list(config.hazards).index("construction_zone")
    assert sentence == "Possible emergency vehicle nearby, construction zone ahead."


def test_sentence_clear_when_none_active(config: FusionConfig) -> None:
    assert compose_sentence([], config) == "Clear road, no hazards detected."
    assert compose_sentence([hazard("vehicle_horn", 0.9, state="end")], config) == "Clear road, no hazards detected."


# ---------------------------------------------------------------- config errors


def write_fusion_config(tmp_path: Path, pedestrian: dict[str, Any]) -> Path:
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml.safe_dump({"hazards": {"pedestrian": {"label": "pedestrian", **pedestrian}}}))
    return path


def test_config_rejects_exit_above_enter(tmp_path: Path) -> None:
    path = write_fusion_config(tmp_path, {"evidence": [{"source": "clip", "label": "pedestrian"}], "enter": 0.4, "exit": 0.5})

    with pytest.raises(ValueError) as raised:
        FusionConfig.load(path)

    assert str(raised.value).startswith(f"fusion config {path}: hazards.pedestrian: ")
    assert "exit threshold 0.5 is above enter threshold 0.4" in str(raised.value)


def test_config_rejects_unknown_source(tmp_path: Path) -> None:
    path = write_fusion_config(tmp_path, {"evidence": [{"source": "lidar", "label": "pedestrian"}]})

    with pytest.raises(ValueError) as raised:
        FusionConfig.load(path)

    assert str(raised.value) == (
        f"fusion config {path}: hazards.pedestrian.evidence.0.source: Input should be 'clip', 'detector', 'yamnet' or 'alert'"
    )


def test_config_rejects_unknown_key(tmp_path: Path) -> None:
    path = write_fusion_config(tmp_path, {"evidence": [{"source": "clip", "label": "pedestrian"}], "enter_threshold": 0.4})

    with pytest.raises(ValueError, match=r"hazards\.pedestrian\.enter_threshold: Extra inputs are not permitted"):
        FusionConfig.load(path)


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fusion config .*nothing.yaml not found"):
        FusionConfig.load(tmp_path / "nothing.yaml")


# ---------------------------------------------------------------- window audio


def audio_chunk(start_ns: int, samples: np.ndarray, sample_rate: int = 16_000, seq: int = 0) -> AudioChunk:
    parts = encode_audio(samples, sample_rate=sample_rate, topic="audio", source="test", seq=seq, capture_ns=start_ns, capture_wall_ns=start_ns)
    message = decode(parts)
    assert isinstance(message, AudioChunk)
    return message


def test_window_audio_cut_by_sample_time() -> None:
    sample_ns = S // 16_000
    early = audio_chunk(950 * MS, np.full(1_600, 0.25, dtype=np.float32))
    offset = audio_chunk(S + 810 * sample_ns, np.full(16, 0.75, dtype=np.float32), seq=1)

    samples, rate, coverage = window_audio([early, offset], S, 2 * S)

    assert rate == 16_000
    assert samples.shape == (16_000,)
    assert samples.dtype == np.float32
    assert samples[:800].tolist() == [0.25] * 800
    assert samples[800:810].tolist() == [0.0] * 10
    assert samples[810:826].tolist() == [0.75] * 16
    assert samples[826] == 0.0
    assert coverage == pytest.approx(816 / 16_000)


def test_window_audio_overlapping_chunk_replaces() -> None:
    sample_ns = S // 16_000
    first = audio_chunk(S, np.full(100, 0.25, dtype=np.float32))
    second = audio_chunk(S + 10 * sample_ns, np.full(16, 0.75, dtype=np.float32), seq=1)

    samples, _, _ = window_audio([first, second], S, 2 * S)

    assert samples[9] == 0.25
    assert samples[10:26].tolist() == [0.75] * 16
    assert samples[26] == 0.25


def test_window_audio_gap_is_silence_and_coverage() -> None:
    before = audio_chunk(950 * MS, np.full(1_600, 0.25, dtype=np.float32))
    stereo = np.tile(np.array([[8_192, 16_384]], dtype=np.int16), (3_200, 1))
    middle = audio_chunk(1_500 * MS, stereo, seq=1)

    samples, _, coverage = window_audio([before, middle], S, 2 * S)

    assert samples[:800].tolist() == [0.25] * 800
    assert not samples[800:8_000].any()
    assert samples[8_000:11_200].tolist() == [0.375] * 3_200
    assert not samples[11_200:].any()
    assert coverage == pytest.approx((800 + 3_200) / 16_000)


def test_window_audio_skips_other_sample_rate() -> None:
    chunk_16k = audio_chunk(S, np.full(8_000, 0.5, dtype=np.float32))
    chunk_44k = audio_chunk(1_500 * MS, np.full(22_050, 0.5, dtype=np.float32), sample_rate=44_100, seq=1)

    samples, rate, coverage = window_audio([chunk_16k, chunk_44k], S, 2 * S)

    assert rate == 16_000
    assert not samples[8_000:].any()
    assert coverage == pytest.approx(0.5)


# ---------------------------------------------------------------- real replay

SIREN_START_NS = DEFAULT_ORIGIN_NS
SIREN_END_NS = DEFAULT_ORIGIN_NS + 4 * S
ALERT_NS = DEFAULT_ORIGIN_NS + 2 * S


class Replay:
    """Summaries of one replay of the highway video with the siren and a road-work alert."""

    def __init__(self, perception: WindowPerception, summaries: list[Summary]) -> None:
        self.perception = perception
        self.summaries = summaries

    def inside(self, start_ns: int, end_ns: int) -> list[Summary]:
        return [s for s in self.summaries if s.window.start_ns >= start_ns and s.window.end_ns <= end_ns]


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    video = shared_file("video/highway_dashcam_960x540_25fps.mp4")
    siren = shared_file("audio/siren_44k_stereo.wav")
    alerts = tmp_path_factory.mktemp("alerts") / "roadwork.jsonl"
    alerts.write_text(json.dumps({"offset_s": 2.0, "text": "Road work ahead, right lane closed", "severity": "warning"}) + "\n")
    source = VideoFileSource(video, audio=siren, alerts=alerts)
    perception = WindowPerception(PerceptionSettings(), expected=["frames", "audio"], live=False)
    windower = Windower(["frames", "audio"], processing_time=False)

    summaries: list[Summary] = []
    for topic, header_bytes, payload in source:
        message = decode([topic.encode(), header_bytes, payload])
        header = message.header
        if isinstance(message, Alert):
            perception.add_alert(message)
            closed = windower.add("alerts", header.capture_ns, header.capture_ns, message)
        elif isinstance(message, AudioChunk):
            closed = windower.add("audio", header.capture_ns, header.capture_ns + round(message.duration_s * 1e9), message)
        else:
            assert isinstance(message, Frame)
            closed = windower.add("frames", header.capture_ns, header.capture_ns, message)
        summaries += [perception.process(window, len(summaries) + index) for index, window in enumerate(closed)]
    summaries += [perception.process(window, len(summaries) + index) for index, window in enumerate(windower.flush())]
    return Replay(perception, summaries)


@pytest.mark.slow
def test_replay_windows_on_grid(replay: Replay) -> None:
    ends = [s.window.end_ns for s in replay.summaries]

    assert replay.summaries[0].window.start_ns == DEFAULT_ORIGIN_NS - 500 * MS
    assert all(later - earlier == 500 * MS for earlier, later in zip(ends, ends[1:]))
    assert [s.seq for s in replay.summaries] == list(range(len(replay.summaries)))
    assert len(replay.summaries) == 19


@pytest.mark.slow
def test_replay_degraded_without_clip(replay: Replay) -> None:
    clip_missing = replay.perception.models.clip is None

    assert all(("model:clip" in s.degraded) == clip_missing for s in replay.summaries)
    assert all("model:yamnet" not in s.degraded for s in replay.summaries)


@pytest.mark.slow
def test_replay_siren_windows_have_emergency_vehicle(replay: Replay) -> None:
    inside = replay.inside(SIREN_START_NS, SIREN_END_NS)

    assert [s.window.start_ns for s in inside] == [SIREN_START_NS + k * 500 * MS for k in range(7)]
    assert all(s.has_hazard("emergency_vehicle") for s in inside)
    assert all(s.hazard("emergency_vehicle").id == "emergency_vehicle-1" for s in inside)
    assert {e.source for s in inside for e in s.hazard("emergency_vehicle").evidence} == {"yamnet"}


@pytest.mark.slow
def test_replay_emergency_vehicle_ends_after_hold(replay: Replay, config: FusionConfig) -> None:
    hold = config.hazards["emergency_vehicle"].hold_windows
    ended = [s for s in replay.summaries if any(h.kind == "emergency_vehicle" and h.state == "end" for h in s.hazards)]
    first_silent = next(s for s in replay.summaries if s.window.start_ns >= SIREN_END_NS)

    assert len(ended) == 1
    assert ended[0].window.index - first_silent.window.index == hold - 1
    assert all(s.has_hazard("emergency_vehicle") for s in replay.summaries if first_silent.seq <= s.seq < ended[0].seq)
    assert not any(s.has_hazard("emergency_vehicle") for s in replay.summaries if s.seq >= ended[0].seq)


@pytest.mark.slow
def test_replay_alert_gives_construction_zone(replay: Replay) -> None:
    after = [s for s in replay.summaries if s.window.end_ns > ALERT_NS]
    before = [s for s in replay.summaries if s.window.end_ns <= ALERT_NS]

    assert before and after
    assert not any(s.has_hazard("construction_zone") for s in before)
    assert all(s.has_hazard("construction_zone") for s in after)
    assert {s.hazard("construction_zone").id for s in after} == {"construction_zone-1"}
    assert [(a.category, a.severity) for a in after[0].active_alerts] == [("construction", "warning")]
    assert "construction zone ahead" in after[0].sentence


@pytest.mark.slow
def test_replay_loudness_only_with_audio(replay: Replay) -> None:
    with_audio = [s for s in replay.summaries if s.window.start_ns < SIREN_END_NS]
    without_audio = [s for s in replay.summaries if s.window.start_ns >= SIREN_END_NS]

    assert all(s.loudness_dbfs is not None and -40 < s.loudness_dbfs < -10 for s in with_audio)
    assert all(s.loudness_dbfs is None for s in without_audio)
    assert all("missing:audio" in s.degraded for s in without_audio)
    assert all("missing:audio" not in s.degraded for s in with_audio)


@pytest.mark.slow
def test_replay_stage_times_recorded(replay: Replay) -> None:
    with_audio = replay.inside(SIREN_START_NS, SIREN_END_NS)

    assert all({"decode", "detector", "yamnet", "fusion"} <= set(s.stage_ms) for s in with_audio)
    assert all(s.counts["frames"] == 25 for s in with_audio)
    assert all(s.latency_ms is None for s in replay.summaries)


@pytest.mark.slow
def test_replay_summary_json_round_trip(replay: Replay) -> None:
    for summary in replay.summaries:
        text = summary.to_json()

        assert Summary.from_json(text) == summary
        assert json.loads(text)["schema_version"] == "1.0"
