"""Log-mel front end for YAMNet, in numpy and scipy.

The features match the ones YAMNet was trained on. The audio is 16 kHz mono.
A magnitude STFT uses a 25 ms periodic Hann window, a 10 ms hop and a
512-point FFT. Then come 64 HTK mel bins from 125 Hz to 7500 Hz and
``log(mel + 0.001)``. Patches are 96 frames (0.96 s), taken every 48 frames
(0.48 s).

Example::

    import numpy as np
    from pipeline.models import melspec

    t = np.arange(44100) / 44100.0
    stereo = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32)
    patches = melspec.waveform_to_patches(stereo, sample_rate=44100)
    assert patches.shape == (2, 96, 64)
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.fft
import scipy.signal

__all__ = [
    "SAMPLE_RATE_HZ",
    "STFT_WINDOW_SAMPLES",
    "STFT_HOP_SAMPLES",
    "FFT_LENGTH",
    "MEL_BINS",
    "MEL_MIN_HZ",
    "MEL_MAX_HZ",
    "LOG_OFFSET",
    "PATCH_FRAMES",
    "PATCH_HOP_FRAMES",
    "MIN_WAVEFORM_SAMPLES",
    "to_mono",
    "resample",
    "hz_to_mel",
    "mel_weight_matrix",
    "mel_center_frequencies_hz",
    "pad_waveform",
    "log_mel_spectrogram",
    "frame_patches",
    "waveform_to_patches",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
STFT_WINDOW_SAMPLES = 400  # 25 ms at 16 kHz
STFT_HOP_SAMPLES = 160  # 10 ms at 16 kHz
FFT_LENGTH = 512  # next power of two above the window length
MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s of 10 ms frames
PATCH_HOP_FRAMES = 48  # 0.48 s

# One patch needs 96 frames, so 95 hops plus one window: 15600 samples (0.975 s).
MIN_WAVEFORM_SAMPLES = (PATCH_FRAMES - 1) * STFT_HOP_SAMPLES + STFT_WINDOW_SAMPLES
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * STFT_HOP_SAMPLES


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Downmix audio to one channel by averaging the channels.

    Args:
        samples: Audio shaped ``(frames,)`` or ``(frames, channels)``.

    Returns:
        A float32 array shaped ``(frames,)``.

    Raises:
        ValueError: If ``samples`` has more than two dimensions or no channels.
    """
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 1:
        return array
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(
            f"audio must be shaped (frames,) or (frames, channels), got shape {array.shape}"
        )
    return array.mean(axis=1, dtype=np.float32)


def resample(waveform: np.ndarray, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Resample a mono waveform with a polyphase filter (``scipy.signal.resample_poly``).

    Args:
        waveform: Mono float audio shaped ``(samples,)``.
        from_hz: Sample rate of ``waveform`` in Hz.
        to_hz: Target sample rate in Hz, 16000 by default.

    Returns:
        A float32 array at ``to_hz``; the input itself when the rates are equal.

    Raises:
        ValueError: If either rate is not a positive integer.
    """
    if int(from_hz) != from_hz or from_hz <= 0 or int(to_hz) != to_hz or to_hz <= 0:
        raise ValueError(
            f"sample rates must be positive integers in Hz, got {from_hz!r} -> {to_hz!r}"
        )
    if from_hz == to_hz:
        return np.asarray(waveform, dtype=np.float32)

    divisor = math.gcd(int(from_hz), int(to_hz))
    up = int(to_hz) // divisor
    down = int(from_hz) // divisor
    resampled = scipy.signal.resample_poly(np.asarray(waveform, dtype=np.float32), up, down)
    return resampled.astype(np.float32, copy=False)


def hz_to_mel(frequency_hz: np.ndarray | float) -> np.ndarray:
    """Convert frequencies in Hz to the HTK mel scale, ``1127 * ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(frequency_hz, dtype=np.float64) / 700.0)


def mel_weight_matrix(
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    num_mel_bins: int = MEL_BINS,
    lower_edge_hz: float = MEL_MIN_HZ,
    upper_edge_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """Build the matrix that maps STFT magnitude bins to mel bins.

    Each mel bin is a triangle in the mel domain with a peak weight of 1 and no
    area normalisation, and the DC bin gets no weight, as in YAMNet's front end.

    Args:
        num_spectrogram_bins: Number of STFT bins, ``fft_length // 2 + 1``.
        sample_rate_hz: Sample rate of the STFT input in Hz.
        num_mel_bins: Number of mel bins.
        lower_edge_hz: Lower edge of the lowest mel bin in Hz.
        upper_edge_hz: Upper edge of the highest mel bin in Hz.

    Returns:
        A float32 matrix shaped ``(num_spectrogram_bins, num_mel_bins)``.

    Raises:
        ValueError: If the band edges are not ``0 <= lower < upper <= Nyquist``.
    """
    nyquist_hz = sample_rate_hz / 2.0
    if not 0.0 <= lower_edge_hz < upper_edge_hz <= nyquist_hz:
        raise ValueError(
            f"mel band edges must satisfy 0 <= lower < upper <= {nyquist_hz} Hz, "
            f"got {lower_edge_hz} Hz and {upper_edge_hz} Hz"
        )

    bin_mels = hz_to_mel(np.linspace(0.0, nyquist_hz, num_spectrogram_bins))
    edges_mel = np.linspace(hz_to_mel(lower_edge_hz), hz_to_mel(upper_edge_hz), num_mel_bins + 2)
    lower, center, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]

    rising = (bin_mels[:, None] - lower) / (center - lower)
    falling = (upper - bin_mels[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights.astype(np.float32)


def mel_center_frequencies_hz(num_mel_bins: int = MEL_BINS) -> np.ndarray:
    """Return the centre frequency of each mel bin in Hz, shaped ``(num_mel_bins,)``."""
    edges_mel = np.linspace(hz_to_mel(MEL_MIN_HZ), hz_to_mel(MEL_MAX_HZ), num_mel_bins + 2)
    return 700.0 * np.expm1(edges_mel[1:-1] / 1127.0)


def pad_waveform(waveform: np.ndarray) -> np.ndarray:
    """Append silence (zero samples) so that the waveform fills whole patches.

    A waveform shorter than one patch (15600 samples, 0.975 s at 16 kHz) is
    extended to one patch. A longer one is extended so that its last patch hop
    of 0.48 s is complete. Padding happens here, in the waveform domain, so the
    padded frames get the log-mel value of silence, ``log(0.001)``.

    Args:
        waveform: Mono float audio at 16 kHz shaped ``(samples,)``.

    Returns:
        A float32 array with at least ``MIN_WAVEFORM_SAMPLES`` samples.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    num_samples = max(waveform.shape[0], MIN_WAVEFORM_SAMPLES)
    extra_hops = math.ceil((num_samples - MIN_WAVEFORM_SAMPLES) / PATCH_HOP_SAMPLES)
    target = MIN_WAVEFORM_SAMPLES + extra_hops * PATCH_HOP_SAMPLES

    if target == waveform.shape[0]:
        return waveform
    return np.pad(waveform, (0, target - waveform.shape[0]))


def log_mel_spectrogram(waveform: np.ndarray) -> np.ndarray:
    """Compute the stabilised log-mel spectrogram of a 16 kHz mono waveform.

    Args:
        waveform: Mono float audio at 16 kHz shaped ``(samples,)``.

    Returns:
        A float32 array shaped ``(frames, 64)`` with one frame per 10 ms hop,
        ``1 + (samples - 400) // 160`` frames, and none for fewer than 400 samples.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.shape[0] < STFT_WINDOW_SAMPLES:
        return np.zeros((0, MEL_BINS), dtype=np.float32)

    frames = np.lib.stride_tricks.sliding_window_view(waveform, STFT_WINDOW_SAMPLES)
    frames = frames[::STFT_HOP_SAMPLES]
    window = scipy.signal.get_window("hann", STFT_WINDOW_SAMPLES, fftbins=True).astype(np.float32)
    magnitude = np.abs(scipy.fft.rfft(frames * window, n=FFT_LENGTH, axis=1))

    mel = magnitude @ mel_weight_matrix()
    return np.log(mel + LOG_OFFSET).astype(np.float32)


def frame_patches(log_mel: np.ndarray) -> np.ndarray:
    """Cut a log-mel spectrogram into patches of 96 frames every 48 frames.

    Args:
        log_mel: Log-mel spectrogram shaped ``(frames, 64)``.

    Returns:
        A float32 array shaped ``(patches, 96, 64)``; no patches when there are
        fewer than 96 frames.
    """
    log_mel = np.asarray(log_mel, dtype=np.float32)
    if log_mel.shape[0] < PATCH_FRAMES:
        return np.zeros((0, PATCH_FRAMES, log_mel.shape[1]), dtype=np.float32)

    windows = np.lib.stride_tricks.sliding_window_view(log_mel, PATCH_FRAMES, axis=0)
    # sliding_window_view puts the window axis last: (patches, bins, frames).
    return np.ascontiguousarray(windows[::PATCH_HOP_FRAMES].transpose(0, 2, 1))


def waveform_to_patches(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Turn audio at any rate and channel count into YAMNet log-mel patches.

    The audio is downmixed to mono, resampled to 16 kHz and padded with silence
    in the waveform domain, so even a 0.1 s clip yields one full patch.

    Args:
        samples: Float audio in [-1, 1] shaped ``(frames,)`` or ``(frames, channels)``.
        sample_rate: Sample rate of ``samples`` in Hz.

    Returns:
        A float32 array shaped ``(patches, 96, 64)`` with at least one patch.

    Raises:
        ValueError: If ``samples`` has an invalid shape or ``sample_rate`` is not
            a positive integer.
    """
    waveform = resample(to_mono(samples), sample_rate, SAMPLE_RATE_HZ)
    padded = pad_waveform(waveform)
    logger.debug(
        "log-mel input: %d samples at %d Hz -> %d samples at 16 kHz after padding",
        len(samples),
        sample_rate,
        padded.shape[0],
    )
    return frame_patches(log_mel_spectrogram(padded))
