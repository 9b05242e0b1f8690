"""Stage 1 against a corpus of messy descriptions with written-down expectations (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prompt_corpus import CORPUS, HELD_OUT, HELD_OUT_2, NOT_DESCRIPTIONS, score

from omninode_bridge.codegen.prompt import parse_prompt
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError


def test_corpus_accuracy() -> None:
    result = score(parse_prompt)
    summary = result.summary()
    print(f"corpus: {summary}")
    print("\n".join(result.misses))
    assert summary["n"] >= 24
    assert result.type_ok / result.n >= 0.9
    assert result.name_ok / result.n >= 0.85
    assert summary["ops_recall"] >= 0.9
    assert summary["backends_recall"] >= 0.95


def test_held_out_accuracy_is_reported() -> None:
    """Never tuned on: the floor only guards against a collapse, the print is the estimate."""
    result = score(parse_prompt, HELD_OUT + HELD_OUT_2)
    print(f"held out: {result.summary()}")
    print("\n".join(result.misses))
    assert result.type_ok / result.n >= 0.6
    assert result.summary()["ops_recall"] >= 0.5


@pytest.mark.parametrize("text", NOT_DESCRIPTIONS, ids=range(len(NOT_DESCRIPTIONS)))
def test_non_descriptions_are_refused(text: str) -> None:
    with pytest.raises(ModelOnexError) as info:
        parse_prompt(text)
    assert info.value.error_code is EnumCoreErrorCode.INVALID_INPUT
    assert "\n" not in info.value.message


def test_word_salad_that_reads_like_words_is_refused() -> None:
    salad = " ".join(["stores", "redis", "quickly", "purple", "aggregate", "orders", "kafka", "velvet"] * 20)
    with pytest.raises(ModelOnexError, match="does not read as sentences"):
        parse_prompt(salad)


@pytest.mark.parametrize(
    ("text", "verb"),
    [
        ("NodeEmailSenderEffect that sends transactional emails", "send_"),
        ("Stores customer orders in postgres", "store_"),
        ("Uploads invoices to S3", "upload_"),
        ("Aggregates page views per url", "aggregate_"),
        ("The service queries the ledger table in postgres", "query_"),
    ],
)
def test_third_person_verbs_become_operations(text: str, verb: str) -> None:
    operations = parse_prompt(text).operations
    assert any(op.startswith(verb) for op in operations), operations


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Keep a running count of page views per url", "NodePageViewReducer"),
        ("We have invoices coming in and need something that stores them in postgres", "NodeInvoiceEffect"),
        ("need a nod that uploads invoice PDFs to s3", "NodeInvoicePdfEffect"),
        ("Redis-backed API rate limiter that checks and consumes tokens", "NodeRateLimiterEffect"),
    ],
)
def test_name_comes_from_the_subject_not_the_first_word(text: str, name: str) -> None:
    parsed = parse_prompt(text)
    assert parsed.name == name
    assert any(note.startswith("subject ") for note in parsed.notes)


def test_orchestration_cues_make_an_orchestrator_with_shown_confidence() -> None:
    parsed = parse_prompt(
        "Nightly import workflow: download the catalog from the supplier API, then validate it, "
        "then write it into postgres, and roll back if anything fails"
    )
    assert parsed.node_type == "orchestrator"
    assert 0 < parsed.confidence < 1
    weak = parse_prompt("Tracks tickets for the team")
    assert weak.confidence < 0.6
    assert any("low confidence" in note for note in weak.notes)


def test_lemma_cache_does_not_change_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omninode_bridge.codegen import inflection

    first = [parse_prompt(case.text) for case in CORPUS[:6]]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    inflection._table.cache_clear()
    try:
        again = [parse_prompt(case.text) for case in CORPUS[:6]]
        cached = inflection._table()
        assert cached.path.is_file()
    finally:
        inflection._table.cache_clear()
    assert first == again
