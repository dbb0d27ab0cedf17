"""Pedestrian boxes from camera frames with OpenCV's HOG people detector, tracked across windows.

`PedestrianDetector` runs the HOG + linear SVM people detector that ships with
OpenCV 4 (Dalal and Triggs, 64x128 pixel window) on one frame per window, removes
overlapping boxes with non-max suppression and returns boxes in the frame's own
pixel coordinates. `BoxTracker` links the boxes of successive windows by IoU and
classifies each pedestrian as approaching, receding or steady.

Example::

    detector = PedestrianDetector(upscale=2.0)
    result = detector.update(frame)  # the newest BGR uint8 frame of a window
    for track in result.tracks:
        print(track.id, track.trend, track.box)

The default SVM finds people about 96 pixels tall or taller (after ``upscale``
and the ``max_width`` downscale), so distant pedestrians in a 1280x720 dashcam
frame need ``upscale`` of 1.5 to 2.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "Box",
    "BoxTracker",
    "DetectionResult",
    "PedestrianDetector",
    "Track",
    "Trend",
]

logger = logging.getLogger(__name__)

Trend = Literal["approaching", "receding", "steady"]


class Box(NamedTuple):
    """Axis-aligned box in frame pixels: top-left corner, size, and detector score.

    ``score`` is the HOG SVM decision value (larger is more confident, 0 is the
    SVM's own boundary). It is not a probability.
    """

    x: float
    y: float
    w: float
    h: float
    score: float

    @property
    def center_x(self) -> float:
        """Horizontal centre in pixels."""
        return self.x + self.w / 2

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other``, in [0, 1]."""
        left = max(self.x, other.x)
        top = max(self.y, other.y)
        right = min(self.x + self.w, other.x + other.w)
        bottom = min(self.y + self.h, other.y + other.h)
        intersection = max(0.0, right - left) * max(0.0, bottom - top)
        union = self.w * self.h + other.w * other.h - intersection
        return intersection / union if union > 0 else 0.0


@dataclass
class Track:
    """One pedestrian followed across windows.

    Attributes:
        id: integer that stays the same while the track lives. Ids are not reused.
        box: the box matched in the latest update.
        trend: "approaching", "receding" or "steady", as `BoxTracker` defines them.
        hits: number of updates in which a box was matched to this track.
        misses: consecutive updates without a match (0 for tracks that `BoxTracker.update` returns).
    """

    id: int
    box: Box
    trend: Trend
    hits: int
    misses: int = 0
    history: deque[Box] = field(default_factory=deque, repr=False)


@dataclass
class DetectionResult:
    """Pedestrian evidence for one window.

    Attributes:
        boxes: detections after non-max suppression, highest score first, in
            pixels of the frame that was passed in.
        tracks: tracks matched in this window.
        pedestrian_score: ``1 - exp(-s)`` of the highest box score ``s``, in
            [0, 1), and 0.0 without boxes. It rises with detector confidence but
            is not a calibrated probability.
        elapsed_s: detection and tracking wall time, in seconds.
    """

    boxes: list[Box]
    tracks: list[Track]
    pedestrian_score: float
    elapsed_s: float = 0.0


class BoxTracker:
    """Link boxes across windows by IoU and classify each track's motion.

    Boxes are assigned to tracks with the Hungarian algorithm on IoU. A pair
    counts only when its IoU is at least ``iou_threshold``. A box left over
    starts a new track. A track with more than ``max_misses`` consecutive
    updates without a box is dropped.

    The trend compares the first and last of a track's latest ``trend_window``
    matched boxes. Height growth by a factor of ``growth_threshold`` or more is
    "approaching", shrinking by the same factor is "receding". Otherwise a box
    centre that moved toward the frame's vertical centre line by at least
    ``center_shift_threshold`` times the frame width is also "approaching".
    Everything else, and any track with a single box, is "steady".

    Args:
        iou_threshold: minimum IoU to continue a track. Default 0.3.
        max_misses: updates without a match before a track expires. Default 3.
        trend_window: number of latest matched boxes that the trend compares. Default 4.
        growth_threshold: height ratio that counts as growing. Default 1.15.
        center_shift_threshold: horizontal move toward the centre, as a fraction
            of the frame width, that counts as approaching. Default 0.05.

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_misses: int = 3,
        trend_window: int = 4,
        growth_threshold: float = 1.15,
        center_shift_threshold: float = 0.05,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_misses < 0:
            raise ValueError(f"max_misses must be 0 or more, got {max_misses}")
        if trend_window < 2:
            raise ValueError(f"trend_window must be at least 2 boxes, got {trend_window}")
        if growth_threshold <= 1.0:
            raise ValueError(f"growth_threshold must be above 1, got {growth_threshold}")
        if center_shift_threshold <= 0.0:
            raise ValueError(f"center_shift_threshold must be positive, got {center_shift_threshold}")

        self.iou_threshold = iou_threshold
        self.max_misses = max_misses
        self.trend_window = trend_window
        self.growth_threshold = growth_threshold
        self.center_shift_threshold = center_shift_threshold
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """Every live track, including those that missed the latest update."""
        return list(self._tracks)

    def update(self, boxes: list[Box], frame_width: int) -> list[Track]:
        """Match one window's boxes to the tracks and return the tracks matched now.

        Args:
            boxes: detections of this window, in frame pixels.
            frame_width: width of the frame the boxes come from, in pixels.

        Raises:
            ValueError: ``frame_width`` is not positive.
        """
        if frame_width <= 0:
            raise ValueError(f"frame_width must be positive, got {frame_width}")

        pairs = self._match(boxes)
        matched_tracks = {track_index for track_index, _ in pairs}
        matched_boxes = {box_index for _, box_index in pairs}

        current = []
        for track_index, box_index in pairs:
            track = self._tracks[track_index]
            self._observe(track, boxes[box_index], frame_width)
            current.append(track)

        for track_index, track in enumerate(self._tracks):
            if track_index not in matched_tracks:
                track.misses += 1

        expired = [track for track in self._tracks if track.misses > self.max_misses]
        for track in expired:
            logger.debug("pedestrian track %d expired after %d hits", track.id, track.hits)
        self._tracks = [track for track in self._tracks if track.misses <= self.max_misses]

        for box_index, box in enumerate(boxes):
            if box_index not in matched_boxes:
                track = Track(id=self._next_id, box=box, trend="steady", hits=1)
                track.history = deque([box], maxlen=self.trend_window)
                self._next_id += 1
                self._tracks.append(track)
                current.append(track)

        return sorted(current, key=lambda track: track.id)

    def _match(self, boxes: list[Box]) -> list[tuple[int, int]]:
        """Return (track index, box index) pairs with maximum total IoU above the threshold."""
        if not self._tracks or not boxes:
            return []
        iou = np.array([[track.box.iou(box) for box in boxes] for track in self._tracks])
        rows, columns = linear_sum_assignment(iou, maximize=True)
        return [
            (int(row), int(column))
            for row, column in zip(rows, columns, strict=True)
            if iou[row, column] >= self.iou_threshold
        ]

    def _observe(self, track: Track, box: Box, frame_width: int) -> None:
        track.box = box
        track.hits += 1
        track.misses = 0
        track.history.append(box)
        track.trend = self._trend(track.history, frame_width)

    def _trend(self, history: deque[Box], frame_width: int) -> Trend:
        first, last = history[0], history[-1]
        if len(history) < 2 or first.h <= 0:
            return "steady"

        growth = last.h / first.h
        if growth >= self.growth_threshold:
            return "approaching"
        if growth <= 1.0 / self.growth_threshold:
            return "receding"

        center = frame_width / 2
        shift_toward_center = (abs(first.center_x - center) - abs(last.center_x - center)) / frame_width
        if shift_toward_center >= self.center_shift_threshold:
            return "approaching"
        return "steady"


class PedestrianDetector:
    """Find pedestrians in a BGR frame with OpenCV's default HOG people detector.

    Args:
        scale: ratio between successive image pyramid levels in
            ``detectMultiScale``. A smaller value finds more sizes but runs slower. Default 1.05.
        win_stride: detection window step in pixels (x, y). Default (8, 8).
        padding: border added around the image in pixels (x, y). Default (8, 8).
        hit_threshold: SVM decision value that ``detectMultiScale`` keeps
            before grouping. Default 0.0.
        min_score: minimum SVM decision value of a returned box. Default 0.5.
        nms_iou: boxes overlapping a higher-scoring box by more than this IoU
            are removed. Default 0.4.
        max_width: frames wider than this many pixels are shrunk to this width
            before detection; None keeps the full size. Default 960.
        upscale: factor applied after the ``max_width`` shrink to find smaller
            pedestrians; the run time grows about with its square. Default 1.0.
        tracker: tracker that `update` feeds; a new `BoxTracker` by default.

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        scale: float = 1.05,
        win_stride: tuple[int, int] = (8, 8),
        padding: tuple[int, int] = (8, 8),
        hit_threshold: float = 0.0,
        min_score: float = 0.5,
        nms_iou: float = 0.4,
        max_width: int | None = 960,
        upscale: float = 1.0,
        tracker: BoxTracker | None = None,
    ) -> None:
        if scale <= 1.0:
            raise ValueError(f"scale must be above 1, got {scale}")
        if min(win_stride) < 1 or min(padding) < 0:
            raise ValueError(f"win_stride must be positive and padding 0 or more, got {win_stride} and {padding}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if max_width is not None and max_width < 64:
            raise ValueError(f"max_width must be at least the 64-pixel HOG window, got {max_width}")
        if upscale <= 0.0:
            raise ValueError(f"upscale must be positive, got {upscale}")

        self.scale = scale
        self.win_stride = tuple(win_stride)
        self.padding = tuple(padding)
        self.hit_threshold = hit_threshold
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.max_width = max_width
        self.upscale = upscale
        self.tracker = tracker if tracker is not None else BoxTracker()

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def resize_factor(self, frame_width: int) -> float:
        """Return the factor by which a frame of ``frame_width`` pixels is resized before detection."""
        shrink = 1.0
        if self.max_width is not None and frame_width > self.max_width:
            shrink = self.max_width / frame_width
        return shrink * self.upscale

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Return the pedestrian boxes in one BGR uint8 frame, highest score first.

        Boxes are in pixels of ``frame`` and clipped to its bounds.

        Raises:
            ValueError: the frame is not an HxWx3 uint8 array.
        """
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", None)
            raise ValueError(f"frame must be an HxWx3 BGR uint8 array, got shape {shape}")

        height, width = frame.shape[:2]
        factor = self.resize_factor(width)
        resized = frame
        if not math.isclose(factor, 1.0):
            interpolation = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            resized = cv2.resize(frame, size, interpolation=interpolation)

        # The detector window is 64x128 pixels, so a smaller image cannot contain a detection.
        if resized.shape[0] < 128 or resized.shape[1] < 64:
            return []

        rectangles, weights = self._hog.detectMultiScale(
            resized,
            hitThreshold=self.hit_threshold,
            winStride=self.win_stride,
            padding=self.padding,
            scale=self.scale,
        )
        candidates = [
            _to_frame_box(rectangle, float(weight), factor, width, height)
            for rectangle, weight in zip(rectangles, np.ravel(weights), strict=True)
            if weight >= self.min_score
        ]
        return self._suppress(candidates)

    def update(self, frame: np.ndarray) -> DetectionResult:
        """Detect pedestrians in the newest frame of a window and update the tracker.

        Raises:
            ValueError: the frame is not an HxWx3 uint8 array.
        """
        started = time.perf_counter()
        boxes = self.detect(frame)
        tracks = self.tracker.update(boxes, frame_width=frame.shape[1])
        score = 1.0 - math.exp(-boxes[0].score) if boxes else 0.0
        return DetectionResult(
            boxes=boxes, tracks=tracks, pedestrian_score=score, elapsed_s=time.perf_counter() - started
        )

    def _suppress(self, boxes: list[Box]) -> list[Box]:
        """Apply non-max suppression and sort the kept boxes by score, highest first."""
        if not boxes:
            return []
        keep = cv2.dnn.NMSBoxes(
            [[box.x, box.y, box.w, box.h] for box in boxes],
            [box.score for box in boxes],
            self.min_score,
            self.nms_iou,
        )
        kept = [boxes[int(index)] for index in np.ravel(keep)]
        return sorted(kept, key=lambda box: box.score, reverse=True)


def _to_frame_box(rectangle: np.ndarray, score: float, factor: float, width: int, height: int) -> Box:
    """Scale a detection back to frame pixels and clip it to the frame."""
    x, y, w, h = (float(value) / factor for value in rectangle)
    left = min(max(x, 0.0), float(width))
    top = min(max(y, 0.0), float(height))
    right = min(max(x + w, 0.0), float(width))
    bottom = min(max(y + h, 0.0), float(height))
    return Box(left, top, right - left, bottom - top, score)
