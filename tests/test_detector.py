"""Tests for pipeline.models.detector: HOG pedestrian boxes and the IoU box tracker.

The pedestrian reference is the person walking on the right-hand sidewalk of
BDD100K still 7dd9ef45-f197db95.jpg (1280x720). Labelled by eye, the person
covers x 725-749 and y 282-340, so about 58 pixels tall. HOG puts its 64x128
window around that at about (716, 271, 43, 86).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_file
from pipeline.models.detector import Box, BoxTracker, DetectionResult, PedestrianDetector

PERSON_IMAGE = "7dd9ef45-f197db95.jpg"
PERSON = Box(725.0, 282.0, 24.0, 58.0, 0.0)
PERSON_CENTER = (737.0, 311.0)
HOG_PERSON = Box(716.0, 271.0, 43.0, 86.0, 0.0)
# A 480x360 region around the person: tests that run HOG several times use it
# to stay fast.
REGION_LEFT, REGION_TOP, REGION_WIDTH, REGION_HEIGHT = 497, 131, 480, 360
ALL_IMAGES = ["0ace96c3-48481887.jpg", "3c0e7240-96e390d2.jpg", "7dd9ef45-f197db95.jpg"]


def read_image(name: str) -> np.ndarray:
    frame = cv2.imread(str(shared_file(f"images/{name}")))
    assert frame is not None, name
    return frame


def read_video_frames(path: Path, step: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(frame)
        index += 1
    capture.release()
    assert frames, path
    return frames


def contains_point(box: Box, x: float, y: float) -> bool:
    return box.x <= x <= box.x + box.w and box.y <= y <= box.y + box.h


def person_region(frame: np.ndarray) -> np.ndarray:
    return frame[REGION_TOP : REGION_TOP + REGION_HEIGHT, REGION_LEFT : REGION_LEFT + REGION_WIDTH].copy()


def person_boxes(boxes: list[Box], scale: float = 1.0, in_region: bool = False) -> list[Box]:
    """Return the boxes that contain the reference person's centre, in full-image pixels.

    Box coordinates are divided by ``scale`` and, with ``in_region``, shifted by
    the region's top-left corner.
    """
    left, top = (REGION_LEFT, REGION_TOP) if in_region else (0, 0)
    mapped = [
        Box(box.x / scale + left, box.y / scale + top, box.w / scale, box.h / scale, box.score) for box in boxes
    ]
    return [box for box in mapped if contains_point(box, *PERSON_CENTER)]


def region_center() -> tuple[float, float]:
    return (PERSON_CENTER[0] - REGION_LEFT, PERSON_CENTER[1] - REGION_TOP)


def assert_boxes_in_frame(boxes: list[Box], frame: np.ndarray) -> None:
    height, width = frame.shape[:2]
    for box in boxes:
        assert box.x >= 0, box
        assert box.y >= 0, box
        assert box.w > 0, box
        assert box.h > 0, box
        assert box.x + box.w <= width, box
        assert box.y + box.h <= height, box


def zoom_about(frame: np.ndarray, center: tuple[float, float], factor: float) -> np.ndarray:
    """Enlarge ``frame`` by ``factor`` about ``center``, keeping the frame size."""
    matrix = cv2.getRotationMatrix2D(center, 0.0, factor)
    return cv2.warpAffine(frame, matrix, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR)


# Box


def test_box_iou_cases() -> None:
    box = Box(0, 0, 10, 10, 1.0)

    assert box.iou(box) == pytest.approx(1.0)
    assert box.iou(Box(5, 0, 10, 10, 1.0)) == pytest.approx(50 / 150)
    assert box.iou(Box(20, 20, 5, 5, 1.0)) == 0.0
    assert box.iou(Box(0, 0, 0, 0, 1.0)) == 0.0


# Detector on real frames


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_detector_boxes_in_bounds_on_dashcam_stills(image: str) -> None:
    frame = read_image(image)
    detector = PedestrianDetector()

    boxes = detector.detect(frame)

    assert_boxes_in_frame(boxes, frame)
    assert all(box.score >= detector.min_score for box in boxes)
    assert [box.score for box in boxes] == sorted((box.score for box in boxes), reverse=True)


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_detector_boxes_do_not_overlap_after_nms(image: str) -> None:
    detector = PedestrianDetector(upscale=1.5)

    boxes = detector.detect(read_image(image))

    for first, second in itertools.combinations(boxes, 2):
        assert first.iou(second) <= detector.nms_iou, (first, second)


def test_detector_boxes_in_bounds_on_highway_video(highway_mp4: Path) -> None:
    detector = PedestrianDetector()

    for frame in read_video_frames(highway_mp4, step=40):
        assert frame.shape == (540, 960, 3)
        assert_boxes_in_frame(detector.detect(frame), frame)


def test_detector_boxes_in_bounds_on_urban_gif(urban_gif: Path) -> None:
    detector = PedestrianDetector(upscale=2.0)

    for frame in read_video_frames(urban_gif, step=12):
        assert frame.shape == (240, 320, 3)
        assert_boxes_in_frame(detector.detect(frame), frame)


def test_detector_finds_sidewalk_pedestrian() -> None:
    frame = read_image(PERSON_IMAGE)

    found = person_boxes(PedestrianDetector(max_width=None, upscale=2.0).detect(frame))

    assert len(found) == 1
    assert found[0].iou(HOG_PERSON) > 0.8
    # The HOG window frames the person with a margin: 96 of its 128 rows are body.
    assert found[0].h == pytest.approx(PERSON.h * 128 / 96, rel=0.15)


def test_detector_misses_person_below_window_height() -> None:
    frame = read_image(PERSON_IMAGE)

    found = person_boxes(PedestrianDetector(max_width=None, upscale=1.0).detect(frame))

    # 58 pixels is well below the 96-pixel person height of the 64x128 window.
    assert found == []


@pytest.mark.parametrize("factor", [1.5, 2.0, 2.5, 3.0])
def test_detector_consistent_on_scaled_image(factor: float) -> None:
    region = person_region(read_image(PERSON_IMAGE))
    scaled = cv2.resize(region, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)

    found = person_boxes(PedestrianDetector(max_width=None).detect(scaled), scale=factor, in_region=True)

    assert len(found) == 1
    assert found[0].iou(HOG_PERSON) > 0.8


def test_detector_downscale_returns_frame_pixels() -> None:
    frame = read_image(PERSON_IMAGE)
    large = cv2.resize(frame, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_CUBIC)
    detector = PedestrianDetector(max_width=2560)

    boxes = detector.detect(large)

    assert detector.resize_factor(large.shape[1]) == pytest.approx(2560 / 3840)
    assert_boxes_in_frame(boxes, large)
    found = person_boxes(boxes, scale=3.0)
    assert len(found) == 1
    assert found[0].iou(HOG_PERSON) > 0.8


def test_detector_tiny_frame_returns_no_boxes() -> None:
    assert PedestrianDetector().detect(np.zeros((100, 60, 3), dtype=np.uint8)) == []


def test_detector_rejects_grayscale_frame() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        PedestrianDetector().detect(np.zeros((540, 960), dtype=np.uint8))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 1.0}, "scale"),
        ({"win_stride": (0, 8)}, "win_stride"),
        ({"nms_iou": 0.0}, "nms_iou"),
        ({"max_width": 32}, "max_width"),
        ({"upscale": 0.0}, "upscale"),
    ],
)
def test_detector_invalid_option_raises(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PedestrianDetector(**options)


def test_detector_update_tracks_zoomed_pedestrian() -> None:
    region = person_region(read_image(PERSON_IMAGE))
    center = region_center()
    detector = PedestrianDetector(max_width=None, upscale=1.5)

    results = [detector.update(zoom_about(region, center, factor)) for factor in (1.0, 1.1, 1.2, 1.3)]

    person_tracks = [[track for track in result.tracks if contains_point(track.box, *center)] for result in results]
    assert all(len(tracks) == 1 for tracks in person_tracks)
    assert len({tracks[0].id for tracks in person_tracks}) == 1
    assert person_tracks[-1][0].hits == 4
    assert person_tracks[-1][0].trend == "approaching"


def test_detector_update_tracks_receding_pedestrian() -> None:
    region = person_region(read_image(PERSON_IMAGE))
    center = region_center()
    detector = PedestrianDetector(max_width=None, upscale=1.5)

    results = [detector.update(zoom_about(region, center, factor)) for factor in (1.3, 1.2, 1.1, 1.0)]

    final = [track for track in results[-1].tracks if contains_point(track.box, *center)]
    assert len(final) == 1
    assert final[0].trend == "receding"


def test_detection_result_pedestrian_score() -> None:
    frame = read_image(PERSON_IMAGE)

    result = PedestrianDetector(max_width=None, upscale=2.0).update(frame)
    empty = PedestrianDetector().update(np.zeros((540, 960, 3), dtype=np.uint8))

    assert isinstance(result, DetectionResult)
    assert result.pedestrian_score == pytest.approx(1.0 - np.exp(-result.boxes[0].score))
    assert 0.0 < result.pedestrian_score < 1.0
    assert empty.boxes == []
    assert empty.tracks == []
    assert empty.pedestrian_score == 0.0


# Tracker on synthetic boxes

FRAME_WIDTH = 1280


def box_at(center_x: float, height: float, bottom: float = 600.0) -> Box:
    """Box of a person ``height`` pixels tall, half as wide, centred at ``center_x``."""
    width = height / 2
    return Box(center_x - width / 2, bottom - height, width, height, 1.0)


def test_tracker_first_box_is_steady() -> None:
    tracks = BoxTracker().update([box_at(300, 100)], FRAME_WIDTH)

    assert len(tracks) == 1
    assert tracks[0].id == 1
    assert tracks[0].hits == 1
    assert tracks[0].trend == "steady"


def test_tracker_growing_box_approaching() -> None:
    tracker = BoxTracker()

    for height in (100, 108, 116, 125):
        tracks = tracker.update([box_at(200, height)], FRAME_WIDTH)

    assert [track.id for track in tracks] == [1]
    assert tracks[0].trend == "approaching"
    assert tracks[0].hits == 4


def test_tracker_shrinking_box_receding() -> None:
    tracker = BoxTracker()

    for height in (125, 116, 108, 100):
        tracks = tracker.update([box_at(200, height)], FRAME_WIDTH)

    assert tracks[0].trend == "receding"


def test_tracker_static_box_steady() -> None:
    tracker = BoxTracker()

    for height in (100, 103, 98, 101, 100):
        tracks = tracker.update([box_at(200, height)], FRAME_WIDTH)

    assert tracks[0].trend == "steady"
    assert tracks[0].hits == 5


def test_tracker_move_toward_center_approaching() -> None:
    tracker = BoxTracker()

    for center_x in (300, 330, 360):  # 60 of 1280 pixels toward the centre: 4.7 %
        tracks = tracker.update([box_at(center_x, 200)], FRAME_WIDTH)
    assert tracks[0].trend == "steady"

    tracks = tracker.update([box_at(390, 200)], FRAME_WIDTH)  # 90 pixels: 7.0 %
    assert tracks[0].trend == "approaching"


def test_tracker_move_away_from_center_steady() -> None:
    tracker = BoxTracker()

    for center_x in (400, 370, 340, 310):
        tracks = tracker.update([box_at(center_x, 200)], FRAME_WIDTH)

    assert tracks[0].trend == "steady"


def test_tracker_trend_uses_latest_window() -> None:
    tracker = BoxTracker(trend_window=3)

    for height in (100, 120, 140, 140, 140):
        tracks = tracker.update([box_at(200, height)], FRAME_WIDTH)

    assert tracks[0].trend == "steady"


def test_tracker_ids_stable_when_input_order_swaps() -> None:
    tracker = BoxTracker()
    left, right = box_at(200, 100), box_at(900, 100)

    first = tracker.update([left, right], FRAME_WIDTH)
    second = tracker.update([right, left], FRAME_WIDTH)

    ids_by_side = {round(track.box.center_x): track.id for track in first}
    assert {round(track.box.center_x): track.id for track in second} == ids_by_side
    assert sorted(ids_by_side.values()) == [1, 2]


def test_tracker_assigns_by_total_overlap() -> None:
    tracker = BoxTracker()
    tracker.update([Box(0, 0, 10, 10, 1.0), Box(8, 0, 10, 10, 1.0)], FRAME_WIDTH)

    tracks = tracker.update([Box(3, 0, 10, 10, 1.0), Box(10, 0, 10, 10, 1.0)], FRAME_WIDTH)

    assert [(track.id, track.box.x) for track in tracks] == [(1, 3), (2, 10)]


def test_tracker_low_overlap_starts_new_track() -> None:
    tracker = BoxTracker(iou_threshold=0.3)
    tracker.update([box_at(200, 100)], FRAME_WIDTH)

    tracks = tracker.update([box_at(240, 100)], FRAME_WIDTH)  # IoU 10/90 = 0.11

    assert [track.id for track in tracks] == [2]
    assert [track.id for track in tracker.tracks] == [1, 2]


def test_tracker_keeps_track_through_misses() -> None:
    tracker = BoxTracker(max_misses=2)
    tracker.update([box_at(200, 100)], FRAME_WIDTH)

    assert tracker.update([], FRAME_WIDTH) == []
    assert tracker.update([], FRAME_WIDTH) == []
    tracks = tracker.update([box_at(200, 100)], FRAME_WIDTH)

    assert [track.id for track in tracks] == [1]
    assert tracks[0].hits == 2
    assert tracks[0].misses == 0


def test_tracker_expires_after_max_misses() -> None:
    tracker = BoxTracker(max_misses=2)
    tracker.update([box_at(200, 100)], FRAME_WIDTH)

    for _ in range(2):
        tracker.update([], FRAME_WIDTH)
    assert [track.misses for track in tracker.tracks] == [2]

    tracker.update([], FRAME_WIDTH)
    assert tracker.tracks == []

    tracks = tracker.update([box_at(200, 100)], FRAME_WIDTH)
    assert [track.id for track in tracks] == [2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"iou_threshold": 0.0}, "iou_threshold"),
        ({"max_misses": -1}, "max_misses"),
        ({"trend_window": 1}, "trend_window"),
        ({"growth_threshold": 1.0}, "growth_threshold"),
        ({"center_shift_threshold": 0.0}, "center_shift_threshold"),
    ],
)
def test_tracker_invalid_option_raises(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoxTracker(**options)


def test_tracker_rejects_zero_frame_width() -> None:
    with pytest.raises(ValueError, match="frame_width"):
        BoxTracker().update([], 0)
