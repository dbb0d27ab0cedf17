"""scenewatch: a real-time multimodal perception pipeline over ZeroMQ.

The library: message schema (:mod:`pipeline.messages`), transport
(:mod:`pipeline.transport`), clocks (:mod:`pipeline.clock`), graph
configuration and launcher (:mod:`pipeline.config`, :mod:`pipeline.launcher`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from pipeline.summary import Summary, subscribe

__all__ = ["__version__", "Summary", "subscribe"]
