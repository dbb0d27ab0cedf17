"""The built-in demo drive: a synthetic scene that exercises every modality.

:func:`generate_demo` draws and writes, deterministically:

- ``demo_drive.mp4``: a road seen from a dashcam, lane marks moving toward
  the viewer, a zebra crossing; a pedestrian walks onto the crossing and
  grows as the car closes in; an emergency vehicle with flashing red and
  blue lights appears far ahead and approaches.
- ``demo_drive.wav``: engine noise all along, and a wailing siren whose level
  rises and whose pitch is raised by the Doppler effect while it approaches.
- ``demo_alerts.jsonl``: one road-work alert.

``scenewatch demo`` generates these into ``recordings/`` when missing and
replays them through the full pipeline (replay, fusion, summaries).

Example::

    >>> from pathlib import Path
    >>> paths = generate_demo(Path("/tmp/demo"), duration_s=2.0)
    >>> sorted(p.name for p in paths.values())
    ['demo_alerts.jsonl', 'demo_drive.mp4', 'demo_drive.wav']
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

__all__ = ["DemoScript", "generate_demo", "draw_frame", "synthesize_audio", "demo_paths"]

log = logging.getLogger(__name__)

SPEED_OF_SOUND_M_S = 343.0


@dataclass(frozen=True)
class DemoScript:
    """Timing of the demo's events, in seconds from the start."""

    duration_s: float = 12.0
    fps: int = 15
    width: int = 640
    height: int = 360
    sample_rate: int = 16_000
    pedestrian_start_s: float = 1.0
    pedestrian_end_s: float = 9.0
    siren_start_s: float = 3.0
    siren_closest_s: float = 10.0
    """The emergency vehicle passes closest at this time; before it, it approaches."""
    siren_speed_m_s: float = 20.0
    alert_offset_s: float = 4.0
    alert_text: str = "Road work ahead, right lane closed"


def demo_paths(folder: Path) -> dict[str, Path]:
    """Return where the demo's video, audio and alerts files live in ``folder``."""
    return {
        "video": folder / "demo_drive.mp4",
        "audio": folder / "demo_drive.wav",
        "alerts": folder / "demo_alerts.jsonl",
    }


def _draw_person(image: np.ndarray, center_x: int, feet_y: int, height: int, phase: float) -> None:
    """Draw a walking figure, feet at ``feet_y``, about ``height`` pixels tall."""
    head = max(2, int(height * 0.065))
    shoulders = feet_y - height + 2 * head + 2
    hips = feet_y - int(height * 0.47)
    stride = int(height * 0.12 * math.sin(phase))
    shirt, trousers, skin = (60, 50, 150), (40, 40, 60), (90, 110, 150)
    cv2.circle(image, (center_x, feet_y - height + head), head, skin, -1)
    cv2.ellipse(image, (center_x, (shoulders + hips) // 2), (max(2, int(height * 0.09)), max(2, (hips - shoulders) // 2)), 0, 0, 360, shirt, -1)
    leg = max(1, int(height * 0.07))
    cv2.line(image, (center_x, hips), (center_x - stride, feet_y), trousers, leg)
    cv2.line(image, (center_x, hips), (center_x + stride, feet_y), trousers, leg)
    arm = max(1, int(height * 0.05))
    cv2.line(image, (center_x - int(height * 0.08), shoulders + 5), (center_x - int(height * 0.1) + stride // 2, hips + 10), shirt, arm)
    cv2.line(image, (center_x + int(height * 0.08), shoulders + 5), (center_x + int(height * 0.1) - stride // 2, hips + 10), shirt, arm)


def draw_frame(script: DemoScript, t: float) -> np.ndarray:
    """Draw the BGR frame at ``t`` seconds."""
    w, h = script.width, script.height
    horizon = int(h * 0.42)
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:horizon] = (215, 180, 130)  # sky
    image[horizon:] = (95, 140, 95)  # verge
    road = np.array([[w * 0.46, horizon], [w * 0.54, horizon], [w * 1.05, h], [-w * 0.05, h]], dtype=np.int32)
    cv2.fillPoly(image, [road], (95, 95, 95))

    # Lane marks move toward the viewer: depth z in (0, 1], 1 at the bottom.
    for k in range(12):
        z = ((k / 12.0) + t * 0.35) % 1.0
        z_far, z_near = z, min(1.0, z + 0.035)
        if z_near <= 0.02:
            continue
        y_far, y_near = horizon + (h - horizon) * z_far**2, horizon + (h - horizon) * z_near**2
        half_far, half_near = 1 + 3 * z_far, 1 + 3 * z_near
        mark = np.array([[w / 2 - half_far, y_far], [w / 2 + half_far, y_far], [w / 2 + half_near, y_near], [w / 2 - half_near, y_near]], dtype=np.int32)
        cv2.fillPoly(image, [mark], (235, 235, 235))

    # The crossing comes closer as the car drives toward it.
    progress = min(1.0, t / script.duration_s)
    crossing_z = 0.55 + 0.35 * progress
    crossing_y = int(horizon + (h - horizon) * crossing_z**2)
    band = max(6, int(60 * crossing_z))
    left, right = int(w * (0.5 - 0.55 * crossing_z)), int(w * (0.5 + 0.55 * crossing_z))
    stripe = max(4, int(22 * crossing_z))
    for x in range(left, right, 2 * stripe):
        cv2.rectangle(image, (x, crossing_y - band), (x + stripe, crossing_y), (245, 245, 245), -1)

    # The emergency vehicle approaches down the road from the horizon.
    if t >= script.siren_start_s:
        approach = min(1.0, (t - script.siren_start_s) / (script.siren_closest_s - script.siren_start_s))
        size = int(18 + 90 * approach**1.5)
        cx, base = int(w * 0.54 + 0.1 * w * approach), int(horizon + 6 + (h - horizon) * 0.45 * approach**1.5)
        cv2.rectangle(image, (cx - size, base - size), (cx + size, base), (235, 235, 235), -1)
        cv2.rectangle(image, (cx - size, base - size // 2), (cx + size, base - size // 3), (40, 40, 220), -1)
        bar = max(3, size // 5)
        flash = int(t * 6) % 2 == 0
        cv2.rectangle(image, (cx - size, base - size - bar), (cx, base - size), (0, 0, 255) if flash else (60, 0, 0), -1)
        cv2.rectangle(image, (cx, base - size - bar), (cx + size, base - size), (80, 0, 0) if flash else (255, 80, 0), -1)

    # The pedestrian walks from the right kerb onto the crossing, growing as the car nears.
    if script.pedestrian_start_s <= t <= script.pedestrian_end_s:
        walk = (t - script.pedestrian_start_s) / (script.pedestrian_end_s - script.pedestrian_start_s)
        height = int(110 + 110 * walk)
        center_x = int(w * (0.82 - 0.32 * walk))
        _draw_person(image, center_x, min(h - 4, crossing_y + 4), height, phase=t * 6.0)
    return image


def synthesize_audio(script: DemoScript, seed: int = 7) -> np.ndarray:
    """Return mono float32 samples: engine noise, plus an approaching Doppler-shifted siren."""
    rate = script.sample_rate
    t = np.arange(int(script.duration_s * rate)) / rate
    rng = np.random.default_rng(seed)

    engine = sum(0.05 / k * np.sin(2 * np.pi * 38.0 * k * t + k) for k in range(1, 6))
    noise = rng.standard_normal(len(t)).astype(np.float64)
    kernel = np.ones(40) / 40.0  # a crude low-pass for road rumble
    engine = engine + 0.08 * np.convolve(noise, kernel, mode="same")

    # Siren: a wail sweeping 700-1500 Hz every 4 s. The source drives toward
    # the listener at siren_speed_m_s, so its distance shrinks and the heard
    # pitch is raised by c / (c - v) until the closest point.
    heard = t >= script.siren_start_s
    distance = np.maximum(15.0, script.siren_speed_m_s * (script.siren_closest_s - t))
    doppler = np.where(t < script.siren_closest_s, SPEED_OF_SOUND_M_S / (SPEED_OF_SOUND_M_S - script.siren_speed_m_s), 1.0)
    base_hz = 1100.0 + 400.0 * np.sin(2 * np.pi * t / 4.0)
    phase = 2 * np.pi * np.cumsum(base_hz * doppler) / rate
    siren = np.sin(phase) + 0.3 * np.sin(2 * phase)
    gain = np.where(heard, 15.0 / distance, 0.0) * 0.5
    fade_in = np.clip((t - script.siren_start_s) / 0.3, 0.0, 1.0)
    audio = engine + gain * fade_in * siren
    return (audio / max(1.0, np.abs(audio).max() / 0.9)).astype(np.float32)


def generate_demo(folder: Path, duration_s: float = 12.0) -> dict[str, Path]:
    """Write the demo's video, audio and alerts into ``folder``; return their paths.

    Raises:
        OSError: ``folder`` cannot be created or written.
    """
    import av

    script = DemoScript(duration_s=duration_s)
    folder.mkdir(parents=True, exist_ok=True)
    paths = demo_paths(folder)

    temporary = paths["video"].with_suffix(".tmp.mp4")
    with av.open(str(temporary), mode="w") as container:
        stream = container.add_stream("libx264", rate=script.fps)
        stream.width, stream.height, stream.pix_fmt = script.width, script.height, "yuv420p"
        stream.time_base = Fraction(1, script.fps)
        stream.options = {"crf": "23", "preset": "veryfast"}
        for index in range(int(duration_s * script.fps)):
            frame = av.VideoFrame.from_ndarray(draw_frame(script, index / script.fps), format="bgr24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    temporary.replace(paths["video"])

    sf.write(paths["audio"], synthesize_audio(script), script.sample_rate, subtype="PCM_16")
    alert = {"offset_s": script.alert_offset_s, "text": script.alert_text, "severity": "warning", "expires_s": 60}
    paths["alerts"].write_text(json.dumps(alert) + "\n", encoding="utf-8")
    log.info("demo drive written to %s (%.1f s)", folder, duration_s)
    return paths
