"""What a node process gets: its parameters, its topics and a stop flag.

A node module under ``nodes/`` defines a pydantic ``Params`` model and a
``run(node: NodeContext)`` function that loops until ``node.stopped``. The
launcher calls :func:`node_main` in a fresh (spawned) process; a node can also
run alone::

    python -m nodes.camera --config configs/live.yaml --id camera

Inside ``run``::

    def run(node: NodeContext) -> None:
        publisher = node.publisher("frames")
        while not node.stopped:
            ...
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import zmq
from pydantic import BaseModel

from pipeline.config import GraphConfig, NodeConfig, load_graph, node_module, parse_graph
from pipeline.transport import Publisher, Subscriber, TopicSpec

__all__ = ["NodeContext", "node_main", "standalone_main", "configure_logging"]

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(node)s] %(name)s: %(message)s"


class _NodeFilter(logging.Filter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        return True


def configure_logging(level: str = "INFO", node_id: str = "main") -> None:
    """Send log records to stderr with the node id in each line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
    handler.addFilter(_NodeFilter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@dataclass
class NodeContext:
    """Everything one node process needs; ``stop_event`` is set on SIGINT or SIGTERM."""

    node_id: str
    params: Any
    config: NodeConfig
    graph: GraphConfig
    stop_event: threading.Event = field(default_factory=threading.Event)
    _closables: list[Any] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s`` seconds; return True as soon as the node must stop."""
        return self.stop_event.wait(timeout_s)

    def output_spec(self, output: str) -> TopicSpec:
        try:
            topic = self.config.outputs[output]
        except KeyError:
            raise KeyError(f"node {self.node_id!r} has no output {output!r} in its config 'outputs'") from None
        return self.graph.topic_spec(topic)

    def input_spec(self, input_name: str) -> TopicSpec:
        try:
            topic = self.config.inputs[input_name]
        except KeyError:
            raise KeyError(f"node {self.node_id!r} has no input {input_name!r} in its config 'inputs'") from None
        return self.graph.topic_spec(topic)

    def publisher(self, output: str) -> Publisher:
        """Bind the topic of one output; closed when the node exits."""
        publisher = Publisher(self.output_spec(output), source=self.node_id)
        self._closables.append(publisher)
        return publisher

    def subscriber(self, *inputs: str) -> Subscriber:
        """Subscribe to the topics of the given inputs (all inputs when none are named)."""
        names = inputs or tuple(self.config.inputs)
        subscriber = Subscriber([self.input_spec(name) for name in names])
        self._closables.append(subscriber)
        return subscriber

    def close(self) -> None:
        for closable in reversed(self._closables):
            try:
                closable.close()
            except Exception:  # noqa: BLE001 - shutdown must go on for the others
                log.exception("node %s: closing %r failed", self.node_id, closable)
        self._closables.clear()


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies, so no orphan stays."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        log.debug("prctl(PR_SET_PDEATHSIG) is not available")


def _install_stop_handlers(stop_event: threading.Event, node_id: str) -> None:
    def handle(signum: int, _frame: object) -> None:
        if stop_event.is_set():
            return
        log.info("node %s: %s received, stopping", node_id, signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def run_node(graph: GraphConfig, node_id: str, *, parent_pid: int | None = None) -> int:
    """Run one node in this process until it stops; return the exit status."""
    config = graph.node(node_id)
    configure_logging(config.log_level or graph.log_level, node_id)
    stop_event = threading.Event()
    _install_stop_handlers(stop_event, node_id)
    if parent_pid is not None:
        _die_with_parent()
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            return 1

    module = node_module(config.node)
    params: BaseModel = module.Params.model_validate(config.params)
    context = NodeContext(node_id=node_id, params=params, config=config, graph=graph, stop_event=stop_event)
    log.info("node %s (%s) started, pid %d", node_id, config.node, os.getpid())
    try:
        module.run(context)
    except (OSError, zmq.ZMQError, ValueError, LookupError) as error:
        # Expected failures (address in use, missing file or device) carry
        # their own message; a traceback would only bury it.
        log.error("node %s failed: %s", node_id, error)
        return 1
    except Exception:
        log.exception("node %s failed", node_id)
        return 1
    finally:
        context.close()
    log.info("node %s stopped", node_id)
    return 0


def node_main(graph_json: str, node_id: str, parent_pid: int) -> None:
    """Entry point of a spawned node process (``multiprocessing`` target)."""
    graph = parse_graph(__import__("json").loads(graph_json), "<launcher>")
    status = run_node(graph, node_id, parent_pid=parent_pid)
    # Tearing down torch and the model objects takes over a second, longer
    # than the launcher waits after SIGTERM; everything is closed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def standalone_main(default_node: str) -> None:
    """Run one node of a graph file from the command line: ``python -m nodes.NAME --config FILE``."""
    parser = argparse.ArgumentParser(description=f"Run the {default_node} node of a scenewatch graph alone.")
    parser.add_argument("--config", required=True, help="graph YAML file")
    parser.add_argument("--id", default=None, help="node id in the graph (default: the first node of this type)")
    args = parser.parse_args()
    graph = load_graph(args.config)
    node_id = args.id or next((n.id for n in graph.nodes if n.node == default_node), None)
    if node_id is None:
        parser.error(f"graph {args.config} has no node of type {default_node!r}; pass --id")
    sys.exit(run_node(graph, node_id))
