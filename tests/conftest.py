"""Shared fixtures: the real recordings under ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    __import__("os").environ.get("SCENEWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
)


def shared_file(relative: str) -> Path:
    """Return a file under the shared data folder, or skip the test when it is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared recording {path} is missing; set SCENEWATCH_SHARED_DATA to its folder")
    return path


@pytest.fixture
def highway_mp4() -> Path:
    return shared_file("video/highway_dashcam_960x540_25fps.mp4")


@pytest.fixture
def urban_gif() -> Path:
    return shared_file("video/urban_dashcam_320x240.gif")


@pytest.fixture
def siren_wav() -> Path:
    return shared_file("audio/siren_44k_stereo.wav")
