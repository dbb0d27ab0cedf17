"""Tests for pipeline.models.clip on a tiny random CLIP checkpoint built at test time.

The checkpoint has random weights, so its scores carry no meaning. The tests
check shapes, preprocessing, determinism, batching and caching, never which
concept wins.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT, shared_file
from pipeline.models.clip import (
    DEFAULT_CONCEPTS_PATH,
    ClipScorer,
    ClipUnavailableError,
    ImagePreprocessing,
    load_concepts,
    select_distinct_frames,
)

try:
    import torch
    import transformers
except ImportError:  # the clip extra is not installed; only the torch-free tests run
    torch = None
    transformers = None

requires_clip = pytest.mark.skipif(
    torch is None or transformers is None, reason="needs torch and transformers: pip install 'scenewatch[clip]'"
)

TINY_IMAGE_SIDE = 32
TINY_PROJECTION_DIM = 16
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
REQUIRED_CONCEPTS = {
    "pedestrian",
    "pedestrian_on_crosswalk",
    "cyclist",
    "emergency_vehicle",
    "construction_zone",
    "traffic_light_red",
    "stopped_traffic",
    "clear_road",
}


def build_tiny_clip(folder: Path) -> Path:
    """Write a random 2-layer CLIP checkpoint with a character-level tokenizer to ``folder``.

    The vocabulary has every printable ASCII character, alone and with CLIP's
    ``</w>`` end-of-word suffix, and no merges, so any English prompt tokenises
    one character per token.
    """
    folder.mkdir(parents=True, exist_ok=True)
    characters = [chr(code) for code in range(33, 127)]
    vocab = {character: index for index, character in enumerate(characters)}
    vocab.update({f"{character}</w>": len(characters) + index for index, character in enumerate(characters)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")

    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    tokenizer.save_pretrained(folder)

    preprocessor = {
        "do_resize": True,
        "size": {"shortest_edge": TINY_IMAGE_SIDE},
        "do_center_crop": True,
        "crop_size": {"height": TINY_IMAGE_SIDE, "width": TINY_IMAGE_SIDE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": CLIP_MEAN.tolist(),
        "image_std": CLIP_STD.tolist(),
        "resample": 3,
        "image_processor_type": "CLIPImageProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")

    special_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            **special_ids,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIDE,
            "patch_size": 8,
        },
        projection_dim=TINY_PROJECTION_DIM,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if torch is None or transformers is None:
        pytest.skip("needs torch and transformers: pip install 'scenewatch[clip]'")
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def scorer(tiny_clip: Path) -> ClipScorer:
    return ClipScorer(str(tiny_clip))


def random_frames(count: int, seed: int = 0, shape: tuple[int, int] = (540, 960)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(count)]


def test_import_leaves_torch_unloaded() -> None:
    code = "import sys, pipeline.models.clip; print('torch' in sys.modules, 'transformers' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout

    assert output.split() == ["False", "False"]


def test_scorer_without_torch_raises_unavailable() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from pipeline.models.clip import ClipScorer, ClipUnavailableError\n"
        "try:\n"
        "    ClipScorer('/no/such/clip')\n"
        "except ClipUnavailableError as error:\n"
        "    print(error)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout

    assert "needs torch" in output
    assert "scenewatch[clip]" in output


# Concepts file


def test_concepts_file_has_required_names() -> None:
    concepts = load_concepts(DEFAULT_CONCEPTS_PATH)
    names = {concept.name for concept in concepts}

    assert REQUIRED_CONCEPTS <= names
    for concept in concepts:
        assert len(concept.prompts) >= 2, concept.name
        assert concept.label, concept.name


def test_concepts_label_defaults_to_name(tmp_path: Path) -> None:
    path = tmp_path / "concepts.yaml"
    path.write_text("concepts:\n  clear_road:\n    prompts: [an empty road]\n  cyclist:\n    prompts: [a cyclist]\n")

    concepts = load_concepts(path)

    assert concepts[0].label == "clear road"
    assert concepts[1].prompts == ("a cyclist",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("concepts:\n  only_one:\n    prompts: [a]\n", "at least two"),
        ("concepts:\n  Bad-Name:\n    prompts: [a]\n  ok:\n    prompts: [b]\n", "Bad-Name"),
        ("concepts:\n  empty:\n    prompts: []\n  ok:\n    prompts: [b]\n", "empty"),
        ("concepts:\n  blank:\n    prompts: ['  ']\n  ok:\n    prompts: [b]\n", "blank"),
        ("concepts: [a, b]\n", "at least two"),
        ("concepts: {a: [unclosed\n", "not valid YAML"),
    ],
)
def test_concepts_invalid_file_names_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "concepts.yaml"
    path.write_text(text)

    with pytest.raises(ValueError, match=message):
        load_concepts(path)


def test_concepts_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_concepts(tmp_path / "missing.yaml")


# Preprocessing


def test_preprocessing_reads_legacy_and_current_config() -> None:
    legacy = ImagePreprocessing.from_config({"size": 224, "crop_size": 224, "image_mean": [0.5] * 3})
    current = ImagePreprocessing.from_config(
        {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 300}}
    )

    assert (legacy.shortest_edge, legacy.crop_height, legacy.crop_width) == (224, 224, 224)
    assert legacy.mean == (0.5, 0.5, 0.5)
    assert legacy.do_rescale
    assert (current.shortest_edge, current.crop_height, current.crop_width) == (336, 336, 300)


def test_preprocessing_rejects_unknown_size() -> None:
    with pytest.raises(ValueError, match="size"):
        ImagePreprocessing.from_config({"size": {"longest_edge": 224}})


def test_preprocessing_output_shape_and_dtype() -> None:
    pixels = ImagePreprocessing().apply(np.zeros((720, 1280, 3), dtype=np.uint8))

    assert pixels.shape == (3, 224, 224)
    assert pixels.dtype == np.float32


def test_preprocessing_converts_bgr_to_rgb() -> None:
    blue_bgr = np.zeros((100, 100, 3), dtype=np.uint8)
    blue_bgr[..., 0] = 255

    pixels = ImagePreprocessing().apply(blue_bgr)

    expected_rgb = (np.array([0.0, 0.0, 1.0], dtype=np.float32) - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(pixels[:, 50, 50], expected_rgb, atol=1e-5)


def test_preprocessing_rescales_once() -> None:
    white = np.full((300, 400, 3), 255, dtype=np.uint8)

    pixels = ImagePreprocessing().apply(white)

    # Rescaling twice would give (1/255 - mean) / std, between -1.8 and -1.4 per channel.
    np.testing.assert_allclose(pixels[:, 0, 0], (1.0 - CLIP_MEAN) / CLIP_STD, atol=1e-5)
    assert pixels.min() > 1.9


def is_red(pixels: np.ndarray) -> np.ndarray:
    """Mask of the pixels whose normalised values are close to pure RGB red."""
    red = (np.array([1.0, 0.0, 0.0], dtype=np.float32) - CLIP_MEAN) / CLIP_STD
    return np.all(np.abs(pixels - red[:, None, None]) < 0.3, axis=0)


def test_pad_to_square_keeps_left_edge_block() -> None:
    frame = np.full((720, 1280, 3), 90, dtype=np.uint8)
    frame[200:520, :100] = (0, 0, 255)  # a red block (BGR) at the far left edge

    padded = ImagePreprocessing().apply(frame, pad_to_square=True)
    cropped = ImagePreprocessing().apply(frame, pad_to_square=False)

    # Padded: 280 rows of padding on top make 1280x1280, scaled to 224 by 0.175,
    # so the block covers rows 84-140 and columns 0-17.
    assert is_red(padded[:, 86:138, 0:16]).all()
    assert not is_red(padded[:, :, 20:]).any()
    # Centre crop: 720x1280 scaled to 224x398 loses 87 columns per side, and the
    # block is only 31 columns wide after scaling.
    assert not is_red(cropped).any()


def test_pad_to_square_pads_with_mean_colour() -> None:
    frame = np.full((720, 1280, 3), 255, dtype=np.uint8)

    pixels = ImagePreprocessing().apply(frame, pad_to_square=True)

    # Rows 0-48 of 224 are padding (280 of 1280 rows). The mean colour
    # normalises to about zero.
    assert np.abs(pixels[:, :48, :]).max() < 0.02
    assert pixels[:, 112, 112].min() > 1.9


# Frame selection


def test_select_frames_spreads_over_window() -> None:
    frames = random_frames(9, shape=(48, 64))

    assert select_distinct_frames(frames, max_frames=3, dedup_threshold=1.5) == [1, 4, 7]


def test_select_frames_identical_frames_once() -> None:
    frame = random_frames(1, shape=(48, 64))[0]

    assert select_distinct_frames([frame.copy() for _ in range(6)], max_frames=3, dedup_threshold=1.5) == [1]


def test_select_frames_skips_noisy_duplicate() -> None:
    first, second = random_frames(2, shape=(120, 160))
    rng = np.random.default_rng(1)
    noisy = np.clip(first.astype(np.int16) + rng.integers(-3, 4, first.shape), 0, 255).astype(np.uint8)

    chosen = select_distinct_frames([first, noisy, second], max_frames=3, dedup_threshold=1.5)

    assert chosen == [0, 2]


def test_select_frames_fewer_frames_than_limit() -> None:
    frames = random_frames(2, shape=(48, 64))

    assert select_distinct_frames(frames, max_frames=5, dedup_threshold=1.5) == [0, 1]
    assert select_distinct_frames([], max_frames=5, dedup_threshold=1.5) == []


def test_select_frames_zero_threshold_keeps_duplicates() -> None:
    frame = random_frames(1, shape=(48, 64))[0]

    assert select_distinct_frames([frame] * 6, max_frames=3, dedup_threshold=0.0) == [1, 3, 5]


def test_select_frames_real_video_window(highway_mp4: Path) -> None:
    capture = cv2.VideoCapture(str(highway_mp4))
    frames = []
    while len(frames) < 25:
        ok, frame = capture.read()
        assert ok
        frames.append(frame)
    capture.release()
    still = [frames[0].copy() for _ in range(25)]

    assert select_distinct_frames(frames, max_frames=3, dedup_threshold=1.5) == [4, 13, 21]
    assert select_distinct_frames(still, max_frames=3, dedup_threshold=1.5) == [4]


def test_select_frames_rejects_float_frame() -> None:
    with pytest.raises(ValueError, match="frame 1"):
        select_distinct_frames([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3))], 3, 1.5)


# Scorer on the tiny checkpoint


def test_scorer_concept_embeddings_unit_norm(scorer: ClipScorer) -> None:
    embeddings = scorer.concept_embeddings

    assert embeddings.shape == (len(scorer.concepts), TINY_PROJECTION_DIM)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_scorer_concept_embedding_is_mean_of_prompts(scorer: ClipScorer) -> None:
    concept = scorer.concepts[0]
    tokens = scorer._tokenizer(list(concept.prompts), padding=True, return_tensors="pt")

    with torch.inference_mode():
        prompt_embeddings = scorer._model.get_text_features(**tokens)
    if not isinstance(prompt_embeddings, torch.Tensor):  # transformers 5 returns a model output
        prompt_embeddings = prompt_embeddings.pooler_output
    prompt_embeddings = torch.nn.functional.normalize(prompt_embeddings, dim=-1)
    expected = torch.nn.functional.normalize(prompt_embeddings.mean(dim=0), dim=0).numpy()

    np.testing.assert_allclose(scorer.concept_embeddings[0], expected, atol=1e-5)


def test_scorer_prompt_embeddings_computed_once(scorer: ClipScorer) -> None:
    calls = []
    handle = scorer._model.text_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for seed in range(3):
            scorer.score(random_frames(2, seed=seed))
    finally:
        handle.remove()

    assert calls == []


def test_scorer_probabilities_sum_to_one(scorer: ClipScorer) -> None:
    result = scorer.score(random_frames(5))

    assert list(result.probabilities) == scorer.concept_names
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= value <= 1.0 for value in result.probabilities.values())
    assert result.frame_indices == [1, 3, 4]
    assert result.image_embedding is None
    assert result.elapsed_s > 0


def test_scorer_top_labels_sorted(scorer: ClipScorer) -> None:
    result = scorer.score(random_frames(3))
    values = [value for _, value in result.top_labels]

    assert len(result.top_labels) == scorer.top_k
    assert values == sorted(values, reverse=True)
    assert result.top_labels[0][1] == max(result.probabilities.values())
    for name, value in result.top_labels:
        assert result.probabilities[name] == value


def test_scorer_deterministic(scorer: ClipScorer, tiny_clip: Path) -> None:
    frames = random_frames(3)

    first = scorer.score(frames, return_embedding=True)
    second = scorer.score(frames, return_embedding=True)
    other_instance = ClipScorer(str(tiny_clip)).score(frames, return_embedding=True)

    assert first.probabilities == second.probabilities
    assert first.image_embedding == second.image_embedding
    for name, value in first.probabilities.items():
        assert other_instance.probabilities[name] == pytest.approx(value, abs=1e-6)


def test_scorer_batch_equals_single_frames(scorer: ClipScorer) -> None:
    frames = random_frames(3, seed=7)

    batched = scorer.embed_images(frames)
    singles = np.concatenate([scorer.embed_images([frame]) for frame in frames])

    assert batched.shape == (3, TINY_PROJECTION_DIM)
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_scorer_mean_of_single_frame_scores(scorer: ClipScorer) -> None:
    frames = random_frames(3, seed=8)

    window = scorer.score(frames)
    singles = [scorer.score([frame]) for frame in frames]

    assert window.frame_indices == [0, 1, 2]
    for name, value in window.probabilities.items():
        expected = np.mean([single.probabilities[name] for single in singles])
        assert value == pytest.approx(expected, abs=1e-5), name


def test_scorer_max_aggregation(tiny_clip: Path) -> None:
    frames = random_frames(3, seed=8)
    max_scorer = ClipScorer(str(tiny_clip), aggregation="max")

    window = max_scorer.score(frames)
    singles = [max_scorer.score([frame]) for frame in frames]

    for name, value in window.probabilities.items():
        expected = max(single.probabilities[name] for single in singles)
        assert value == pytest.approx(expected, abs=1e-5), name


def test_scorer_image_embedding_is_mean(scorer: ClipScorer) -> None:
    frames = random_frames(3, seed=9)

    result = scorer.score(frames, return_embedding=True)
    expected = scorer.embed_images(frames).mean(axis=0)

    assert result.image_embedding is not None
    assert len(result.image_embedding) == TINY_PROJECTION_DIM
    np.testing.assert_allclose(result.image_embedding, expected, atol=1e-5)
    assert np.linalg.norm(result.image_embedding) <= 1.0 + 1e-6


def test_scorer_pixel_values_match_preprocessing(scorer: ClipScorer) -> None:
    frames = random_frames(2, seed=3)

    pixels = scorer.pixel_values(frames)

    assert pixels.shape == (2, 3, TINY_IMAGE_SIDE, TINY_IMAGE_SIDE)
    np.testing.assert_array_equal(pixels[1], scorer.preprocessing.apply(frames[1]))


def test_scorer_pad_to_square_changes_pixels(tiny_clip: Path, scorer: ClipScorer) -> None:
    padded_scorer = ClipScorer(str(tiny_clip), pad_to_square=True)
    frame = random_frames(1, seed=4)[0]

    padded = padded_scorer.pixel_values([frame])[0]

    # Rows 0-6 of 32 come from padding (210 of 960 rows) and normalise to about zero.
    assert np.abs(padded[:, :7, :]).max() < 0.02
    assert not np.allclose(padded, scorer.pixel_values([frame])[0])


def test_scorer_long_prompt_truncated(tiny_clip: Path, tmp_path: Path) -> None:
    concepts = tmp_path / "concepts.yaml"
    long_prompt = "a very long description of a pedestrian " * 5  # 200 characters, one token each
    concepts.write_text(f"concepts:\n  a:\n    prompts: ['{long_prompt}']\n  b:\n    prompts: [a road]\n")

    result = ClipScorer(str(tiny_clip), concepts_path=concepts).score(random_frames(1))

    assert set(result.probabilities) == {"a", "b"}


@pytest.mark.parametrize("image", ["0ace96c3-48481887.jpg", "3c0e7240-96e390d2.jpg", "7dd9ef45-f197db95.jpg"])
def test_scorer_real_dashcam_image(scorer: ClipScorer, image: str) -> None:
    frame = cv2.imread(str(shared_file(f"images/{image}")))

    result = scorer.score([frame])

    assert frame.shape == (720, 1280, 3)
    assert result.frame_indices == [0]
    assert np.isfinite(list(result.probabilities.values())).all()


def test_scorer_bfloat16_close_to_float32(tiny_clip: Path, scorer: ClipScorer) -> None:
    frames = random_frames(3, seed=5)
    bf16_scorer = ClipScorer(str(tiny_clip), dtype="bfloat16")

    reference = scorer.score(frames, return_embedding=True)
    result = bf16_scorer.score(frames, return_embedding=True)

    for name, value in reference.probabilities.items():
        assert result.probabilities[name] == pytest.approx(value, abs=0.03), name
    cosine = np.dot(reference.image_embedding, result.image_embedding) / (
        np.linalg.norm(reference.image_embedding) * np.linalg.norm(result.image_embedding)
    )
    assert cosine > 0.99


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_scorer_int8_close_to_float32(tiny_clip: Path, scorer: ClipScorer) -> None:
    frames = random_frames(3, seed=5)
    int8_scorer = ClipScorer(str(tiny_clip), quantize=True)

    reference = scorer.score(frames, return_embedding=True)
    result = int8_scorer.score(frames, return_embedding=True)

    assert isinstance(int8_scorer._model.visual_projection, torch.ao.nn.quantized.dynamic.Linear)
    for name, value in reference.probabilities.items():
        assert result.probabilities[name] == pytest.approx(value, abs=0.1), name
    cosine = np.dot(reference.image_embedding, result.image_embedding) / (
        np.linalg.norm(reference.image_embedding) * np.linalg.norm(result.image_embedding)
    )
    assert cosine > 0.95


# Errors


@requires_clip
def test_scorer_missing_folder_explains_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-clip"

    with pytest.raises(ClipUnavailableError) as raised:
        ClipScorer(str(missing))

    message = str(raised.value)
    assert str(missing) in message
    assert "scenewatch models pull clip" in message
    assert "perception.clip.model" in message
    assert isinstance(raised.value, RuntimeError)


def test_scorer_folder_without_weights_raises(tiny_clip: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(tiny_clip, partial, ignore=shutil.ignore_patterns("*.safetensors"))

    with pytest.raises(ClipUnavailableError, match="model.safetensors"):
        ClipScorer(str(partial))


@requires_clip
def test_scorer_hub_id_offline_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SCENEWATCH_MODEL_DIR", str(tmp_path / "empty-store"))

    with pytest.raises(ClipUnavailableError, match="scenewatch-test/no-such-clip"):
        ClipScorer("scenewatch-test/no-such-clip")


def test_scorer_default_id_loads_model_store_copy(
    tiny_clip: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shutil.copytree(tiny_clip, tmp_path / "store" / "clip")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SCENEWATCH_MODEL_DIR", str(tmp_path / "store"))

    scorer = ClipScorer("openai/clip-vit-base-patch32")

    assert scorer.model_source == str(tmp_path / "store" / "clip")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float16"}, "CUDA"),
        ({"dtype": "float64"}, "dtype"),
        ({"quantize": True, "dtype": "bfloat16"}, "quantize"),
        ({"quantize": True, "device": "cuda"}, "quantize"),
        ({"frames_per_window": 0}, "frames_per_window"),
        ({"dedup_threshold": -1.0}, "dedup_threshold"),
        ({"aggregation": "median"}, "aggregation"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_scorer_invalid_option_raises(tiny_clip: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClipScorer(str(tiny_clip), **options)


@pytest.mark.skipif(torch is not None and torch.cuda.is_available(), reason="this machine has CUDA")
def test_scorer_cuda_without_gpu_raises(tiny_clip: Path) -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        ClipScorer(str(tiny_clip), device="cuda")


def test_score_empty_window_raises(scorer: ClipScorer) -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        scorer.score([])


def test_score_grayscale_frame_raises(scorer: ClipScorer) -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        scorer.score([np.zeros((48, 64), dtype=np.uint8)])


@pytest.mark.skipif(torch is None or not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scorer_cuda_float16_close_to_cpu(tiny_clip: Path, scorer: ClipScorer) -> None:
    frames = random_frames(3, seed=6)

    reference = scorer.score(frames)
    result = ClipScorer(str(tiny_clip), device="cuda", dtype="float16").score(frames)

    for name, value in reference.probabilities.items():
        assert result.probabilities[name] == pytest.approx(value, abs=0.03), name
