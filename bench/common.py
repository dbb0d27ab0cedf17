"""Shared pieces of the benchmarks: result rows, statistics, free ports, data files and machine facts.

Every benchmark module defines ``NAME`` and ``run(options) -> list[Row]``.
A :class:`Row` is one figure: the median of its samples with their min and
max. A ratio row is computed per repeat from two figures measured side by
side, and its samples are those per-repeat ratios.

Example::

    >>> row = Row.from_samples("transport", "raw frames, ipc, ours", "throughput", [10.0, 12.0, 11.0], "msg/s")
    >>> row.median, row.minimum, row.maximum
    (11.0, 10.0, 12.0)
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "REPO_ROOT",
    "SHARED_DATA",
    "BenchOptions",
    "Row",
    "BenchSkipped",
    "shared_file",
    "free_port",
    "percentile",
    "machine_facts",
    "versions",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCENEWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


class BenchSkipped(RuntimeError):
    """A benchmark cannot run on this machine (a data file or a model is missing); the message names it."""


@dataclass(frozen=True)
class BenchOptions:
    """Settings shared by every benchmark, from the command line."""

    quick: bool = False
    """Smoke mode: a few seconds per benchmark, numbers only show that the code runs."""
    repeat: int = 3
    """Repeated runs per figure; each figure is the median over them."""
    device: str = "cpu"
    """Torch device of the CLIP benchmarks, ``cpu`` or ``cuda``."""
    memory_minutes: float | None = None
    """Length of the memory benchmark's looped replay, in minutes; None: 5 (full) or 10 s (quick)."""


@dataclass
class Row:
    """One figure: median, min and max of its samples, in ``unit``."""

    benchmark: str
    case: str
    metric: str
    median: float
    minimum: float
    maximum: float
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @classmethod
    def from_samples(
        cls, benchmark: str, case: str, metric: str, samples: Sequence[float], unit: str, note: str = ""
    ) -> "Row":
        """Summarise samples as median, min and max.

        Raises:
            ValueError: ``samples`` is empty.
        """
        values = [float(value) for value in samples]
        if not values:
            raise ValueError(f"{benchmark}/{case}/{metric}: no samples to summarise")
        return cls(benchmark, case, metric, statistics.median(values), min(values), max(values), unit, values, note)


def shared_file(relative: str) -> Path:
    """Return a file under the shared data folder.

    Raises:
        BenchSkipped: The file is missing; set SCENEWATCH_SHARED_DATA to the data folder.
    """
    path = SHARED_DATA / relative
    if not path.is_file():
        raise BenchSkipped(f"data file {path} is missing; set SCENEWATCH_SHARED_DATA to the folder that contains {relative}")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0 to 100) of ``values`` with linear interpolation; NaN when empty."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, str]:
    """Return the CPU model, core count, RAM, OS and date of this run, as strings."""
    import psutil

    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def versions() -> dict[str, str]:
    """Return the versions of Python and of the libraries the figures depend on; ``missing`` for absent ones."""
    found = {"python": sys.version.split()[0]}
    try:
        import zmq

        found["pyzmq"] = zmq.__version__
        found["libzmq"] = zmq.zmq_version()
    except ImportError:
        found["pyzmq"] = "missing"
    for name, module in (("numpy", "numpy"), ("torch", "torch"), ("transformers", "transformers"),
                         ("onnxruntime", "onnxruntime"), ("opencv", "cv2"), ("pyav", "av")):
        try:
            found[name] = __import__(module).__version__
        except ImportError:
            found[name] = "missing"
    return found
