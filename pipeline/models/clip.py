"""Zero-shot scene concepts from camera frames with CLIP.

`ClipScorer` loads a CLIP checkpoint with Hugging Face transformers and embeds
the prompts of a concepts file (``configs/concepts.yaml``) once at start-up.
Each call to `ClipScorer.score` takes one window of frames, selects a few
distinct ones, embeds them in one batched forward pass and returns a
probability per concept.

torch and transformers are imported only when a `ClipScorer` is created, so the
rest of the pipeline runs without them.

Example::

    scorer = ClipScorer("models/clip-vit-base-patch32", frames_per_window=3)
    result = scorer.score(frames)  # frames: BGR uint8 arrays from one window
    for name, probability in result.top_labels:
        print(name, round(probability, 2))

Raises `ClipUnavailableError` at construction when torch, transformers or the
checkpoint files are missing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import yaml

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_CONCEPTS_PATH",
    "DEFAULT_MODEL",
    "ClipResult",
    "ClipScorer",
    "ClipUnavailableError",
    "Concept",
    "ImagePreprocessing",
    "load_concepts",
    "select_distinct_frames",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_CONCEPTS_PATH = Path(__file__).resolve().parents[2] / "configs" / "concepts.yaml"

# Side of the grayscale thumbnail that near-duplicate detection compares, in pixels.
_THUMBNAIL_SIDE = 32

# CLIP clamps its learned inverse temperature (logit scale) to 100 during training.
_MAX_LOGIT_SCALE = 100.0

_CONCEPT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DTYPES = ("float32", "bfloat16", "float16")
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


class ClipUnavailableError(RuntimeError):
    """Raised when the CLIP model cannot be loaded.

    The message names the model id or folder, the reason, and how to make the
    weights available offline.
    """


@dataclass(frozen=True)
class Concept:
    """One scene concept: a stable name, a summary label and its prompts."""

    name: str
    label: str
    prompts: tuple[str, ...]


@dataclass
class ClipResult:
    """Concept scores for one window of frames.

    Attributes:
        probabilities: concept name to probability in [0, 1], in the order of the
            concepts file. With ``aggregation="mean"`` they sum to 1. With
            ``"max"`` each is the highest per-frame value, so the sum can exceed 1.
        top_labels: the ``top_k`` highest (name, probability) pairs, highest first.
        frame_indices: indices into the input list of the frames that were scored.
        image_embedding: mean of the L2-normalised image embeddings of the scored
            frames (not normalised again, so its norm is at most 1), or None unless
            ``return_embedding=True`` was passed.
        elapsed_s: wall time of preprocessing and the forward pass, in seconds.
    """

    probabilities: dict[str, float]
    top_labels: list[tuple[str, float]]
    frame_indices: list[int]
    image_embedding: list[float] | None = None
    elapsed_s: float = 0.0


def load_concepts(path: str | os.PathLike[str]) -> list[Concept]:
    """Read and validate a concepts YAML file.

    The file maps ``concepts`` to ``{name: {label: str, prompts: [str, ...]}}``.
    ``label`` is optional and defaults to the name with underscores as spaces.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the YAML is invalid, fewer than two concepts are defined, or a
            concept has an invalid name, label or prompt list. The message names the
            file and the concept.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concepts file {path} not found; pass concepts_path or restore configs/concepts.yaml")

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"concepts file {path} is not valid YAML: {error}") from error

    entries = document.get("concepts") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or len(entries) < 2:
        raise ValueError(f"concepts file {path} must map 'concepts' to at least two named concepts")

    return [_parse_concept(path, name, entry) for name, entry in entries.items()]


def _parse_concept(path: Path, name: object, entry: object) -> Concept:
    if not isinstance(name, str) or not _CONCEPT_NAME.match(name):
        raise ValueError(
            f"concepts file {path}: concept name {name!r} is invalid; use lower case letters, digits and underscores"
        )
    if not isinstance(entry, dict):
        raise ValueError(f"concepts file {path}: concept {name!r} must be a mapping with 'prompts'")

    prompts = entry.get("prompts")
    if (
        not isinstance(prompts, list)
        or not prompts
        or not all(isinstance(prompt, str) and prompt.strip() for prompt in prompts)
    ):
        raise ValueError(f"concepts file {path}: concept {name!r} needs a non-empty list of non-empty 'prompts'")

    label = entry.get("label", name.replace("_", " "))
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"concepts file {path}: concept {name!r} has an empty or non-text 'label'")

    return Concept(name=name, label=label.strip(), prompts=tuple(prompt.strip() for prompt in prompts))


def select_distinct_frames(frames: list[np.ndarray], max_frames: int, dedup_threshold: float) -> list[int]:
    """Choose up to ``max_frames`` frame indices spread over a window, skipping near-duplicates.

    The window is split into ``max_frames`` equal runs of consecutive frames. From
    each run the frame nearest its middle (the later one on a tie) is taken, unless it is a near-duplicate of
    a frame already taken, in which case the next nearest frame of that run is tried.
    A run with only near-duplicates contributes nothing. Two frames are
    near-duplicates when the mean absolute difference of their 32x32 grayscale
    thumbnails is below ``dedup_threshold`` grey levels (0-255 scale).

    Returns:
        Sorted indices into ``frames``. Empty only when ``frames`` is empty.

    Raises:
        ValueError: ``max_frames`` is below 1 or a frame is not an HxWx3 uint8 array.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    for index, frame in enumerate(frames):
        _check_frame(index, frame)

    if not frames:
        return []

    thumbnails: dict[int, np.ndarray] = {}
    chosen: list[int] = []
    for run in np.array_split(np.arange(len(frames)), min(max_frames, len(frames))):
        for index in _middle_out(run):
            thumbnail = thumbnails.setdefault(index, _grey_thumbnail(frames[index]))
            if all(np.abs(thumbnail - thumbnails[other]).mean() >= dedup_threshold for other in chosen):
                chosen.append(index)
                break

    return sorted(chosen)


def _middle_out(run: np.ndarray) -> list[int]:
    """Order the indices of a run by their distance from its middle, nearest first.

    Of two frames equally near the middle, the later one comes first.
    """
    middle = (len(run) - 1) / 2
    order = sorted(range(len(run)), key=lambda position: (abs(position - middle), -position))
    return [int(run[position]) for position in order]


def _grey_thumbnail(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    thumbnail = cv2.resize(grey, (_THUMBNAIL_SIDE, _THUMBNAIL_SIDE), interpolation=cv2.INTER_AREA)
    return thumbnail.astype(np.float32)


def _check_frame(index: int, frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"frame {index} must be an HxWx3 BGR uint8 array, got shape {shape} and dtype {dtype}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame {index} is empty, shape {frame.shape}")


@dataclass(frozen=True)
class ImagePreprocessing:
    """CLIP image preprocessing as stored in a checkpoint's ``preprocessor_config.json``.

    The steps run in this order: BGR to RGB, optional padding to a square, and a
    resize so that the shortest edge is ``shortest_edge`` pixels. Then come a
    centre crop to ``crop_height`` x ``crop_width`` pixels, one multiplication by
    ``rescale_factor``, and normalisation with ``mean`` and ``std`` (RGB order,
    0-1 scale).

    NOTE: resizing uses OpenCV (area filter when shrinking, bicubic when
    enlarging), not PIL bicubic as transformers' processor does, because that
    processor needs Pillow or torchvision. Pixel values differ slightly from
    transformers' output. The difference has not been measured on real weights.
    """

    shortest_edge: int | None = 224
    resize_to: tuple[int, int] | None = None
    crop_height: int = 224
    crop_width: int = 224
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImagePreprocessing:
        """Build the steps from a ``preprocessor_config.json`` mapping.

        Accepts both the legacy form (``"size": 224, "crop_size": 224``) and the
        current one (``"size": {"shortest_edge": 224}``, ``"crop_size": {"height":
        224, "width": 224}``). Missing keys keep the OpenAI CLIP defaults.

        Raises:
            ValueError: ``size`` or ``crop_size`` has an unknown form.
        """
        defaults = cls()
        shortest_edge, resize_to = _parse_size(config.get("size", defaults.shortest_edge))
        if not config.get("do_resize", True):
            shortest_edge, resize_to = None, None
        crop_height, crop_width = _parse_crop_size(config.get("crop_size", defaults.crop_height))

        return cls(
            shortest_edge=shortest_edge,
            resize_to=resize_to,
            crop_height=crop_height,
            crop_width=crop_width,
            do_center_crop=bool(config.get("do_center_crop", True)),
            # Legacy feature-extractor configs omit do_rescale but always rescaled.
            do_rescale=bool(config.get("do_rescale", True)),
            rescale_factor=float(config.get("rescale_factor", defaults.rescale_factor)),
            do_normalize=bool(config.get("do_normalize", True)),
            mean=tuple(float(value) for value in config.get("image_mean", defaults.mean)),
            std=tuple(float(value) for value in config.get("image_std", defaults.std)),
        )

    @property
    def mean_colour_rgb(self) -> tuple[int, int, int]:
        """Normalisation mean as 0-255 RGB, the padding colour that normalises to about zero."""
        return tuple(int(round(channel / self.rescale_factor)) for channel in self.mean)

    def apply(self, frame_bgr: np.ndarray, pad_to_square: bool = False) -> np.ndarray:
        """Turn one BGR uint8 frame into a 3xHxW float32 pixel array for the vision encoder.

        With ``pad_to_square`` the frame is centred on a square of the mean colour
        before resizing, so the whole field of view reaches the model. Without it,
        the centre crop cuts off the sides of a wide frame.

        Raises:
            ValueError: the frame is not an HxWx3 uint8 array.
        """
        _check_frame(0, frame_bgr)
        image = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)

        if pad_to_square:
            image = _pad_to_square(image, self.mean_colour_rgb)
        image = self._resize(image)
        if self.do_center_crop:
            image = _center_crop(image, self.crop_height, self.crop_width)

        pixels = image.astype(np.float32)
        if self.do_rescale:
            pixels *= np.float32(self.rescale_factor)
        if self.do_normalize:
            pixels -= np.asarray(self.mean, dtype=np.float32)
            pixels /= np.asarray(self.std, dtype=np.float32)

        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def _resize(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if self.resize_to is not None:
            target_height, target_width = self.resize_to
        elif self.shortest_edge is not None:
            # Same rounding as transformers: the long edge is truncated, not rounded.
            short, long = min(height, width), max(height, width)
            scaled_long = int(self.shortest_edge * long / short)
            if height <= width:
                target_height, target_width = self.shortest_edge, scaled_long
            else:
                target_height, target_width = scaled_long, self.shortest_edge
        else:
            return image

        if (target_height, target_width) == (height, width):
            return image
        shrinking = target_height * target_width < height * width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        return cv2.resize(image, (target_width, target_height), interpolation=interpolation)


def _parse_size(size: object) -> tuple[int | None, tuple[int, int] | None]:
    if isinstance(size, int):
        return size, None
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"]), None
    if isinstance(size, dict) and {"height", "width"} <= size.keys():
        return None, (int(size["height"]), int(size["width"]))
    raise ValueError(f"preprocessor 'size' {size!r} is not supported; expected an int, shortest_edge or height/width")


def _parse_crop_size(crop_size: object) -> tuple[int, int]:
    if isinstance(crop_size, int):
        return crop_size, crop_size
    if isinstance(crop_size, dict) and {"height", "width"} <= crop_size.keys():
        return int(crop_size["height"]), int(crop_size["width"])
    raise ValueError(f"preprocessor 'crop_size' {crop_size!r} is not supported; expected an int or height/width")


def _pad_to_square(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    side = max(height, width)
    top = (side - height) // 2
    left = (side - width) // 2
    return cv2.copyMakeBorder(
        image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=colour
    )


def _center_crop(image: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height < crop_height or width < crop_width:
        # Like transformers, pad a too-small image with zeros before cropping.
        pad_y = max(crop_height - height, 0)
        pad_x = max(crop_width - width, 0)
        image = cv2.copyMakeBorder(
            image, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2, cv2.BORDER_CONSTANT, value=0
        )
        height, width = image.shape[:2]
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return image[top : top + crop_height, left : left + crop_width]


@dataclass
class _LoadedClip:
    model: Any
    tokenizer: Any
    preprocessing: ImagePreprocessing
    source: str


class ClipScorer:
    """Score windows of camera frames against the scene concepts with CLIP.

    Args:
        model: Hugging Face model id or local checkpoint folder containing
            ``config.json``, the weights, ``preprocessor_config.json`` and the
            tokenizer files. Default ``openai/clip-vit-base-patch32``.
        concepts_path: concepts YAML file; see `load_concepts`. Default
            ``configs/concepts.yaml`` in the repository.
        pad_to_square: pad each frame to a square of the mean colour before
            resizing instead of centre-cropping it. Default False.
        device: torch device, for example ``"cpu"`` or ``"cuda:0"``. Default ``"cpu"``.
        frames_per_window: maximum number of frames scored per window. Default 3.
        dedup_threshold: frames whose 32x32 grayscale thumbnails differ by less
            than this mean absolute difference, in grey levels (0-255), count as
            near-duplicates and are scored once. Default 1.5. Measured for scale:
            consecutive frames of a 960x540, 25 fps highway dashcam video differ by
            0.8 to 3.3, while Gaussian noise (sigma 3) or JPEG recompression at
            quality 70 changes a frame by about 0.1.
        aggregation: how per-frame probabilities combine over the scored frames,
            ``"mean"`` (default) or ``"max"``.
        dtype: weight and activation type, ``"float32"`` (default),
            ``"bfloat16"`` or ``"float16"`` (CUDA only).
        quantize: apply dynamic int8 quantisation to the Linear layers (CPU and
            float32 only). Default False.
        top_k: number of entries in `ClipResult.top_labels`. Default 3.

    Raises:
        ClipUnavailableError: torch or transformers is not installed, or the
            checkpoint cannot be loaded.
        FileNotFoundError, ValueError: the concepts file is missing or invalid.
        ValueError: an argument is out of range or an unsupported combination,
            or ``device`` names CUDA on a machine without it.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        concepts_path: str | os.PathLike[str] = DEFAULT_CONCEPTS_PATH,
        pad_to_square: bool = False,
        device: str = "cpu",
        frames_per_window: int = 3,
        dedup_threshold: float = 1.5,
        aggregation: Literal["mean", "max"] = "mean",
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        quantize: bool = False,
        top_k: int = 3,
    ) -> None:
        _check_options(frames_per_window, dedup_threshold, aggregation, dtype, quantize, device, top_k)
        self.concepts = load_concepts(concepts_path)
        self.pad_to_square = pad_to_square
        self.frames_per_window = frames_per_window
        self.dedup_threshold = dedup_threshold
        self.aggregation = aggregation
        self.top_k = top_k
        self.dtype_name = dtype

        torch = _import_torch()
        self._torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but torch finds no CUDA device; use device 'cpu'")
        self._dtype = getattr(torch, dtype)

        started = time.perf_counter()
        loaded = _load_checkpoint(model)
        self.model_source = loaded.source
        self.preprocessing = loaded.preprocessing
        self._tokenizer = loaded.tokenizer
        self._model = _prepare_model(loaded.model, self.device, self._dtype, quantize)
        self._logit_scale = min(float(self._model.logit_scale.exp().item()), _MAX_LOGIT_SCALE)

        self._concept_embeddings = self._embed_concepts()
        logger.info(
            "CLIP %s loaded on %s (%s%s) with %d concepts in %.2f s",
            self.model_source,
            self.device,
            dtype,
            ", int8 dynamic" if quantize else "",
            len(self.concepts),
            time.perf_counter() - started,
        )

    @property
    def concept_names(self) -> list[str]:
        """Concept names in the order of the concepts file."""
        return [concept.name for concept in self.concepts]

    @property
    def concept_embeddings(self) -> np.ndarray:
        """Unit-norm text embedding per concept, shape (concepts, dim), float32."""
        return self._concept_embeddings.float().cpu().numpy().copy()

    @property
    def logit_scale(self) -> float:
        """CLIP's learned inverse temperature, capped at 100, that multiplies cosine similarities before the softmax."""
        return self._logit_scale

    def select_frames(self, frames: list[np.ndarray]) -> list[int]:
        """Choose the frames of a window to score; see `select_distinct_frames`.

        Raises:
            ValueError: a frame is not an HxWx3 uint8 array.
        """
        return select_distinct_frames(frames, self.frames_per_window, self.dedup_threshold)

    def pixel_values(self, frames: list[np.ndarray]) -> np.ndarray:
        """Preprocess BGR uint8 frames into an (n, 3, H, W) float32 array.

        Raises:
            ValueError: a frame is not an HxWx3 uint8 array.
        """
        for index, frame in enumerate(frames):
            _check_frame(index, frame)
        return np.stack([self.preprocessing.apply(frame, self.pad_to_square) for frame in frames])

    def embed_images(self, frames: list[np.ndarray]) -> np.ndarray:
        """Embed every given frame in one batch, without frame selection.

        Returns:
            (n, dim) float32 array of L2-normalised image embeddings.

        Raises:
            ValueError: ``frames`` is empty or a frame is not an HxWx3 uint8 array.
        """
        if not frames:
            raise ValueError("embed_images needs at least one frame")
        return self._embed_pixels(self.pixel_values(frames)).cpu().numpy()

    def score(self, frames: list[np.ndarray], return_embedding: bool = False) -> ClipResult:
        """Score one window of BGR uint8 frames against the concepts.

        Selects up to ``frames_per_window`` distinct frames, embeds them in one
        forward pass, and applies a softmax over the concepts to each frame's
        cosine similarities times the logit scale. The per-frame probabilities
        are then combined by ``aggregation``.

        Raises:
            ValueError: ``frames`` is empty or a frame is not an HxWx3 uint8 array.
        """
        if not frames:
            raise ValueError("score needs at least one frame per window")

        started = time.perf_counter()
        indices = self.select_frames(frames)
        image_embeddings = self._embed_pixels(self.pixel_values([frames[index] for index in indices]))

        logits = self._logit_scale * image_embeddings @ self._concept_embeddings.T
        per_frame = logits.softmax(dim=-1)
        if self.aggregation == "max":
            combined = per_frame.max(dim=0).values
        else:
            combined = per_frame.mean(dim=0)

        probabilities = dict(zip(self.concept_names, (float(value) for value in combined.cpu()), strict=True))
        ranked = sorted(probabilities.items(), key=lambda item: item[1], reverse=True)
        embedding = image_embeddings.mean(dim=0).cpu().tolist() if return_embedding else None

        return ClipResult(
            probabilities=probabilities,
            top_labels=ranked[: self.top_k],
            frame_indices=indices,
            image_embedding=embedding,
            elapsed_s=time.perf_counter() - started,
        )

    def _embed_concepts(self) -> torch.Tensor:
        """Embed every prompt once and return one unit-norm float32 vector per concept."""
        torch = self._torch
        prompts = [prompt for concept in self.concepts for prompt in concept.prompts]
        tokens = self._tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")

        with torch.inference_mode():
            text_output = self._model.text_model(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
            prompt_embeddings = self._model.text_projection(text_output.pooler_output).float()
        prompt_embeddings = torch.nn.functional.normalize(prompt_embeddings, dim=-1)

        concept_embeddings = []
        start = 0
        for concept in self.concepts:
            mean = prompt_embeddings[start : start + len(concept.prompts)].mean(dim=0)
            concept_embeddings.append(torch.nn.functional.normalize(mean, dim=0))
            start += len(concept.prompts)
        return torch.stack(concept_embeddings)

    def _embed_pixels(self, pixel_values: np.ndarray) -> torch.Tensor:
        """Run the vision encoder once and return (n, dim) unit-norm float32 embeddings."""
        torch = self._torch
        pixels = torch.from_numpy(pixel_values).to(self.device, self._dtype)
        with torch.inference_mode():
            vision_output = self._model.vision_model(pixel_values=pixels)
            embeddings = self._model.visual_projection(vision_output.pooler_output).float()
        return torch.nn.functional.normalize(embeddings, dim=-1)


def _check_options(
    frames_per_window: int,
    dedup_threshold: float,
    aggregation: str,
    dtype: str,
    quantize: bool,
    device: str,
    top_k: int,
) -> None:
    if frames_per_window < 1:
        raise ValueError(f"frames_per_window must be at least 1, got {frames_per_window}")
    if dedup_threshold < 0:
        raise ValueError(f"dedup_threshold must be 0 or more grey levels, got {dedup_threshold}")
    if aggregation not in ("mean", "max"):
        raise ValueError(f"aggregation must be 'mean' or 'max', got {aggregation!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")

    on_cpu = device.split(":")[0] == "cpu"
    if dtype == "float16" and on_cpu:
        raise ValueError("dtype 'float16' needs a CUDA device; use 'bfloat16' on the CPU")
    if quantize and (not on_cpu or dtype != "float32"):
        raise ValueError(f"quantize=True needs device 'cpu' and dtype 'float32', got {device!r} and {dtype!r}")


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise ClipUnavailableError(
            f"CLIP needs torch, which is not installed ({error}); install it with pip install 'scenewatch[clip]'"
        ) from error
    return torch


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_VALUES


def _load_checkpoint(model: str) -> _LoadedClip:
    """Load model, tokenizer and preprocessing from a local folder or the Hugging Face cache.

    A hub id is looked up in this order: the model store folder that
    ``scenewatch models pull clip`` fills, the local Hugging Face cache, and,
    only when HF_HUB_OFFLINE is not set, a download through transformers.

    Raises:
        ClipUnavailableError: transformers is missing, the folder does not exist,
            or any checkpoint file cannot be found or read.
    """
    try:
        import transformers
    except ImportError as error:
        raise ClipUnavailableError(
            f"CLIP needs transformers, which is not installed ({error}); install it with pip install 'scenewatch[clip]'"
        ) from error

    folder = Path(model).expanduser()
    looks_local = folder.is_absolute() or model.startswith((".", "~")) or folder.exists()
    if looks_local:
        if not folder.is_dir():
            raise ClipUnavailableError(_unavailable_message(model, "the folder does not exist"))
        return _load_from(transformers, str(folder), local_files_only=True)

    stored = _model_store_copy(model)
    if stored is not None:
        return _load_from(transformers, str(stored), local_files_only=True)

    try:
        return _load_from(transformers, model, local_files_only=True)
    except ClipUnavailableError:
        if _offline():
            raise
        # Without network access huggingface_hub retries for about 20 s before it fails.
        logger.warning("CLIP %s is not in the local Hugging Face cache; trying to download it", model)
    return _load_from(transformers, model, local_files_only=False)


def _model_store_copy(model: str) -> Path | None:
    """Return the model store folder that contains a copy of hub id ``model``, or None."""
    try:
        from pipeline.models.store import HuggingFaceModelEntry, ModelStore, registered_models
    except ImportError:
        return None

    store = ModelStore()
    for name in registered_models():
        entry = store.entry(name)
        if isinstance(entry, HuggingFaceModelEntry) and entry.repo_id == model:
            folder = store.root / name
            if (folder / "config.json").is_file():
                return folder
    return None


def _load_from(transformers: Any, source: str, local_files_only: bool) -> _LoadedClip:
    try:
        clip_model = transformers.CLIPModel.from_pretrained(source, local_files_only=local_files_only)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(source, local_files_only=local_files_only)
        preprocessing = ImagePreprocessing.from_config(_read_preprocessor_config(source, local_files_only))
    except (OSError, ValueError, KeyError) as error:
        # transformers and huggingface_hub raise OSError subclasses for missing
        # files and failed downloads, and ValueError or KeyError for unreadable configs.
        if Path(source).is_dir():
            reason = "a checkpoint file in the folder is missing or unreadable"
        elif local_files_only:
            reason = "not found in the local Hugging Face cache"
        else:
            reason = "the download failed"
        raise ClipUnavailableError(_unavailable_message(source, f"{reason}: {error}")) from error
    return _LoadedClip(model=clip_model, tokenizer=tokenizer, preprocessing=preprocessing, source=source)


def _read_preprocessor_config(source: str, local_files_only: bool) -> dict[str, Any]:
    local = Path(source) / "preprocessor_config.json"
    if local.is_file():
        path = local
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, "preprocessor_config.json", local_files_only=local_files_only))

    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{path} must contain a JSON object")
    return config


def _unavailable_message(model: str, reason: str) -> str:
    return (
        f"CLIP model {model!r} could not be loaded ({reason}). Its weights are not available offline on this "
        "machine. Run `scenewatch models pull clip` to fetch them, or set perception.clip.model to a local folder with "
        "config.json, the model weights, preprocessor_config.json and the tokenizer files (tokenizer.json, or "
        "vocab.json and merges.txt)."
    )


def _prepare_model(clip_model: Any, device: torch.device, dtype: torch.dtype, quantize: bool) -> Any:
    import torch

    clip_model = clip_model.eval().to(device=device, dtype=dtype)
    if quantize:
        # Dynamic quantisation stores Linear weights as int8 and quantises
        # activations per batch. It runs on the CPU only.
        # NOTE: torch 2.13 warns that torch.ao.quantization is deprecated in
        # favour of torchao, so this option may stop working in a later torch.
        clip_model = torch.ao.quantization.quantize_dynamic(clip_model, {torch.nn.Linear}, dtype=torch.qint8)
    return clip_model
