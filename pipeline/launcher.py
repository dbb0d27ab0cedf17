"""Start every node of a graph in its own process, restart crashed ones, stop them all.

Nodes run in processes made with the ``spawn`` start method, so no ZeroMQ
context or thread is inherited through ``fork``. The launcher restarts a node
that exits according to its :class:`~pipeline.config.RestartPolicy`, with
exponential backoff. SIGINT or SIGTERM sends SIGTERM to every node, waits
``stop_timeout_s`` and then kills what is left, so a stop takes at most
about two seconds and leaves no process behind. Each node also sets
PR_SET_PDEATHSIG, so Linux terminates it when the launcher dies.

While a graph runs, the launcher writes it to a state file
(:func:`state_path`) so that ``scenewatch topics``, ``echo``, ``alert`` and
``listen`` find its endpoints without a ``--config``.

Example::

    from pipeline.config import load_graph
    from pipeline.launcher import Launcher
    Launcher(load_graph("configs/live.yaml")).run()     # until Ctrl-C
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import GraphConfig, NodeConfig
from pipeline.node import node_main

__all__ = ["Launcher", "state_path", "read_state"]

log = logging.getLogger(__name__)


def state_path() -> Path:
    """Return the file where the running graph is published (``$SCENEWATCH_STATE`` overrides)."""
    override = os.environ.get("SCENEWATCH_STATE")
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(runtime) / f"scenewatch-{os.getuid()}" / "graph.json"


def read_state() -> dict | None:
    """Return the running graph's state (``graph`` and ``pid``), or None when none runs."""
    path = state_path()
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = state.get("pid")
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return None
    return state


@dataclass
class _Child:
    config: NodeConfig
    process: multiprocessing.process.BaseProcess | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    given_up: bool = False
    finished: bool = False


class Launcher:
    """Run a graph's nodes as supervised processes.

    Args:
        graph: A validated graph.
        write_state: Publish the graph in :func:`state_path` while it runs.
    """

    def __init__(self, graph: GraphConfig, write_state: bool = True) -> None:
        self.graph = graph
        self._graph_json = graph.model_dump_json()
        self._context = multiprocessing.get_context("spawn")
        self._children = {node.id: _Child(node) for node in graph.nodes}
        self._stop = threading.Event()
        self._write_state = write_state
        self.exit_status = 0

    def request_stop(self) -> None:
        self._stop.set()

    def _start(self, child: _Child) -> None:
        process = self._context.Process(
            target=node_main,
            args=(self._graph_json, child.config.id, os.getpid()),
            name=f"scenewatch-{child.config.id}",
            daemon=False,
        )
        process.start()
        child.process = process
        child.started_at = time.monotonic()
        log.info("started node %s (%s), pid %s", child.config.id, child.config.node, process.pid)

    def _on_exit(self, child: _Child, now: float) -> None:
        assert child.process is not None
        code = child.process.exitcode
        child.process.join(0)
        child.process = None
        policy = child.config.restart
        failed = code != 0
        how = f"exit status {code}" if code is None or code >= 0 else f"signal {signal.Signals(-code).name}"
        if now - child.started_at >= policy.reset_after_s:
            child.restarts = 0

        if policy.policy == "never" or (policy.policy == "on-failure" and not failed):
            level = logging.ERROR if failed else logging.INFO
            log.log(level, "node %s exited (%s); restart policy %r, not restarting", child.config.id, how, policy.policy)
            child.finished = True
            if failed and policy.required:
                self._give_up(child)
            return
        if child.restarts >= policy.max_restarts:
            log.error(
                "node %s exited (%s) and reached max_restarts=%d; giving up",
                child.config.id,
                how,
                policy.max_restarts,
            )
            self._give_up(child)
            return

        delay = min(policy.backoff_s * (2**child.restarts), policy.backoff_max_s)
        child.restarts += 1
        child.next_start = now + delay
        log.warning(
            "node %s exited (%s); restart %d/%d in %.2f s",
            child.config.id,
            how,
            child.restarts,
            policy.max_restarts,
            delay,
        )

    def _give_up(self, child: _Child) -> None:
        child.given_up = True
        child.finished = True
        if child.config.restart.required:
            log.error("node %s is required; stopping the graph", child.config.id)
            self.exit_status = 1
            self._stop.set()

    def _publish_state(self) -> None:
        if not self._write_state:
            return
        path = state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"pid": os.getpid(), "graph": json.loads(self._graph_json)}))
        temporary.replace(path)

    def _clear_state(self) -> None:
        if not self._write_state:
            return
        try:
            state = json.loads(state_path().read_text())
            if state.get("pid") == os.getpid():
                state_path().unlink()
        except (FileNotFoundError, json.JSONDecodeError):
            pass

    def run(self, install_signal_handlers: bool = True) -> int:
        """Run until SIGINT or SIGTERM, or until every node has finished; return the exit status."""
        if install_signal_handlers:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda s, _f: (log.info("%s received, stopping graph", signal.Signals(s).name), self._stop.set()))
        self._publish_state()
        log.info("graph %s: starting %d nodes", self.graph.name, len(self._children))
        try:
            for child in self._children.values():
                self._start(child)
            while not self._stop.wait(0.05):
                now = time.monotonic()
                for child in self._children.values():
                    if child.process is not None and not child.process.is_alive():
                        self._on_exit(child, now)
                    elif child.process is None and not child.finished and now >= child.next_start:
                        self._start(child)
                if all(child.finished for child in self._children.values()):
                    log.info("graph %s: every node has finished", self.graph.name)
                    break
        finally:
            self.stop_all()
            self._clear_state()
        return self.exit_status

    def stop_all(self) -> None:
        """SIGTERM every node, wait ``stop_timeout_s``, then SIGKILL the rest."""
        running = [child for child in self._children.values() if child.process is not None]
        for child in running:
            if child.process.is_alive():
                child.process.terminate()
        deadline = time.monotonic() + self.graph.stop_timeout_s
        for child in running:
            child.process.join(max(0.0, deadline - time.monotonic()))
        for child in running:
            if child.process.is_alive():
                log.warning("node %s did not stop within %.1f s; killing it", child.config.id, self.graph.stop_timeout_s)
                child.process.kill()
                child.process.join(1.0)
            child.process = None
        log.info("graph %s stopped", self.graph.name)

    def pids(self) -> dict[str, int | None]:
        """Return the process id of each node (None while it waits for a restart)."""
        return {node_id: (child.process.pid if child.process else None) for node_id, child in self._children.items()}
