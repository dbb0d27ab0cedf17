"""Benchmarks of scenewatch: transport, latency, replay speed, memory and models.

Run them with ``python -m bench`` (see :mod:`bench.__main__` and
``docs/benchmarks.md``). Each benchmark module defines ``NAME`` and
``run(options) -> list[Row]``; :mod:`bench.common` holds what they share.
"""
