"""Stage 1: deterministic parsing of a plain-text node description.

No model, no network: keyword lexicons and a few regular expressions turn the
description into a :class:`ParsedPrompt` (name, node type with a confidence,
domain, operations, backends, features, performance targets). The same text
always gives the same result.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from omninode_bridge.codegen import inflection
from omninode_bridge.codegen.lexicon import (
    ARTICLES,
    BACKENDS,
    CRUD_VERBS,
    FEATURES,
    ORCHESTRATION_CUES,
    SEQUENCE_CUES,
    STOPWORDS,
    TECH_WORDS,
    TYPE_KEYWORDS,
    VERBS,
)
from omninode_bridge.codegen.operations import kind_of
from omninode_bridge.codegen.prompt_text import (
    CLEANUP_RE,
    bad_input,
    named_backends,
    performance_targets,
    refuse_non_descriptions,
    words,
    workflow_features,
)
from omninode_bridge.codegen.subject import operation_verbs, subject, tokens_of

NODE_TYPES = ("effect", "compute", "reducer", "orchestrator")
SUFFIX = {t: t.capitalize() for t in NODE_TYPES}
NAME_RE = re.compile(r"^Node[A-Z][A-Za-z0-9]*(Effect|Compute|Reducer|Orchestrator)$")
# A node name written in the description ("Create NodeDistributedLockEffect for ..."),
# with the meta-verb before it, which is about generating the node, not an operation.
_NAME_IN_TEXT = re.compile(
    r"(?:\b(?i:create|build|generate|make|implement|write|scaffold)\s+(?i:an?\s+|the\s+)?)?"
    r"\b(Node[A-Z][A-Za-z0-9]*?(Effect|Compute|Reducer|Orchestrator))\b"
)
# Word and separator tokens for verb lists such as "acquire/release/extend lock".
_LIST_TOKEN = re.compile(r"[a-z][a-z0-9-]*|[/,&.;:()]")
_LIST_SEPARATORS = frozenset({"/", ",", "&", "and", "or"})
# "background cleanup task", "automatic lease expiration": expired state must be swept.
CLEANUP_OPERATION = "cleanup_expired"
LOW_CONFIDENCE = 0.6

_WORD = re.compile(r"[a-z][a-z0-9-]*")


@dataclass
class ParsedPrompt:
    """What stage 1 understood; becomes the generator's answers."""

    description: str
    name: str
    node_type: str
    confidence: float
    type_scores: dict[str, int]
    domain: str
    entity: str
    operations: list[str]
    backends: list[str]
    features: list[str]
    performance_targets: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expand(tokens: list[str]) -> list[str]:
    """``tokens`` with each hyphenated word followed by its parts.

    ``postgresql-backed`` gives ``postgresql-backed``, ``postgresql``, ``backed``, so
    backends and features written in compounds are recognised; entity words are
    still taken from the unexpanded tokens ("multi-step" is not a noun).
    """
    out: list[str] = []
    for token in tokens:
        out.append(token)
        if "-" in token:
            out.extend(part for part in token.split("-") if part[:1].isalpha())
    return out


def singular(word: str) -> str:
    """A cheap English singular good enough for identifiers."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def camel(snake: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_\-]+", snake) if part)


def snake(camel_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", camel_name).lower()


def _keyword(word: str) -> str:
    """``word`` or its lemma, whichever is a type keyword ("aggregates" -> "aggregate")."""
    if any(word in TYPE_KEYWORDS[t] for t in NODE_TYPES) or not word[:1].isalpha():
        return word
    verb = inflection.verb_lemma(word)
    return verb if verb and any(verb in TYPE_KEYWORDS[t] for t in NODE_TYPES) else word


def classify(tokens: list[str], text: str = "") -> tuple[str, float, dict[str, int]]:
    """Node kind with a confidence in [0, 1] from keyword votes (ties favour effect).

    Orchestration is a shape as much as a word: a workflow/saga/steps cue together with
    a sequence ("then", "roll back", "step by step", "compensate") outweighs the backends
    its steps touch. The confidence is the winner's share of the votes, scaled down when
    there are few votes at all (two weak words are not a sure classification).
    """
    lemmas = [_keyword(w) for w in tokens]
    scores = {t: sum(TYPE_KEYWORDS[t].get(w, 0) for w in lemmas) for t in NODE_TYPES}
    lowered = f" {text.lower()} "
    cues = sum(1 for w in lemmas if w in ORCHESTRATION_CUES)
    sequence = sum(lowered.count(f" {cue} ") for cue in SEQUENCE_CUES)
    if cues and sequence:
        scores["orchestrator"] += 2 * (cues + sequence)
    total = sum(scores.values())
    if total == 0:
        return "effect", 0.0, scores
    best = max(NODE_TYPES, key=lambda t: (scores[t], -NODE_TYPES.index(t)))
    evidence = min(1.0, total / 4.0)
    return best, round(scores[best] / total * evidence, 3), scores


def _is_entity_word(w: str) -> bool:
    if w in STOPWORDS or w in TECH_WORDS or w in VERBS or singular(w) in VERBS:
        return False
    if w in TYPE_KEYWORDS["reducer"] or w in TYPE_KEYWORDS["compute"]:
        return False
    return len(w) >= 3 and w.isalpha() and w not in TYPE_KEYWORDS["orchestrator"]


def _entity_words(tokens: list[str]) -> list[str]:
    """The first content noun, plus the next token when it is a content word too."""
    for i, w in enumerate(tokens):
        if _is_entity_word(w):
            picked = [singular(w)]
            if i + 1 < len(tokens) and _is_entity_word(tokens[i + 1]):
                picked.append(singular(tokens[i + 1]))
            return picked
    return []


def _without_examples(tokens: list[str]) -> tuple[list[str], list[str]]:
    """``tokens`` without "such as" example lists, and the noun of an "of"/"for" after one.

    "statistics such as mean, min and max of sensor readings" is about sensor readings:
    the listed examples are dropped, and the object after "of"/"for" that follows them
    (``["sensor", "reading"]``) is preferred as the entity.
    """
    out: list[str] = []
    preferred: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "such" and i + 1 < len(tokens) and tokens[i + 1] == "as":
            i += 2
            while i < len(tokens) and (tokens[i] not in STOPWORDS or tokens[i] in _LIST_SEPARATORS):
                i += 1
            if not preferred and i < len(tokens) and tokens[i] in ("of", "for"):
                preferred = _noun_after(tokens, i + 1)
            continue
        out.append(tokens[i])
        i += 1
    return out, preferred


def _noun_after(tokens: list[str], start: int) -> list[str]:
    """The noun phrase (one or two content words) at ``tokens[start]``, singularised.

    Articles are skipped and generic heads dropped: "lock operations" -> ``["lock"]``,
    "cache entries" -> ``["cache", "entry"]``, "order events" -> ``["order"]``.
    """
    i = start
    while i < len(tokens) and tokens[i] in ARTICLES:
        i += 1
    phrase: list[str] = []
    while i < len(tokens) and len(phrase) < 2:
        w = tokens[i]
        if w in _LIST_SEPARATORS or w in STOPWORDS or not w[0].isalpha() or w in VERBS:
            break
        phrase.append(w)
        i += 1
    while phrase and not _is_entity_word(phrase[-1]):
        phrase.pop()
    return [singular(w) for w in phrase]


def verb_lists(text: str) -> list[tuple[list[str], str]]:
    """Verbs listed before a noun: "acquire/release/extend lock" -> ``(["acquire", ...], "lock")``.

    A list is two or more known verbs joined by ``/``, ``,``, ``&``, ``and`` or ``or``.
    """
    tokens = _LIST_TOKEN.findall(text.lower())
    found: list[tuple[list[str], str]] = []
    i = 0
    while i < len(tokens):
        if tokens[i] not in VERBS:
            i += 1
            continue
        verbs, j = [VERBS[tokens[i]]], i + 1
        while True:
            k = j
            while k < len(tokens) and tokens[k] in _LIST_SEPARATORS:
                k += 1
            if k == j or k >= len(tokens) or tokens[k] not in VERBS:
                break
            verbs.append(VERBS[tokens[k]])
            j = k + 1
        noun = _noun_after(tokens, j) if len(verbs) > 1 else []
        if noun:
            found.append((_ordered_unique(verbs), "_".join(noun)))
        i = j
    return found


def _op(verb: str, noun: str) -> str:
    return f"{verb}_{noun}s" if verb == "list" else f"{verb}_{noun}"


def _operations(
    tokens: list[str], found: list[str], entity: str, node_type: str, lists: list[tuple[list[str], str]]
) -> list[str]:
    """One operation per verb: listed verbs on their noun first, other verbs on ``entity``."""
    listed = [_op(v, noun) for verbs, noun in lists for v in verbs]
    in_lists = {v for verbs, _ in lists for v in verbs}
    verbs: list[str] = []
    if "crud" in tokens:
        verbs.extend(CRUD_VERBS)
    for verb in found:
        if verb not in verbs and verb not in in_lists:
            verbs.append(verb)
    if not verbs and not listed:
        verbs = list(DEFAULT_VERBS[node_type])
    ops = [*listed, *(_op(v, entity) for v in verbs)]
    extras = {
        "orchestrator": [f"get_{entity}_status", f"cancel_{entity}"],
        "reducer": [f"get_{entity}_state", f"reset_{entity}"],
    }.get(node_type, [])
    if node_type == "orchestrator" and not any(op.startswith("run_") for op in ops):
        ops.insert(0, f"run_{entity}")
    ops = _ordered_unique([*_without_synonyms(node_type, ops)[:6], *extras])
    return ops


def _without_synonyms(node_type: str, ops: list[str]) -> list[str]:
    """``ops`` keeping the first of operations with the same kind on the same noun.

    "Create and store orders" gives ``create_order`` and ``store_order``, both writes of
    an order: one operation, ``create_order``, is enough.
    """
    seen: set[tuple[str, str]] = set()
    out: list[str] = []
    for op in ops:
        verb, _, noun = op.partition("_")
        key = (kind_of(node_type, op), noun.removesuffix("s") if verb == "list" else noun)
        if key not in seen:
            seen.add(key)
            out.append(op)
    return out


DEFAULT_VERBS: dict[str, tuple[str, ...]] = {
    "effect": ("get", "put", "delete", "list"),
    "compute": ("compute",),
    "reducer": ("aggregate", "count"),
    "orchestrator": ("run",),
}


def _ordered_unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def check_name(name: str, node_type: str | None) -> str:
    """Validate an explicit ``--name``; return the node type its suffix implies."""
    m = NAME_RE.match(name)
    if not m or name in {f"Node{s}" for s in SUFFIX.values()}:
        raise bad_input(
            f"invalid --name {name!r}: expected Node<Name><Effect|Compute|Reducer|Orchestrator>"
            ", e.g. NodeUserProfileEffect"
        )
    implied = m.group(1).lower()
    if node_type and node_type != implied:
        raise bad_input(f"--node-type {node_type} contradicts the name {name!r} (suffix {m.group(1)})")
    return implied


def _name_in_text(text: str) -> tuple[str | None, str]:
    """A node name written in ``text`` and the text without it (and its "Create ...")."""
    m = _NAME_IN_TEXT.search(text)
    if m is None:
        return None, text
    return m.group(1), f"{text[: m.start()]} {text[m.end() :]}"


def _written_name(written: str, node_type: str | None, notes: list[str]) -> str:
    """The name written in the description, re-suffixed when ``--node-type`` says otherwise."""
    suffix = NAME_RE.match(written)
    assert suffix is not None  # _NAME_IN_TEXT only matches valid names
    if node_type is None or node_type == suffix.group(1).lower():
        notes.append(f"name {written} taken from the description")
        return written
    renamed = written[: -len(suffix.group(1))] + SUFFIX[node_type]
    notes.append(f"--node-type {node_type}: {written} from the description becomes {renamed}")
    return renamed


def _quality_notes(confidence: float, given: str | None, chosen: str, has_verbs: bool) -> list[str]:
    notes = []
    if confidence < LOW_CONFIDENCE and not given:
        notes.append(f"low confidence {confidence:.2f} in {chosen}: pass --node-type to be sure")
    if not has_verbs:
        notes.append(f"no operation verbs found: default {chosen} operations used")
    return notes


def parse_prompt(description: str, node_type: str | None = None, name: str | None = None) -> ParsedPrompt:
    """Parse ``description``; ``node_type``/``name`` override what the text implies.

    A node name written in the description (``Node<Name><Effect|Compute|...>``) is the
    name unless ``name`` is given; its suffix is the node type (confidence 1.0). It is
    taken out of the text before the rest is parsed, so it never becomes the entity.
    Otherwise the name comes from the described subject (see :mod:`.subject`).
    """
    text = " ".join(description.split())
    refuse_non_descriptions(text)
    if node_type is not None and node_type not in NODE_TYPES:
        raise bad_input(f"--node-type must be one of {', '.join(NODE_TYPES)}, got {node_type!r}")
    implied = check_name(name, node_type) if name else None
    notes: list[str] = []
    written, rest = _name_in_text(text)
    if written and name:
        notes.append(f"--name {name} given; the description names {written}")
    elif written:
        name = _written_name(written, node_type, notes)
        implied = None if name != written else check_name(name, node_type)
    plain = words(rest)
    tokens = expand(plain)
    sentence = tokens_of(rest)
    found_verbs = operation_verbs(sentence)
    content, preferred = _without_examples(plain)
    guessed, confidence, scores = classify(expand(content), rest)
    signals = sum(scores.values()) + len(found_verbs) + sum(1 for w in tokens if w in BACKENDS)
    if signals == 0 and not (written or name or node_type):  # explicit --name/--node-type: trusted
        raise bad_input(
            "description is not meaningful: name what the node does (e.g. 'store user profiles in PostgreSQL')"
        )
    chosen = node_type or implied or guessed
    if chosen != guessed:
        notes.append(f"node type {chosen} given explicitly; the description suggests {guessed}")
    lists = verb_lists(rest)
    subject_words, where = subject(sentence)
    entity_words = preferred or subject_words or _entity_words(content) or ["item"]
    if not written and not name:
        notes.append(where if not preferred else f"subject {' '.join(preferred)!r}: after 'such as ... of'")
    # The noun of the first verb list is what the operations act on; else the subject.
    noun = lists[0][1] if lists else "_".join(singular(w) for w in entity_words)
    final_name = name or f"Node{camel(noun)}{SUFFIX[chosen]}"
    entity = lists[0][1] if lists else snake(final_name[4 : -len(SUFFIX[chosen])])
    backends = named_backends(tokens)
    domain = backends[0] if backends else entity_words[0]
    if written and name == written:
        confidence = 1.0  # the description names the node: its suffix is the type
    elif chosen != guessed:
        confidence = round(scores[chosen] / max(1, sum(scores.values())), 3)
    operations = _operations(tokens, found_verbs, entity, chosen, lists)
    notes.extend(
        _quality_notes(confidence, node_type, chosen, bool(found_verbs or lists or "crud" in tokens))
    )
    features = _ordered_unique(
        [FEATURES[w] for w in tokens if w in FEATURES] + workflow_features(rest, chosen)
    )
    if CLEANUP_RE.search(rest.lower()):
        features = _ordered_unique([*features, "ttl", "cleanup"])
        if chosen == "effect":
            operations = _ordered_unique([*operations, CLEANUP_OPERATION])
    inflection.flush()
    return ParsedPrompt(
        description=text,
        name=final_name,
        node_type=chosen,
        confidence=confidence,
        type_scores=scores,
        domain=domain,
        entity=entity,
        operations=operations,
        backends=backends,
        features=features,
        performance_targets=performance_targets(rest.lower(), chosen),
        notes=notes,
    )
