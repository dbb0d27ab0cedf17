"""Recorder node: write every message of the graph's topics to an MCAP recording.

The node subscribes to its topics with policy ``all``, so it keeps every
message its socket receives, and writes them with
:class:`pipeline.recording.Recorder` until it is stopped. SIGTERM and SIGINT
close the recording cleanly (last chunk and summary written). After SIGKILL
the file lacks its summary; ``scenewatch recover`` keeps every chunk that
was written, which loses at most about ``flush_s`` seconds of messages.

``path`` may contain ``{start}``, replaced by the local start time
(``20250131-142502``), so a restarted node does not collide with the file of
its previous run.

Graph entry::

    - id: recorder
      node: recorder
      params: {path: "recordings/drive_{start}.mcap", topics: [camera, audio, alerts], split_s: 600}
      restart: {policy: on-failure}
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.node import NodeContext, standalone_main
from pipeline.recording import DEFAULT_CHUNK_BYTES, DEFAULT_FLUSH_S, Recorder, RecordingError, record
from pipeline.transport import topic_specs

__all__ = ["Params", "run", "expand_path"]

log = logging.getLogger(__name__)


class Params(BaseModel):
    """Recorder node parameters."""

    model_config = ConfigDict(extra="forbid")

    path: str = "recordings/scenewatch_{start}.mcap"
    """Output ``.mcap`` file; ``{start}`` becomes the start time. With splitting, parts are ``NAME_000.mcap`` onwards."""
    topics: list[str] | None = None
    """Topics to record; None records every topic of the graph."""
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    chunk_bytes: int = Field(default=DEFAULT_CHUNK_BYTES, gt=0)
    """Uncompressed size that closes a chunk, in bytes."""
    flush_s: float = Field(default=DEFAULT_FLUSH_S, gt=0)
    """Age of the oldest unwritten message that closes a chunk, in seconds; bounds the loss on SIGKILL."""
    split_bytes: int | None = Field(default=None, gt=0)
    """Start a new file at about this size, in bytes; None never splits by size."""
    split_s: float | None = Field(default=None, gt=0)
    """Start a new file after this many seconds; None never splits by time."""
    audio_preview: bool = True
    """Also write an int16 copy of float32 audio that Foxglove can play."""
    overwrite: bool = False
    """Replace an existing file; False makes the node fail instead."""
    fsync: bool = False
    """Call fsync after each chunk, so a power loss also loses at most one chunk."""


def expand_path(template: str, start_s: float | None = None) -> str:
    """Replace ``{start}`` in ``template`` with the local time ``YYYYmmdd-HHMMSS`` of ``start_s`` (default now)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(start_s))
    return template.replace("{start}", stamp)


def run(node: NodeContext) -> None:
    """Record until the node is stopped.

    Raises:
        KeyError: A topic in ``params.topics`` is not in the graph.
        RecordingError: The file cannot be created or written.
    """
    params: Params = node.params
    names = params.topics or list(node.graph.topics)
    specs = topic_specs(list(node.graph.topic_specs().values()), names)

    recorder = Recorder(
        expand_path(params.path),
        compression=params.compression,
        chunk_bytes=params.chunk_bytes,
        flush_s=params.flush_s,
        split_bytes=params.split_bytes,
        split_s=params.split_s,
        audio_preview=params.audio_preview,
        overwrite=params.overwrite,
        fsync=params.fsync,
    )
    log.info("recorder: recording topics %s to %s", ", ".join(names), recorder.current_path)
    stats = {}
    try:
        stats = record(specs, recorder, node.stop_event)
    except RecordingError:
        log.error("recorder: stopped after %d messages because writing failed", recorder.messages)
        raise
    finally:
        recorder.close()

    for name in names:
        topic_stats = stats.get(name)
        lost = topic_stats.gaps if topic_stats is not None else 0
        log.info("recorder: topic %r: %d messages recorded, %d lost before the recorder", name, recorder.counts[name], lost)
    log.info(
        "recorder: stopped; %d messages, %d payload bytes in %s",
        recorder.messages,
        recorder.payload_bytes,
        ", ".join(str(path) for path in recorder.paths),
    )


if __name__ == "__main__":
    standalone_main("recorder")
