"""Audio event classifier (YAMNet on ONNX Runtime) and loudness trend.

:class:`AudioEventClassifier` turns an audio chunk into scene event scores.
It computes YAMNet log-mel patches with :mod:`pipeline.models.melspec`, runs
the int8 YAMNet ONNX model from the model store on each 0.96 s patch, and
maps the 521 AudioSet class scores to scene events with
``configs/audio_events.yaml``. :class:`LoudnessTrend` reports from a series of
per-window levels whether a source gets louder or quieter.

Example::

    import soundfile as sf
    from pipeline.models.audio import AudioEventClassifier, LoudnessTrend

    classifier = AudioEventClassifier()  # ModelMissingError until `scenewatch models pull yamnet`
    samples, rate = sf.read("siren.wav", dtype="float32")
    result = classifier.classify(samples, rate)
    print(result.events["emergency_vehicle"], result.top_labels[0], result.dbfs)

    trend = LoudnessTrend()
    for end_ns, level in [(1_000_000_000, -40.0), (2_000_000_000, -35.0), (3_000_000_000, -30.0)]:
        state = trend.update(end_ns, level)
    assert state == "approaching"
"""

from __future__ import annotations

import csv
import difflib
import logging
import math
import re
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import yaml

from pipeline.models import melspec
from pipeline.models.store import ModelStore

__all__ = [
    "DEFAULT_MAPPING_PATH",
    "CLASS_MAP_FILENAME",
    "DBFS_FLOOR",
    "TOP_LABEL_COUNT",
    "AudioEventMappingError",
    "AudioResult",
    "AudioEventClassifier",
    "LoudnessTrend",
    "Trend",
    "load_class_names",
    "load_event_mapping",
    "rms_dbfs",
]

logger = logging.getLogger(__name__)

# NOTE: configs/ is not package data, so this default exists only in a source
# checkout or an editable install. Elsewhere pass mapping_path explicitly.
DEFAULT_MAPPING_PATH = Path(__file__).resolve().parents[2] / "configs" / "audio_events.yaml"
CLASS_MAP_FILENAME = "yamnet_class_map.csv"
DBFS_FLOOR = -120.0
TOP_LABEL_COUNT = 5

_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

Trend = Literal["approaching", "receding", "steady"]


class AudioEventMappingError(ValueError):
    """The scene event mapping file is missing, malformed or names an unknown AudioSet class."""


@dataclass(frozen=True)
class AudioResult:
    """Classification of one audio chunk.

    Attributes:
        events: Scene event -> score in [0, 1], the maximum over the event's
            AudioSet classes and over the chunk's 0.96 s patches.
        top_labels: The five AudioSet classes with the highest scores (maximum
            over patches), as ``(display name, score)``, highest first.
        dbfs: RMS level of the input over all samples and channels, in dB
            relative to full scale (a full-scale sine is -3.01 dBFS). Silence
            reads ``DBFS_FLOOR`` (-120 dBFS).
        duration_s: Length of the input in seconds, before any padding.
    """

    events: dict[str, float]
    top_labels: list[tuple[str, float]]
    dbfs: float
    duration_s: float

    def top_event(self) -> tuple[str, float]:
        """Return the scene event with the highest score as ``(event, score)``."""
        return max(self.events.items(), key=lambda item: item[1])


def rms_dbfs(samples: np.ndarray) -> float:
    """Measure the RMS level of audio in dBFS.

    Args:
        samples: Float audio in [-1, 1], any shape; all samples of all channels count.

    Returns:
        ``20 * log10(rms)``, at least ``DBFS_FLOOR`` (-120 dBFS), which is also
        the value for empty input.
    """
    array = np.asarray(samples, dtype=np.float64)
    if array.size == 0:
        return DBFS_FLOOR
    rms = math.sqrt(float(np.mean(np.square(array))))
    if rms <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * math.log10(rms))


def load_class_names(class_map_path: Path) -> list[str]:
    """Read the AudioSet display names, in model output order, from a YAMNet class map CSV.

    Args:
        class_map_path: CSV with the columns ``index,mid,display_name``.

    Returns:
        The display names, where entry ``i`` names output ``i``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file lacks the ``display_name`` column or its
            ``index`` column is not 0, 1, 2, ... in order.
    """
    with class_map_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    if not rows or "display_name" not in rows[0] or "index" not in rows[0]:
        raise ValueError(f"{class_map_path} has no index and display_name columns")
    for position, row in enumerate(rows):
        if row["index"] != str(position):
            raise ValueError(
                f"{class_map_path} row {position + 2} has index {row['index']!r}, "
                f"expected {position}"
            )
    return [row["display_name"] for row in rows]


def load_event_mapping(mapping_path: Path, class_names: list[str]) -> dict[str, list[int]]:
    """Load the scene event mapping and resolve its AudioSet class names to output indices.

    The file is YAML with one key, ``events``, that maps each event name
    (lower case, digits and underscores) to a non-empty list of AudioSet
    display names.

    Args:
        mapping_path: The YAML file, ``configs/audio_events.yaml`` by default.
        class_names: Display names in model output order, from :func:`load_class_names`.

    Returns:
        Event name -> indices into the model output, in file order.

    Raises:
        AudioEventMappingError: If the file is missing or not valid YAML, has
            the wrong structure, repeats a class within an event, or names a
            class that is not in ``class_names``. The message names the file
            and the offending value.
    """
    try:
        document = yaml.safe_load(mapping_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise AudioEventMappingError(f"audio event mapping {mapping_path} not found") from error
    except yaml.YAMLError as error:
        raise AudioEventMappingError(
            f"audio event mapping {mapping_path} is not valid YAML: {error}"
        ) from error

    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, dict) or not events:
        raise AudioEventMappingError(
            f"audio event mapping {mapping_path} must have a non-empty 'events' mapping "
            f"of event name -> list of AudioSet class names"
        )

    index_of = {name: index for index, name in enumerate(class_names)}
    mapping: dict[str, list[int]] = {}
    for event, classes in events.items():
        mapping[str(event)] = _resolve_event(mapping_path, event, classes, index_of)
    return mapping


def _resolve_event(
    mapping_path: Path, event: object, classes: object, index_of: dict[str, int]
) -> list[int]:
    if not isinstance(event, str) or not _EVENT_NAME.match(event):
        raise AudioEventMappingError(
            f"invalid event name {event!r} in {mapping_path}; "
            f"use lower case letters, digits and '_'"
        )
    if not isinstance(classes, list) or not classes:
        raise AudioEventMappingError(
            f"event {event!r} in {mapping_path} must list at least one AudioSet class name"
        )

    indices: list[int] = []
    for class_name in classes:
        if class_name not in index_of:
            suggestions = difflib.get_close_matches(str(class_name), list(index_of), n=3)
            hint = ""
            if suggestions:
                hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?"
            raise AudioEventMappingError(
                f"unknown AudioSet class {class_name!r} for event {event!r} in {mapping_path}; "
                f"names must match the display_name column of {CLASS_MAP_FILENAME} exactly{hint}"
            )
        if index_of[class_name] in indices:
            raise AudioEventMappingError(
                f"AudioSet class {class_name!r} is listed twice for event {event!r} "
                f"in {mapping_path}"
            )
        indices.append(index_of[class_name])
    return indices


def _read_varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


_ProtobufField = tuple[int, int, "int | bytes"]


def _protobuf_fields(buffer: bytes) -> Iterator[_ProtobufField]:
    """Yield ``(field number, wire type, value)`` for each field of one protobuf message."""
    position = 0
    while position < len(buffer):
        tag, position = _read_varint(buffer, position)
        number, wire_type = tag >> 3, tag & 0x7
        if wire_type == 0:
            value, position = _read_varint(buffer, position)
        elif wire_type == 1:
            value, position = buffer[position : position + 8], position + 8
        elif wire_type == 2:
            length, position = _read_varint(buffer, position)
            value, position = buffer[position : position + length], position + length
        elif wire_type == 5:
            value, position = buffer[position : position + 4], position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield number, wire_type, value


# ONNX TensorProto data types, from onnx.proto: FLOAT=1, UINT8=2, INT8=3, INT32=6.
_SCALAR_FORMATS = {1: "<f", 2: "<B", 3: "<b", 6: "<i"}


def _read_scalar_initializers(model_path: Path, names: set[str]) -> dict[str, float]:
    """Read scalar initializers by name from an ONNX file without the ``onnx`` package.

    Only scalars stored inline are read: ``raw_data`` (field 9), ``float_data``
    (field 4) or ``int32_data`` (field 5) of a TensorProto (``name`` is field 8,
    ``data_type`` field 2), found in ModelProto.graph (field 7) ->
    GraphProto.initializer (field 5). Field numbers are those of onnx.proto.
    """
    found: dict[str, float] = {}
    model_bytes = model_path.read_bytes()
    graphs = [value for number, _, value in _protobuf_fields(model_bytes) if number == 7]

    for graph in graphs:
        for number, _, tensor in _protobuf_fields(graph):
            if number != 5:
                continue
            fields = list(_protobuf_fields(tensor))
            name = next((bytes(v).decode() for n, _, v in fields if n == 8), None)
            if name not in names:
                continue
            data_type = next((v for n, w, v in fields if n == 2 and w == 0), None)
            found[name] = _decode_scalar(fields, data_type, name, model_path)
    return found


def _decode_scalar(
    fields: list[_ProtobufField], data_type: int | None, name: str, model_path: Path
) -> float:
    values = {number: value for number, _, value in fields}

    if 9 in values and data_type in _SCALAR_FORMATS:
        scalar_format = _SCALAR_FORMATS[data_type]
        return float(struct.unpack_from(scalar_format, values[9])[0])
    if 4 in values:
        return float(struct.unpack_from("<f", values[4])[0])
    if 5 in values:
        # int32_data is packed (bytes of varints) or, from older writers, one varint.
        packed = values[5]
        return float(_read_varint(packed, 0)[0] if isinstance(packed, bytes) else packed)
    raise ValueError(f"initializer {name} in {model_path} has no inline scalar value")


@dataclass(frozen=True)
class _Quantization:
    scale: float
    zero_point: float


class AudioEventClassifier:
    """Scene event scores for audio chunks, from YAMNet on ONNX Runtime (CPU).

    The model may take float32 log-mel patches or uint8 quantized ones. For a
    quantized model the scales and zero points come from the ONNX initializers
    ``<input>_scale`` and ``<input>_zero_point``, and likewise for the output.
    Outputs that fall outside [0, 1] are treated as logits and passed through
    a sigmoid.

    Args:
        model_path: YAMNet ONNX file. Defaults to the ``yamnet`` entry of
            ``store``, which is checked with ``ModelStore.require``.
        mapping_path: Scene event mapping YAML, ``configs/audio_events.yaml``
            by default.
        store: Model store used when ``model_path`` is None; a default
            :class:`ModelStore` when None.
        class_map_path: AudioSet class map CSV. Defaults to
            ``yamnet_class_map.csv`` beside the model.
        num_threads: ONNX Runtime intra-op threads; None lets ONNX Runtime choose.

    Raises:
        ModelMissingError: If ``model_path`` is None and the store lacks YAMNet.
        FileNotFoundError: If the model or the class map does not exist.
        AudioEventMappingError: If the mapping file is invalid.
        ValueError: If the model's input is not a 96 x 64 patch, or a quantized
            model lacks its scale and zero-point initializers.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        mapping_path: Path = DEFAULT_MAPPING_PATH,
        store: ModelStore | None = None,
        class_map_path: Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        if model_path is None:
            model_path = (store or ModelStore()).require("yamnet")
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"YAMNet model {model_path} not found")

        class_map_path = Path(class_map_path or model_path.parent / CLASS_MAP_FILENAME)
        if not class_map_path.is_file():
            raise FileNotFoundError(
                f"AudioSet class map {class_map_path} not found; it must sit beside the model "
                f"or be passed as class_map_path"
            )

        self.model_path = model_path
        self.class_names = load_class_names(class_map_path)
        self.event_classes = load_event_mapping(Path(mapping_path), self.class_names)

        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._configure_io(model_path)
        logger.info(
            "loaded YAMNet %s (%s input, %d classes, %d scene events)",
            model_path,
            self._input.type,
            len(self.class_names),
            len(self.event_classes),
        )

    def _configure_io(self, model_path: Path) -> None:
        self._input = self._session.get_inputs()[0]
        self._output = self._session.get_outputs()[0]

        shape = list(self._input.shape)
        if shape[-2:] != [melspec.PATCH_FRAMES, melspec.MEL_BINS]:
            raise ValueError(
                f"YAMNet model {model_path} takes input shaped {shape}, "
                f"expected (..., 96, 64) log-mel patches"
            )
        self._input_rank = len(shape)
        # A fixed batch size of 1 (as in the pinned int8 model) means one run per patch.
        self._batched = not (isinstance(shape[0], int) and shape[0] == 1)

        self._input_quantization = self._quantization(model_path, self._input)
        self._output_quantization = self._quantization(model_path, self._output)

    def _quantization(self, model_path: Path, node: ort.NodeArg) -> _Quantization | None:
        if node.type == "tensor(float)":
            return None
        if node.type != "tensor(uint8)":
            raise ValueError(
                f"YAMNet model {model_path}: {node.name} has unsupported type {node.type}"
            )

        names = {f"{node.name}_scale", f"{node.name}_zero_point"}
        values = _read_scalar_initializers(model_path, names)
        if set(values) != names:
            raise ValueError(
                f"quantized YAMNet model {model_path} lacks the initializers "
                f"{sorted(names - set(values))}"
            )
        return _Quantization(values[f"{node.name}_scale"], values[f"{node.name}_zero_point"])

    def classify(self, samples: np.ndarray, sample_rate: int) -> AudioResult:
        """Score one audio chunk.

        Audio shorter than one patch (0.975 s) is padded with silence in the
        waveform domain before the log-mel step, so short sounds such as a
        0.3 s bark still fill a patch with their true spectrum.

        Args:
            samples: Float audio in [-1, 1] shaped ``(frames,)`` or ``(frames, channels)``.
            sample_rate: Sample rate of ``samples`` in Hz; resampled to 16 kHz.

        Returns:
            The scene event scores, top AudioSet labels, level and duration.

        Raises:
            ValueError: If ``samples`` is empty, has an invalid shape or contains
                NaN or infinity, or ``sample_rate`` is not a positive integer.
        """
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim not in (1, 2) or samples.shape[0] == 0:
            raise ValueError(
                f"audio chunk must be shaped (frames,) or (frames, channels) with frames > 0, "
                f"got shape {samples.shape}"
            )
        if not np.isfinite(samples).all():
            raise ValueError("audio chunk contains NaN or infinite samples")

        patches = melspec.waveform_to_patches(samples, sample_rate)
        class_scores = self.score_patches(patches).max(axis=0)

        events = {
            event: float(class_scores[indices].max())
            for event, indices in self.event_classes.items()
        }
        top = np.argsort(-class_scores, kind="stable")[:TOP_LABEL_COUNT]
        return AudioResult(
            events=events,
            top_labels=[(self.class_names[i], float(class_scores[i])) for i in top],
            dbfs=rms_dbfs(samples),
            duration_s=samples.shape[0] / float(sample_rate),
        )

    def score_patches(self, patches: np.ndarray) -> np.ndarray:
        """Run YAMNet on log-mel patches.

        Args:
            patches: Log-mel patches shaped ``(patches, 96, 64)``.

        Returns:
            Class scores in [0, 1], float32, shaped ``(patches, 521)``.
        """
        if len(patches) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)

        feed = self._quantize(patches)
        if self._input_rank == 4:
            feed = feed[:, None, :, :]

        if self._batched:
            outputs = self._session.run([self._output.name], {self._input.name: feed})[0]
        else:
            runs = [
                self._session.run([self._output.name], {self._input.name: patch[None]})[0]
                for patch in feed
            ]
            outputs = np.concatenate(runs)

        scores = outputs.reshape(len(patches), -1).astype(np.float32)
        if self._output_quantization is not None:
            quantization = self._output_quantization
            scores = quantization.scale * (scores - quantization.zero_point)
        if scores.min() < 0.0 or scores.max() > 1.0:
            scores = 1.0 / (1.0 + np.exp(-scores))
        return scores

    def _quantize(self, patches: np.ndarray) -> np.ndarray:
        if self._input_quantization is None:
            return patches.astype(np.float32)
        quantization = self._input_quantization
        levels = np.round(patches / quantization.scale + quantization.zero_point)
        return np.clip(levels, 0, 255).astype(np.uint8)


@dataclass
class LoudnessTrend:
    """Whether a sound source approaches or recedes, from the level of successive windows.

    Each :meth:`update` adds one window's level. The trend is the least-squares
    slope of level against window end time over the last ``window_count``
    windows: above ``+threshold_db_per_s`` is ``"approaching"``, below
    ``-threshold_db_per_s`` is ``"receding"``, anything else is ``"steady"``.
    With fewer than ``min_windows`` windows the trend is ``"steady"``.

    Args:
        window_count: Number of most recent windows in the fit.
        threshold_db_per_s: Slope threshold in dB per second.
        min_windows: Windows needed before a trend other than ``"steady"``.

    Raises:
        ValueError: If ``min_windows < 2``, ``window_count < min_windows`` or
            ``threshold_db_per_s <= 0``.
    """

    window_count: int = 5
    # NOTE: 3 dB/s is a starting guess (a source doubling its sound pressure
    # in 2 s), not tuned on drive recordings.
    threshold_db_per_s: float = 3.0
    min_windows: int = 3
    _points: deque[tuple[float, float]] = field(init=False, repr=False)
    _last_end_ns: int | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.min_windows < 2 or self.window_count < self.min_windows:
            raise ValueError(
                f"need 2 <= min_windows <= window_count, got min_windows={self.min_windows}, "
                f"window_count={self.window_count}"
            )
        if self.threshold_db_per_s <= 0:
            raise ValueError(f"threshold_db_per_s must be positive, got {self.threshold_db_per_s}")
        self._points = deque(maxlen=self.window_count)

    def update(self, window_end_ns: int, dbfs: float) -> Trend:
        """Add one window's level and return the trend.

        Args:
            window_end_ns: End time of the window in nanoseconds; must increase
                from call to call.
            dbfs: RMS level of the window in dBFS.

        Raises:
            ValueError: If ``window_end_ns`` is not later than the previous one
                or ``dbfs`` is NaN.
        """
        if self._last_end_ns is not None and window_end_ns <= self._last_end_ns:
            raise ValueError(
                f"window end {window_end_ns} ns is not after the previous window end "
                f"{self._last_end_ns} ns"
            )
        if math.isnan(dbfs):
            raise ValueError(f"window level at {window_end_ns} ns is NaN")

        self._last_end_ns = window_end_ns
        self._points.append((window_end_ns / 1e9, float(dbfs)))
        return self.trend()

    def slope_db_per_s(self) -> float | None:
        """Return the fitted slope in dB per second, or None before ``min_windows`` windows."""
        if len(self._points) < self.min_windows:
            return None
        times = np.array([point[0] for point in self._points])
        levels = np.array([point[1] for point in self._points])
        times -= times.mean()
        return float(np.dot(times, levels - levels.mean()) / np.dot(times, times))

    def trend(self) -> Trend:
        """Return the current trend without adding a window."""
        slope = self.slope_db_per_s()
        if slope is None:
            return "steady"
        if slope > self.threshold_db_per_s:
            return "approaching"
        if slope < -self.threshold_db_per_s:
            return "receding"
        return "steady"

    def reset(self) -> None:
        """Forget all windows, for example after a gap in the audio stream."""
        self._points.clear()
        self._last_end_ns = None
