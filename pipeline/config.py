"""Graph configuration: topics, nodes, their parameters and restart policies.

A graph is a YAML file::

    name: live
    topics:
      camera: {endpoint: "tcp://127.0.0.1:5550", policy: latest}
      alerts: {endpoint: "tcp://127.0.0.1:5552", durability: transient_local}
    nodes:
      - id: camera
        node: camera                 # module nodes/camera.py, or a dotted module path
        outputs: {frames: camera}    # node output name -> topic
        params: {source: testpattern, fps: 15}
        restart: {policy: on-failure, max_restarts: 5, backoff_s: 0.5}

``load_graph`` validates all of it, including every node's ``params`` against
that node's ``Params`` model, and raises :class:`ConfigError` naming the key
(``nodes[0].params.fps``) and the fix.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.transport import TopicSpec

__all__ = ["ConfigError", "RestartPolicy", "NodeConfig", "GraphConfig", "load_graph", "parse_graph", "node_module"]


class ConfigError(ValueError):
    """An invalid graph configuration; the message names the key and the fix."""


class RestartPolicy(BaseModel):
    """When the launcher restarts a node that exited, and how long it waits."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["never", "on-failure", "always"] = "on-failure"
    max_restarts: int = Field(default=5, ge=0)
    """Restarts allowed before the node is given up; the count resets after ``reset_after_s`` of uptime."""
    backoff_s: float = Field(default=0.5, gt=0)
    """Delay before the first restart, in seconds; doubles after each further restart."""
    backoff_max_s: float = Field(default=10.0, gt=0)
    reset_after_s: float = Field(default=30.0, gt=0)
    required: bool = False
    """Stop the whole graph, with a failure exit status, when this node is given up."""


class NodeConfig(BaseModel):
    """One process of the graph."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    node: str = Field(min_length=1)
    """Module under ``nodes`` (``camera``) or a dotted module path (``mypkg.mynode``)."""
    outputs: dict[str, str] = Field(default_factory=dict)
    """Node output name -> topic name the node publishes."""
    inputs: dict[str, str] = Field(default_factory=dict)
    """Node input name -> topic name the node subscribes."""
    params: dict[str, Any] = Field(default_factory=dict)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    log_level: str | None = None


class GraphConfig(BaseModel):
    """A validated graph."""

    model_config = ConfigDict(extra="forbid")

    name: str = "scenewatch"
    topics: dict[str, dict[str, Any]]
    nodes: list[NodeConfig] = Field(min_length=1)
    log_level: str = "INFO"
    stop_timeout_s: float = Field(default=1.5, gt=0)
    """Time nodes get to exit after SIGTERM before they are killed, in seconds."""

    @model_validator(mode="after")
    def _check_topics_and_ids(self) -> "GraphConfig":
        first_index: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            if node.id in first_index:
                raise ValueError(
                    f"nodes[{index}].id: node id {node.id!r} is already used by nodes[{first_index[node.id]}]; "
                    "node ids must be unique"
                )
            first_index[node.id] = index
        return self

    def topic_spec(self, name: str) -> TopicSpec:
        return TopicSpec(name=name, **self.topics[name])

    def topic_specs(self) -> dict[str, TopicSpec]:
        return {name: self.topic_spec(name) for name in self.topics}

    def node(self, node_id: str) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"node {node_id!r} is not in graph {self.name!r}; nodes: {', '.join(n.id for n in self.nodes)}")


def node_module(name: str) -> ModuleType:
    """Import a node module by short name (``camera``) or dotted path.

    Raises:
        ConfigError: The module does not exist or lacks ``Params`` and ``run``.
    """
    dotted = name if "." in name else f"nodes.{name}"
    try:
        module = importlib.import_module(dotted)
    except ModuleNotFoundError as error:
        if error.name and dotted.startswith(error.name):
            raise ConfigError(f"node module {name!r} not found ({dotted}); use one of the modules in nodes/") from None
        raise
    for attribute in ("Params", "run"):
        if not hasattr(module, attribute):
            raise ConfigError(f"node module {dotted} has no {attribute!r}; a node module defines Params and run()")
    return module


def _location(prefix: str, loc: tuple[Any, ...]) -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def _raise_validation(prefix: str, error: ValidationError, source: str) -> None:
    lines = []
    for item in error.errors():
        where = _location(prefix, tuple(item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against docs and README"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] == "value_error":
            message = str(item["ctx"]["error"])  # without pydantic's "Value error, " prefix
        lines.append(f"{source}: {where}: {message}" if where else f"{source}: {message}")
    raise ConfigError("\n".join(lines))


def parse_graph(raw: Any, source: str = "<config>") -> GraphConfig:
    """Validate a graph given as parsed YAML.

    Raises:
        ConfigError: Listing every invalid key with its path.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with 'topics' and 'nodes'")
    try:
        graph = GraphConfig.model_validate(raw)
    except ValidationError as error:
        _raise_validation("", error, source)
        raise  # unreachable, keeps type checkers quiet

    for name, fields in graph.topics.items():
        try:
            TopicSpec(name=name, **(fields or {}))
        except ValidationError as error:
            _raise_validation(f"topics.{name}", error, source)
        except TypeError:
            raise ConfigError(f"{source}: topics.{name}: must be a mapping with at least 'endpoint'") from None

    publishers: dict[str, str] = {}
    endpoints: dict[str, str] = {}
    for index, node in enumerate(graph.nodes):
        where = f"nodes[{index}] ({node.id})"
        for output, topic in node.outputs.items():
            if topic not in graph.topics:
                raise ConfigError(f"{source}: {where}.outputs.{output}: topic {topic!r} is not declared under 'topics'")
            if topic in publishers:
                raise ConfigError(
                    f"{source}: {where}.outputs.{output}: topic {topic!r} is already published by "
                    f"{publishers[topic]!r}; each topic has one publisher"
                )
            publishers[topic] = node.id
        for input_name, topic in node.inputs.items():
            if topic not in graph.topics:
                raise ConfigError(f"{source}: {where}.inputs.{input_name}: topic {topic!r} is not declared under 'topics'")

        module = node_module(node.node)
        try:
            module.Params.model_validate(node.params)
        except ValidationError as error:
            _raise_validation(f"nodes[{index}].params", error, source)
        required_outputs = getattr(module, "OUTPUTS", ())
        missing = [name for name in required_outputs if name not in node.outputs]
        if missing:
            raise ConfigError(f"{source}: {where}.outputs: node {node.node!r} needs outputs {', '.join(missing)}")

    for name, fields in graph.topics.items():
        endpoint = fields["endpoint"]
        if endpoint in endpoints:
            raise ConfigError(f"{source}: topics.{name}.endpoint: {endpoint} is also used by topic {endpoints[endpoint]!r}")
        endpoints[endpoint] = name
    return graph


def load_graph(path: str | Path) -> GraphConfig:
    """Read and validate a graph YAML file.

    Raises:
        ConfigError: The file is missing, is not YAML, or is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; the examples are in configs/") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_graph(raw, str(path))
