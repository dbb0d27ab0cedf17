"""Benchmark audio node: play a sound file as a microphone would, in real time, looping.

The file is mixed down to mono, resampled to ``sample_rate`` Hz and cut into
chunks of ``chunk_s`` seconds. Chunk ``k`` has ``capture_ns = origin + k *
chunk_s`` on the host monotonic clock (the time of its first sample) and is
published when its last sample would have been captured, ``chunk_s`` later.
Pacing is anchored to the origin, so timing errors do not add up.

Graph entry::

    - id: audio
      node: bench.audio_node
      outputs: {audio: audio}
      params: {path: ../shared/data/audio/siren_44k_stereo.wav}
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.node import NodeContext

__all__ = ["Params", "run", "OUTPUTS", "load_mono"]

log = logging.getLogger(__name__)

OUTPUTS = ("audio",)


class Params(BaseModel):
    """Audio node parameters."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    """Sound file to play (anything soundfile reads: WAV, FLAC)."""
    sample_rate: int = Field(default=16_000, gt=0)
    """Sample rate of the published chunks, in Hz."""
    chunk_s: float = Field(default=0.1, gt=0)
    """Chunk length, in seconds."""
    loop: bool = True
    """Start over at the end of the file; capture times keep increasing."""


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Read a sound file as mono float32 at ``sample_rate`` Hz.

    Raises:
        FileNotFoundError: The file does not exist.
    """
    import soundfile

    from pipeline.models.melspec import resample

    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return resample(samples.mean(axis=1), int(rate), sample_rate)


def run(node: NodeContext) -> None:
    """Publish chunks at real-time pace until stopped, or until the end of the file without ``loop``."""
    params: Params = node.params
    samples = load_mono(params.path, params.sample_rate)
    chunk_frames = max(1, round(params.chunk_s * params.sample_rate))
    chunk_ns = round(chunk_frames * 1e9 / params.sample_rate)
    publisher = node.publisher("audio")
    origin_ns = time.monotonic_ns()
    wall_offset_ns = time.time_ns() - origin_ns
    log.info("audio node: playing %s, %d samples at %d Hz, chunks of %d", params.path, len(samples), params.sample_rate, chunk_frames)

    index = 0
    position = 0
    while not node.stopped:
        if position + chunk_frames > len(samples):
            if not params.loop:
                break
            position = 0
        chunk = samples[position : position + chunk_frames]
        capture_ns = origin_ns + index * chunk_ns
        delay_s = (capture_ns + chunk_ns - time.monotonic_ns()) / 1e9
        if delay_s > 0 and node.wait(delay_s):
            break
        publisher.send_audio(chunk, params.sample_rate, capture_ns=capture_ns, capture_wall_ns=capture_ns + wall_offset_ns)
        publisher.poll(0.0)
        index += 1
        position += chunk_frames
    log.info("audio node: stopped after %d chunks", index)
