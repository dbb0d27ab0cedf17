"""Smoke test of the benchmark suite: ``python -m bench --quick`` runs every benchmark and reports each.

The figures of a quick run only show that the code runs, so the test checks
the exit status and that each benchmark has a row in the written results,
never the numbers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED_DATA

BENCHMARKS = ("transport", "latency", "replay", "memory", "models")


@pytest.mark.slow
def test_bench_quick_reports_every_benchmark(tmp_path: Path) -> None:
    if not (SHARED_DATA / "video" / "highway_dashcam_960x540_25fps.mp4").is_file():
        pytest.skip(f"shared recordings are missing under {SHARED_DATA}; the benchmarks replay them")
    output = tmp_path / "benchmarks.md"

    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in output.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    for name in BENCHMARKS:
        assert any(line.startswith(f"| {name} |") for line in rows), f"no result row for {name}:\n{result.stdout[-3000:]}"


def test_bench_rejects_unknown_benchmark() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "nosuch", "--no-write"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 2
    assert "unknown benchmark nosuch" in result.stderr
