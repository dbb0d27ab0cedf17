"""The ``scenewatch`` command line.

Commands that talk to a running graph (``topics``, ``echo``, ``alert``,
``listen``) find it through the state file that ``scenewatch run`` writes;
``--config FILE`` points them at a graph file instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.config import ConfigError, GraphConfig, load_graph, parse_graph

__all__ = ["main", "build_parser"]

log = logging.getLogger("scenewatch")

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def positive_float(text: str) -> float:
    """argparse type: a float above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number greater than 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a float of zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def resolve_graph(config: str | None) -> GraphConfig:
    """Return the graph from ``--config`` or from the running launcher's state file.

    Raises:
        ConfigError: Neither is available.
    """
    if config:
        return load_graph(config)
    from pipeline.launcher import read_state, state_path

    state = read_state()
    if state is None:
        raise ConfigError(
            f"no running graph found (state file {state_path()}); start one with "
            "'scenewatch run CONFIG' or pass --config FILE"
        )
    return parse_graph(state["graph"], str(state_path()))


def _command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = function
        return function

    return register


@_command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.launcher import Launcher
    from pipeline.node import configure_logging

    graph = load_graph(args.config)
    configure_logging(args.log_level or graph.log_level, "launcher")
    launcher = Launcher(graph)
    if args.forward_stdin:
        _forward_stdin(graph)
    return launcher.run()


def _forward_stdin(graph: GraphConfig) -> None:
    """Send the launcher's stdin lines to the graph's alerts node (its stdin is /dev/null)."""
    import threading

    from nodes.alerts import parse_alert_line, send_alert

    node = next((n for n in graph.nodes if n.node == "alerts"), None)
    if node is None:
        raise ConfigError("--stdin needs an alerts node in the graph")
    endpoint = node.params.get("ingest", "tcp://127.0.0.1:5559")

    def forward() -> None:
        for number, line in enumerate(sys.stdin, start=1):
            try:
                request = parse_alert_line(line, origin="stdin")
                if request is not None:
                    send_alert(endpoint, request, timeout_s=2.0, retries=5)
            except (ValueError, TimeoutError) as error:
                log.error("stdin line %d not sent: %s", number, error)

    threading.Thread(target=forward, name="stdin-alerts", daemon=True).start()


@_command("alert")
def cmd_alert(args: argparse.Namespace) -> int:
    from nodes.alerts import DEFAULT_INGEST, AlertRequest, parse_alert_line, send_alert

    endpoint = args.endpoint
    if endpoint is None:
        graph = resolve_graph(args.config)
        node = next((n for n in graph.nodes if n.node == "alerts"), None)
        if node is None:
            raise ConfigError(f"graph {graph.name!r} has no alerts node; add one or pass --endpoint")
        endpoint = node.params.get("ingest", DEFAULT_INGEST)

    requests: list[AlertRequest] = []
    if args.stdin:
        for number, line in enumerate(sys.stdin, start=1):
            try:
                request = parse_alert_line(line, origin="stdin")
            except ValueError as error:
                print(f"stdin line {number}: {error}", file=sys.stderr)
                return 2
            if request is not None:
                requests.append(request)
    else:
        if not args.text:
            print("scenewatch alert: give the alert TEXT, or --stdin", file=sys.stderr)
            return 2
        request = AlertRequest(text=args.text, severity=args.severity, category=args.category, expires_s=args.expires)
        request.check()
        requests.append(request)

    for request in requests:
        reply = send_alert(endpoint, request, timeout_s=args.timeout)
        print(f"published alert {reply['alert_id']} (seq {reply['seq']})")
    return 0


@_command("topics")
def cmd_topics(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.transport import Subscriber

    graph = resolve_graph(args.config)
    specs = list(graph.topic_specs().values())
    publishers = {topic: node.id for node in graph.nodes for topic in node.outputs.values()}
    with Subscriber(specs) as subscriber:
        time.sleep(args.settle)
        before = {name: stats.as_dict() for name, stats in subscriber.stats.items()}
        time.sleep(args.duration)
        after = {name: stats.as_dict() for name, stats in subscriber.stats.items()}
        while subscriber.recv(timeout_s=0) is not None:
            pass

    table = Table(title=f"graph {graph.name}: topics over {args.duration:.1f} s")
    for column in ("topic", "publisher", "policy", "endpoint", "rate (Hz)", "bandwidth", "lost", "source drops", "rejected"):
        table.add_column(column, justify="right" if column not in ("topic", "publisher", "policy", "endpoint") else "left")
    for spec in specs:
        start, end = before[spec.name], after[spec.name]
        count = end["received"] - start["received"]
        size = end["bytes"] - start["bytes"]
        lost = end["gaps"] - start["gaps"]
        rejected = sum(end["rejected"].values()) - sum(start["rejected"].values())
        table.add_row(
            spec.name,
            publishers.get(spec.name, "-"),
            spec.policy,
            spec.endpoint,
            f"{count / args.duration:.1f}",
            _format_rate(size / args.duration),
            str(lost),
            str(end["source_drops"]),
            str(rejected),
        )
    Console(width=table_width()).print(table)
    return 0


def table_width() -> int | None:
    """Return the width for rich tables: the terminal's, or 200 columns when output is piped.

    rich falls back to 80 columns without a terminal, which cuts the endpoint
    and counter columns of ``topics`` and ``inspect``.
    """
    return None if sys.stdout.isatty() else 200


def _format_rate(bytes_per_s: float) -> str:
    for unit, scale in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.2f} {unit}"
    return f"{bytes_per_s:.0f} B/s"


@_command("echo")
def cmd_echo(args: argparse.Namespace) -> int:
    from pipeline.transport import Subscriber

    graph = resolve_graph(args.config)
    if args.topic not in graph.topics:
        raise ConfigError(f"topic {args.topic!r} is not in graph {graph.name!r}; topics: {', '.join(graph.topics)}")
    spec = graph.topic_spec(args.topic).model_copy(update={"policy": "all"})
    printed = 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with Subscriber([spec]) as subscriber:
        while args.count is None or printed < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                print(f"scenewatch echo: timed out after {args.timeout:.1f} s with {printed} messages", file=sys.stderr)
                return 1
            message = subscriber.recv(timeout_s=min(0.5, remaining) if remaining is not None else 0.5)
            if message is None:
                continue
            record: dict[str, Any] = json.loads(message.header_bytes)
            if args.payload and message.header.encoding in ("utf-8", "json"):
                record["payload"] = bytes(message.payload).decode("utf-8")
            print(json.dumps(record), flush=True)
            printed += 1
    return 0


def summary_endpoint(config: str | None, endpoint: str | None) -> str:
    """Return the summary endpoint from ``--endpoint``, ``--config`` or the running graph."""
    if endpoint:
        return endpoint
    graph = resolve_graph(config)
    if "summary" not in graph.topics:
        raise ConfigError(f"graph {graph.name!r} has no 'summary' topic; add a fusion node or pass --endpoint")
    return graph.topic_spec("summary").endpoint


@_command("listen")
def cmd_listen(args: argparse.Namespace) -> int:
    from pipeline.summary import format_summary, subscribe

    endpoint = summary_endpoint(args.config, args.endpoint)
    printed = 0
    for summary in subscribe(endpoint, timeout_s=args.timeout):
        print(summary.to_json() if args.json else format_summary(summary), flush=True)
        printed += 1
        if args.count is not None and printed >= args.count:
            return 0
    if args.timeout is not None:
        print(f"scenewatch listen: no summary for {args.timeout:.1f} s on {endpoint}", file=sys.stderr)
        return 1
    return 0


@_command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import demo_paths, generate_demo
    from pipeline.models.store import ModelStore
    from pipeline.node import configure_logging
    from pipeline.replay import ReplayOptions, run_private_fusion
    from pipeline.sources import VideoFileSource

    configure_logging(args.log_level or "WARNING", "demo")
    folder = Path(args.folder)
    paths = demo_paths(folder)
    if args.regenerate or not all(path.exists() for path in paths.values()):
        print(f"writing the demo drive to {folder}/ ...", file=sys.stderr, flush=True)
        generate_demo(folder)
    clip = next((status for status in ModelStore().status() if status.name == "clip"), None)
    if clip is not None and not clip.present:
        print(
            "CLIP weights are not in the model cache; running with the detector, YAMNet and alerts (summaries marked "
            "degraded). See 'scenewatch models pull clip' for how to add them.",
            file=sys.stderr,
            flush=True,
        )
    source = VideoFileSource(paths["video"], audio=paths["audio"], alerts=paths["alerts"])
    options = ReplayOptions(rate=1.0, fast=args.fast, progress=False, json_report=args.json, out=args.out)
    print(f"replaying {paths['video'].name} with {paths['audio'].name} and {paths['alerts'].name} through fusion ...", file=sys.stderr, flush=True)
    return run_private_fusion(source, options)


@_command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from pipeline.models import store

    if args.models_command == "list":
        for status in store.list_models():
            print(status.describe())
        return 0

    names = args.names or store.registered_models()
    failed = 0
    for name in names:
        try:
            status = store.pull_model(name, force=args.force)
        except store.ModelStoreError as error:
            failed += 1
            print(f"{name}: not pulled: {error}", file=sys.stderr)
            continue
        print(status.describe())
    if failed and not args.names:
        # Pulling everything offline is expected to miss the hub-only models
        # (CLIP); the pipeline runs without them, marked degraded.
        print(f"{failed} of {len(names)} models are missing; the pipeline runs without them (degraded)", file=sys.stderr)
        return 0
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every ``scenewatch`` command."""
    parser = argparse.ArgumentParser(
        prog="scenewatch",
        description="Real-time multimodal perception: camera, microphone and alerts fused into scene summaries.",
    )
    parser.add_argument("--log-level", default=None, help="log level: DEBUG, INFO, WARNING or ERROR (default: the graph's, or WARNING)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start every node of a graph; Ctrl-C stops them all")
    run.add_argument("config", help="graph YAML file, for example configs/live.yaml")
    run.add_argument("--stdin", dest="forward_stdin", action="store_true", help="send stdin lines to the alerts node as alerts")

    alert = commands.add_parser("alert", help="publish a text alert through the running alerts node")
    alert.add_argument("text", nargs="?", help="alert text, for example 'Road work ahead, right lane closed'")
    alert.add_argument("--severity", choices=("info", "warning", "critical"), default="info", help="alert severity (default info)")
    alert.add_argument("--category", default=None, help="category, for example construction; default: inferred by fusion")
    alert.add_argument("--expires", type=positive_float, default=None, metavar="SECONDS", help="lifetime in seconds (default: fusion's)")
    alert.add_argument("--stdin", action="store_true", help="read alerts from stdin, one per line (text or JSON)")
    alert.add_argument("--endpoint", default=None, help="alerts node ingest endpoint (default: from the running graph)")
    alert.add_argument("--config", default=None, help="graph YAML file (default: the running graph)")
    alert.add_argument("--timeout", type=positive_float, default=2.0, metavar="SECONDS", help="wait per attempt for the acknowledgement")

    topics = commands.add_parser("topics", help="list topics with rate (Hz), bandwidth and drop counts")
    topics.add_argument("--config", default=None, help="graph YAML file (default: the running graph)")
    topics.add_argument("--duration", type=positive_float, default=2.0, metavar="SECONDS", help="measuring time (default 2)")
    topics.add_argument("--settle", type=non_negative_float, default=0.5, metavar="SECONDS", help="time to connect before measuring (default 0.5)")

    echo = commands.add_parser("echo", help="print the headers of the next messages on a topic, as JSON lines")
    echo.add_argument("topic", help="topic name, for example camera")
    echo.add_argument("--count", type=positive_int, default=None, help="stop after this many messages (default: run until Ctrl-C)")
    echo.add_argument("--payload", action="store_true", help="include text and JSON payloads (alerts, summaries)")
    echo.add_argument("--timeout", type=positive_float, default=None, metavar="SECONDS", help="give up after this many seconds")
    echo.add_argument("--config", default=None, help="graph YAML file (default: the running graph)")

    listen = commands.add_parser("listen", help="print scene summaries as they come (text, or JSON lines)")
    listen.add_argument("--json", action="store_true", help="one JSON summary per line (schema in docs/summaries.md)")
    listen.add_argument("--count", type=positive_int, default=None, help="stop after this many summaries")
    listen.add_argument("--timeout", type=positive_float, default=None, metavar="SECONDS", help="give up after this long without a summary")
    listen.add_argument("--endpoint", default=None, help="summary endpoint (default: from the running graph)")
    listen.add_argument("--config", default=None, help="graph YAML file (default: the running graph)")

    demo = commands.add_parser("demo", help="generate a synthetic drive and replay it through the full pipeline")
    demo.add_argument("--fast", action="store_true", help="replay as fast as fusion keeps up instead of in real time")
    demo.add_argument("--json", action="store_true", help="print summaries as JSON lines")
    demo.add_argument("--out", type=Path, default=None, metavar="FILE", help="also write summaries to this JSONL file")
    demo.add_argument("--folder", default="recordings", help="where the demo drive is written (default recordings/)")
    demo.add_argument("--regenerate", action="store_true", help="write the demo drive again even when it exists")

    models = commands.add_parser("models", help="list the models, or pull and verify them")
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    models_commands.add_parser("list", help="each model: present or missing, size, where it comes from")
    pull = models_commands.add_parser("pull", help="fetch and verify models (default: all); offline-safe")
    pull.add_argument("names", nargs="*", help="model names, for example yamnet clip (default: every model)")
    pull.add_argument("--force", action="store_true", help="fetch again even when present")

    for module_name in CLI_MODULES:
        module = importlib.import_module(module_name)
        COMMANDS.update(module.register_cli(commands))
    return parser


CLI_MODULES: list[str] = ["pipeline.recording", "pipeline.replay"]
"""Modules with a ``register_cli(commands) -> {name: function}`` that add their own commands."""


def main(argv: list[str] | None = None) -> int:
    """Run the ``scenewatch`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        logging.basicConfig(level=(args.log_level or "WARNING").upper(), format="%(levelname)s %(name)s: %(message)s")
    else:
        args.log_level = args.log_level
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"scenewatch {args.command}: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, TimeoutError, ValueError, OSError) as error:
        print(f"scenewatch {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`| head`); exit quietly like other filters.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
