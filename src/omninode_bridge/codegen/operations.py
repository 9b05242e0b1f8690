"""Operation kinds: how an operation name maps to behaviour the templates implement.

An operation is ``<verb>_<entity>``; its verb picks a *kind* for the node type
(an effect ``get_*`` reads from the backend, a compute ``hash_*`` digests its
input, ...). Templates render one handler per operation from its kind, so every
generated operation does something real that its tests can check.
"""

from __future__ import annotations

import textwrap
from typing import Any

from omninode_bridge.codegen.fidelity import hand_edit_work

KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "effect": {
        "write": (
            "create",
            "insert",
            "store",
            "save",
            "put",
            "set",
            "write",
            "upload",
            "register",
            "record",
            "add",
        ),
        "send": (
            "publish",
            "send",
            "post",
            "emit",
            "produce",
            "enqueue",
            "push",
            "call",
            "notify",
            "invoke",
            "run",
            "schedule",
        ),
        "read": (
            "get",
            "read",
            "fetch",
            "load",
            "lookup",
            "find",
            "query",
            "download",
            "retrieve",
            "check",
        ),
        "consume": ("consume", "pull", "dequeue", "receive"),
        "update": ("update", "patch", "refresh", "extend", "modify", "touch"),
        "delete": ("delete", "evict", "invalidate", "purge", "expire", "remove", "cancel"),
        "list": ("list", "search", "scan", "browse"),
        "cleanup": ("cleanup", "sweep", "reap"),
    },
    "compute": {
        "hash": ("hash", "checksum", "digest", "encode", "sign", "fingerprint"),
        "statistics": (
            "compute",
            "calculate",
            "score",
            "sum",
            "count",
            "aggregate",
            "measure",
            "estimate",
            "rank",
        ),
        "transform": (
            "transform",
            "convert",
            "normalize",
            "format",
            "parse",
            "decode",
            "map",
            "clean",
            "render",
        ),
        "validate": ("validate", "classify", "check", "verify", "detect"),
    },
    "reducer": {
        "aggregate": (
            "aggregate",
            "reduce",
            "sum",
            "accumulate",
            "summarize",
            "rollup",
            "total",
            "fold",
            "compute",
            "calculate",
        ),
        "count": ("count", "tally"),
        "increment": ("increment", "incr"),
        "decrement": ("decrement", "decr"),
        "merge": ("merge", "collect", "group", "combine", "join"),
        "state": ("get", "read", "fetch", "list", "query"),
        "reset": ("reset", "clear", "delete", "purge"),
    },
    "orchestrator": {
        "run": (
            "run",
            "execute",
            "orchestrate",
            "coordinate",
            "start",
            "process",
            "route",
            "schedule",
            "approve",
        ),
        "status": ("get", "status", "check", "query", "fetch"),
        "cancel": ("cancel", "abort", "stop", "delete"),
    },
}
# The lock family: these verbs on a lock-like noun get lease semantics (an effect's
# ``acquire_lock`` takes a lease with a fencing token, ``extend_lock`` renews it, ...).
LOCK_NOUNS = frozenset({"lock", "locks", "lease", "leases", "mutex", "semaphore"})
LOCK_VERBS: dict[str, str] = {
    "acquire": "acquire",
    "lock": "acquire",
    "obtain": "acquire",
    "take": "acquire",
    "release": "release",
    "unlock": "release",
    "free": "release",
    "extend": "extend",
    "renew": "extend",
    "refresh": "extend",
    "touch": "extend",
    "heartbeat": "extend",
}
LOCK_KINDS = ("acquire", "release", "extend")
DEFAULT_KIND = {
    "effect": "send",
    "compute": "statistics",
    "reducer": "aggregate",
    "orchestrator": "run",
}

KIND_DESCRIPTIONS: dict[str, str] = {
    "write": "store a value under a key",
    "send": "send a message and return its id",
    "read": "read the value stored under a key",
    "consume": "take the oldest sent message",
    "update": "update the value stored under an existing key",
    "delete": "delete the value stored under a key",
    "list": "list stored keys, optionally by prefix",
    "cleanup": "remove expired entries and leases; returns how many",
    "acquire": "take a lease on the resource ``key`` for ``owner``; returns its lease id"
    " and a fencing token that increases with every new lease",
    "release": "give up the lease ``lease_id`` (idempotent for its holder)",
    "extend": "renew the held lease ``lease_id`` for another TTL",
    "hash": "SHA-256 digest of the canonical JSON of the input",
    "statistics": "count, sum, mean, min and max of the input values",
    "transform": "normalise keys to snake_case and strip string values",
    "validate": "check that required fields are present and non-empty",
    "aggregate": "fold items into per-group totals of a numeric field",
    "count": "count items per group (paired events move the count up and down)",
    "increment": "add one per item to its group's count",
    "decrement": "take one per item from its group's count (never below zero)",
    "merge": "merge item fields into the per-group state",
    "state": "return the current reduced state",
    "reset": "clear the reduced state",
    "run": "run workflow steps in dependency order",
    "status": "report the status of a workflow run",
    "cancel": "cancel a workflow run",
    "hand_edit": "hand-edit point, not generated: implement it in node.py",
}
INPUT_CHECK_SUFFIX = "_inputs"


def kind_of(node_type: str, operation: str) -> str:
    """The kind of ``operation`` for ``node_type`` (by its first matching word)."""
    parts = operation.split("_")
    table = KINDS[node_type]
    if node_type == "orchestrator" and operation.endswith("_status"):
        return "status"
    if node_type == "reducer" and operation.endswith("_state") and parts[0] in KINDS["reducer"]["state"]:
        return "state"
    if node_type == "effect" and parts[0] in LOCK_VERBS and LOCK_NOUNS.intersection(parts[1:]):
        return LOCK_VERBS[parts[0]]
    if node_type == "compute" and any(p in table["hash"] or p.startswith("sha") for p in parts):
        return "hash"  # "compute_sha256_checksum" digests, whatever its verb
    for part in parts:
        for kind, verbs in table.items():
            if part in verbs:
                return kind
    return DEFAULT_KIND[node_type]


def operation_specs(
    node_type: str,
    operations: list[str],
    entity: str,
    described: dict[str, str] | None = None,
    description: str = "",
) -> list[dict[str, Any]]:
    """Template-ready operation descriptions: name, enum member, kind, handler, description.

    ``described`` holds descriptions a contract gave its operations; they are kept. An
    operation whose generic kind is not what ``description`` asks for becomes a
    hand-edit point (kind ``hand_edit``, see :mod:`.fidelity`).
    """
    specs = []
    for op in operations:
        kind = kind_of(node_type, op)
        work = None if op.endswith(INPUT_CHECK_SUFFIX) else hand_edit_work(node_type, kind, description)
        if work is not None:
            kind = "hand_edit"
        words = op.replace("_", " ")
        given = " ".join((described or {}).get(op, "").replace('"', "'").replace("\\", "/").split())
        text = given.rstrip(".") + "." if given else f"{words.capitalize()}: {KIND_DESCRIPTIONS[kind]}."
        specs.append(
            {
                "name": op,
                "member": op.upper(),
                "kind": kind,
                "handler": f"_handle_{op}",
                "description": text,
                "doc": textwrap.fill(text, 88, subsequent_indent=" " * 8),
                "event": f"{op}_completed",
                "work": work or "",
            }
        )
    return specs
