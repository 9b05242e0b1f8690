"""What a description is about: the noun phrase a node is named after, and its verbs.

People describe nodes in many shapes: "Publishes order events to Kafka", "Keep a
running count of active websocket connections", "We have customer orders coming in
and need something that stores them", "Redis-backed API rate limiter that checks
...", "OHLC candles from trade ticks". The subject is the first noun phrase that is
neither the requester ("we", "our support team"), nor a stand-in for the node
("a node", "something", "a nod"), nor a time ("every night"); a verb at the start of
a clause introduces its object; "count of X" and "bunch of X" are about X.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omninode_bridge.codegen.inflection import is_adverb, noun_lemma, verb_lemma
from omninode_bridge.codegen.lexicon import (
    BACKENDS,
    DOMAIN_NOUNS,
    GENERIC_NOUNS,
    MEASURE_NOUNS,
    REQUEST_VERBS,
    SOFT_TECH_WORDS,
    STOPWORDS,
    TECH_WORDS,
    TIME_WORDS,
    TYPE_KEYWORDS,
    VERBS,
)

TOKEN = re.compile(r"[a-z][a-z0-9-]*|'s\b|[,.;:()!?/&]")
BREAKS = frozenset(",.;:()!?")
CLAUSE_OPENERS = frozenset(
    {"that", "which", "who", "to", "and", "or", "then", "also", "we", "i", "it", "they", "you", "so", "can"}
)
DETERMINERS = frozenset(
    {"a", "an", "the", "their", "its", "our", "your", "my", "his", "her", "this", "these", "those", "each"}
)
OBJECT_PRONOUNS = frozenset({"them", "it", "us", "me", "him", "her", "everything", "all"})
PARTICLES = frozenset({"up", "out", "back", "down", "in", "off"})
PHRASAL = {("look", "up"): "lookup", ("set", "up"): "setup", ("send", "out"): "send"}
MAX_WORDS = 3


def tokens_of(text: str) -> list[str]:
    """Lower-case word, possessive and punctuation tokens of ``text``."""
    return TOKEN.findall(text.lower().replace("\u2019", "'"))


@dataclass(frozen=True)
class Verb:
    """A verb found at ``index``: the token and its canonical operation verb (if any)."""

    index: int
    token: str
    lemma: str


def _verb_position(tokens: list[str], i: int) -> bool:
    """Whether ``tokens[i]`` stands where a verb can: at a clause start or after the subject."""
    if i == 0:
        return True
    prev = tokens[i - 1]
    return prev in BREAKS or prev in CLAUSE_OPENERS or prev in GENERIC_NOUNS or is_adverb(prev)


def verb_at(tokens: list[str], i: int) -> Verb | None:
    """The verb ``tokens[i]`` is (lemmatised), when it is one here."""
    token = tokens[i]
    if not token[0].isalpha() or "-" in token:
        return None
    lemma = verb_lemma(token) if token not in VERBS else token
    if lemma is None or not (_verb_position(tokens, i) or _finite_verb(tokens, i)):
        return None
    for gap in (1, 2):  # "looks up", "look them up"
        phrasal = i + gap < len(tokens) and (lemma, tokens[i + gap]) in PHRASAL
        if phrasal and (gap == 1 or tokens[i + 1] in OBJECT_PRONOUNS):
            lemma = PHRASAL[(lemma, tokens[i + gap])]
    return Verb(i, token, lemma)


def operation_verbs(tokens: list[str]) -> list[str]:
    """Canonical operation verbs in order: known verbs in any inflection at a verb position,
    and base forms of known verbs anywhere ("get, set and delete cache entries")."""
    found: list[str] = []
    for i, token in enumerate(tokens):
        verb = verb_at(tokens, i)
        lemma = verb.lemma if verb else (token if token in VERBS else None)
        if lemma in VERBS and VERBS[lemma] not in found:
            found.append(VERBS[lemma])
    return found


def _is_content(word: str) -> bool:
    if word in STOPWORDS or word in BREAKS or word in GENERIC_NOUNS or word in TIME_WORDS:
        return False
    if word in TECH_WORDS and word not in SOFT_TECH_WORDS:
        return False
    if "-" in word and any(part in BACKENDS or part in TECH_WORDS for part in word.split("-")):
        return False
    if word == "'s" or (
        word not in DOMAIN_NOUNS
        and any(word in TYPE_KEYWORDS[t] for t in ("orchestrator", "reducer", "compute"))
    ):
        return False
    return len(word) >= 2 and word[0].isalpha() and not is_adverb(word)


def _finite_verb(tokens: list[str], i: int) -> bool:
    word = tokens[i]
    lemma = verb_lemma(word)
    if lemma is None or not word.endswith("s") or word == lemma:
        return False
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    return lemma in REQUEST_VERBS or nxt in DETERMINERS or nxt in OBJECT_PRONOUNS


def noun_phrase(tokens: list[str], start: int, allow_soft: bool = False) -> tuple[list[str], int]:
    """The noun phrase at ``tokens[start]`` (determiners, measure words and possessors skipped),
    singularised, at most three words; and the index after it."""
    i = start
    while i < len(tokens) and (tokens[i] in DETERMINERS or tokens[i] in PARTICLES):
        i += 1
    run: list[str] = []
    while i < len(tokens):
        word = tokens[i]
        if word == "'s":  # "a customer's open tickets": the possessor is not the subject
            run = []
            i += 1
            continue
        if word in MEASURE_NOUNS and i + 1 < len(tokens) and tokens[i + 1] == "of":
            run = []
            i += 2
            while i < len(tokens) and tokens[i] in DETERMINERS:
                i += 1
            continue
        if word in BREAKS or word in STOPWORDS or (run and word in VERBS and word not in SOFT_TECH_WORDS):
            break
        if run and word.endswith("ing") and run[-1].endswith("s"):  # "orders coming in"
            break
        if run and _finite_verb(tokens, i):  # "our team wants ...", "the importer downloads the files"
            break
        run.append(word)
        i += 1
    while run and not _is_content(run[0]):
        run.pop(0)
    while run and not _is_content(run[-1]):
        run.pop()
    words = [w for w in run if _is_content(w)]
    if not allow_soft and all(w in SOFT_TECH_WORDS for w in words):
        words = []
    return [noun_lemma(w) if k == len(words) - 1 else w for k, w in enumerate(words)][-MAX_WORDS:], i


def subject(tokens: list[str]) -> tuple[list[str], str]:
    """The words a node is named after and a note saying where they came from."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in BREAKS or token in STOPWORDS or token in TIME_WORDS or is_adverb(token):
            i += 1
            continue
        verb = verb_at(tokens, i)
        if verb is not None:
            phrase, end = noun_phrase(tokens, i + 1, allow_soft=True)
            if phrase:
                return phrase, f"subject {' '.join(phrase)!r}: the object of {verb.token!r}"
            i = max(end, i + 1)
            continue
        phrase, end = noun_phrase(tokens, i)
        nxt = next((k for k in range(end, len(tokens)) if tokens[k] not in STOPWORDS), None)
        requester = nxt is not None and (verb_lemma(tokens[nxt]) or "") in REQUEST_VERBS
        if phrase and not requester:
            return phrase, f"subject {' '.join(phrase)!r}: the first noun phrase"
        i = max(end, i + 1)
    return [], "no subject found"
