"""Model benchmark: CLIP image encoding by batch size and precision, YAMNet patches/s, HOG time per frame.

No real CLIP weights exist offline. :func:`random_clip_folder` therefore
builds, once, a checkpoint in a cache folder with random weights and the
shape of ``openai/clip-vit-base-patch32``: a ViT-B/32 vision tower at
224x224, a 12-layer text tower and a 512-d projection.
:class:`~pipeline.models.clip.ClipScorer` loads it like any local checkpoint. Its speed is that of the real model; its
scores are not. The tokenizer is character-level, which changes only the
one-off text embedding at load time.

Figures:

- CLIP images/s at batch 1, 4 and 8 (``embed_images``: preprocessing and the
  vision tower) for float32, bfloat16 and dynamic int8, with the ratio to
  float32 per repeat.
- Score agreement with float32 on the same frames: the largest absolute
  probability difference over concepts and frames, and whether the concept
  ranking and the top concept stay the same. With random weights the
  probabilities are close to uniform, so a ranking flip means little.
- YAMNet patches/s (``AudioEventClassifier.classify`` on the siren
  recording, log-mel included).
- HOG ms per 960x540 dashcam frame (``PedestrianDetector.detect``).

Example::

    python -m bench models --device cuda
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import BenchOptions, BenchSkipped, Row, shared_file

__all__ = ["NAME", "run", "random_clip_folder", "build_random_clip", "dashcam_frames"]

NAME = "models"

log = logging.getLogger(__name__)

CLIP_CACHE = Path(tempfile.gettempdir()) / "scenewatch-bench" / "clip-vit-b32-random"
BATCHES = (1, 4, 8)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_random_clip(folder: Path) -> Path:
    """Write a ViT-B/32-shaped CLIP checkpoint with random weights (seed 0) and a character-level tokenizer.

    Raises:
        ImportError: torch or transformers is missing.
    """
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    symbols = [chr(code) for code in range(33, 127)]
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab.update({f"{symbol}</w>": len(symbols) + index for index, symbol in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    tokenizer.save_pretrained(folder)

    preprocessor = {
        "do_resize": True, "size": {"shortest_edge": 224},
        "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "image_processor_type": "CLIPImageProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")

    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 512, "intermediate_size": 2048,
            "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "image_size": 224, "patch_size": 32,
        },
        projection_dim=512,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    return folder


def random_clip_folder() -> Path | None:
    """Return the cached random ViT-B/32 checkpoint, building it on first use; None without torch and transformers."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        log.warning("models: torch or transformers is missing; CLIP figures are skipped")
        return None
    if not (CLIP_CACHE / "model.safetensors").is_file():
        log.info("models: building a random ViT-B/32 CLIP checkpoint in %s", CLIP_CACHE)
        build_random_clip(CLIP_CACHE)
    return CLIP_CACHE


def dashcam_frames(count: int) -> list[np.ndarray]:
    """Decode the first ``count`` frames of the highway dashcam video as BGR arrays.

    Raises:
        BenchSkipped: The video is missing.
    """
    import av

    frames = []
    with av.open(str(shared_file("video/highway_dashcam_960x540_25fps.mp4"))) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= count:
                break
    return frames


def _rate(call: Callable[[], Any], items: int, seconds: float) -> float:
    """Call ``call`` for about ``seconds`` seconds (at least twice, after one untimed call); return items/s."""
    call()
    calls = 0
    began = time.perf_counter()
    while calls < 2 or time.perf_counter() - began < seconds:
        call()
        calls += 1
    return calls * items / (time.perf_counter() - began)


def _clip_rows(options: BenchOptions, frames: list[np.ndarray]) -> list[Row]:
    from pipeline.models.clip import ClipScorer

    folder = random_clip_folder()
    if folder is None:
        return []
    variants: dict[str, dict[str, Any]] = {"float32": {"dtype": "float32"}, "bfloat16": {"dtype": "bfloat16"}}
    if options.device == "cpu":
        variants["int8 dynamic"] = {"dtype": "float32", "quantize": True}
    else:
        variants["float16"] = {"dtype": "float16"}
    if options.quick:
        # The int8 scorer takes about three seconds to load; the smoke run keeps the two quick ones.
        variants = {name: kwargs for name, kwargs in variants.items() if name in ("float32", "bfloat16")}
    scorers = {name: ClipScorer(model=str(folder), device=options.device, **kwargs) for name, kwargs in variants.items()}

    seconds = 0.3 if options.quick else 2.0
    repeats = 1 if options.quick else options.repeat
    batches = (1,) if options.quick else BATCHES
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for batch in batches:
            for name, scorer in scorers.items():
                rates.setdefault((name, batch), []).append(_rate(lambda: scorer.embed_images(frames[:batch]), batch, seconds))

    rows = []
    for batch in batches:
        for name in scorers:
            rows.append(Row.from_samples(NAME, f"CLIP ViT-B/32 {name}, batch {batch}, {options.device}", "throughput", rates[(name, batch)], "img/s"))
            if name != "float32":
                ratios = [a / b for a, b in zip(rates[(name, batch)], rates[("float32", batch)])]
                rows.append(Row.from_samples(NAME, f"CLIP {name} / float32, batch {batch}", "ratio", ratios, "x"))
    rows += _agreement_rows(scorers, frames[:8], options.device)
    return rows


def _agreement_rows(scorers: dict[str, Any], frames: list[np.ndarray], device: str) -> list[Row]:
    """Compare every variant's per-frame concept probabilities with float32's on the same frames."""
    probabilities = {}
    for name, scorer in scorers.items():
        embeddings = scorer.embed_images(frames)
        logits = scorer.logit_scale * embeddings @ scorer.concept_embeddings.T
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities[name] = exp / exp.sum(axis=1, keepdims=True)
    reference = probabilities["float32"]
    rows = []
    for name, values in probabilities.items():
        if name == "float32":
            continue
        max_diff = float(np.abs(values - reference).max())
        same_order = sum(np.array_equal(np.argsort(-a), np.argsort(-b)) for a, b in zip(values, reference))
        same_top = sum(int(a.argmax() == b.argmax()) for a, b in zip(values, reference))
        note = f"ranking kept on {same_order}/{len(frames)} frames, top concept on {same_top}/{len(frames)} (random weights)"
        rows.append(Row.from_samples(NAME, f"CLIP {name} vs float32 on {len(frames)} frames, {device}", "max abs prob diff", [max_diff], "", note))
    return rows


def _yamnet_rows(options: BenchOptions) -> list[Row]:
    from pipeline.models import melspec
    from pipeline.models.audio import AudioEventClassifier
    from pipeline.models.store import ModelStoreError

    from bench.audio_node import load_mono

    try:
        classifier = AudioEventClassifier()
    except (ModelStoreError, FileNotFoundError) as error:
        raise BenchSkipped(f"YAMNet is missing ({error}); run scenewatch models pull yamnet") from None
    samples = load_mono(shared_file("audio/siren_44k_stereo.wav"), 16_000)
    patches = len(melspec.waveform_to_patches(samples, 16_000))
    repeats = 1 if options.quick else options.repeat
    seconds = 0.3 if options.quick else 2.0
    rates = [_rate(lambda: classifier.classify(samples, 16_000), patches, seconds) for _ in range(repeats)]
    return [Row.from_samples(NAME, f"YAMNet int8 ONNX, {len(samples) / 16_000:.1f} s clip = {patches} patches, log-mel included", "throughput", rates, "patches/s")]


def _hog_rows(options: BenchOptions, frames: list[np.ndarray]) -> list[Row]:
    from pipeline.models.detector import PedestrianDetector

    detector = PedestrianDetector()
    repeats = 1 if options.quick else options.repeat
    count = 2 if options.quick else 8
    times = []
    for _ in range(repeats):
        detector.detect(frames[0])
        began = time.perf_counter()
        for frame in frames[:count]:
            detector.detect(frame)
        times.append((time.perf_counter() - began) / count * 1000)
    return [Row.from_samples(NAME, "HOG people detector, 960x540 frame, scale 1.05, stride 8", "time per frame", times, "ms")]


def run(options: BenchOptions) -> list[Row]:
    """Measure CLIP, YAMNet and HOG speed, and CLIP score agreement across precisions."""
    frames = dashcam_frames(8)
    rows = _clip_rows(options, frames)
    rows += _yamnet_rows(options)
    rows += _hog_rows(options, frames)
    return rows

