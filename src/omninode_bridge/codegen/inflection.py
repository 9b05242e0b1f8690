"""English inflections for stage 1: "sends" -> send, "stored" -> store, "queries" -> query.

The lookup tables of ``lemminflect`` (a dictionary of English word forms, no model)
decide; only its dictionary is used, never its guesser for unknown words, so the
result is deterministic and an unknown word stays itself. Loading its tables costs
about 0.3 s, so lemmas already looked up are kept in a small per-user cache file
(keyed by the library's version); a run whose words are all cached never loads it.
The cache only saves time: with or without it, the same word gives the same lemma.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

_POS = ("VERB", "NOUN", "ADJ", "ADV")


def _cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        version = metadata.version("lemminflect")
    except metadata.PackageNotFoundError:  # pragma: no cover - a declared dependency
        version = "none"
    return base / "omninode-generate" / f"lemmas-{version}.json"


class _Lemmas:
    """Per-process memo in front of the per-user cache in front of lemminflect."""

    def __init__(self) -> None:
        self.path = _cache_file()
        self.known: dict[str, dict[str, str]] = {}
        self.dirty = False
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.known = loaded
        except (OSError, ValueError):
            self.known = {}

    def lookup(self, word: str) -> dict[str, str]:
        """``{POS: lemma}`` for the parts of speech ``word`` can be (first lemma of each)."""
        hit = self.known.get(word)
        if hit is None:
            hit = _lemminflect_lemmas(word)
            self.known[word] = hit
            self.dirty = True
        return hit

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".lemmas-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.known, out, sort_keys=True)
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError:
            return  # a read-only home only costs time


def _lemminflect_lemmas(word: str) -> dict[str, str]:
    import lemminflect

    found: dict[str, Any] = lemminflect.getAllLemmas(word)
    return {pos: str(found[pos][0]) for pos in _POS if found.get(pos)}


@cache
def _table() -> _Lemmas:
    return _Lemmas()


def lemmas(word: str) -> dict[str, str]:
    """The parts of speech ``word`` can have, each with its lemma (empty when unknown)."""
    return _table().lookup(word.lower())


def verb_lemma(word: str) -> str | None:
    """The verb ``word`` is a form of ("uploads" -> "upload"), or None when it is no verb."""
    return lemmas(word).get("VERB")


def noun_lemma(word: str) -> str:
    """The singular of a noun ("entries" -> "entry"); the word itself when unknown."""
    return lemmas(word).get("NOUN", word)


def is_adverb(word: str) -> bool:
    """Whether ``word`` can only be an adverb ("periodically", "nightly" is an adjective too)."""
    found = lemmas(word)
    return set(found) == {"ADV"}


def flush() -> None:
    """Write newly looked-up lemmas to the per-user cache (called once per parse)."""
    _table().save()
