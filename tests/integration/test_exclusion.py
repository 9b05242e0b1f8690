"""Mutual exclusion across OS processes, checked through the fencing guard."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

HERE = Path(__file__).parent
WORKERS = 8


async def test_eight_processes_never_overlap_and_tokens_only_grow(
    dsn: str, check_counters: Callable[[str], Awaitable[None]]
) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE critical (id int PRIMARY KEY, holder text, token bigint)")
    await conn.execute("INSERT INTO critical VALUES (1, NULL, 0)")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "hammer.py"),
            dsn,
            str(i),
            "4",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(WORKERS)
    ]
    results = []
    for proc in procs:
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))

    tokens = [t for r in results for t in r["tokens"]]
    assert sum(r["overlaps"] for r in results) == 0
    assert sum(r["stale_accepted"] for r in results) == 0
    assert len(tokens) == len(set(tokens)), "a fencing token was issued twice"
    assert len(tokens) >= 8 * 20, f"too few grants to mean anything: {len(tokens)}"
    assert all(len(r["tokens"]) > 0 for r in results), "a worker was starved"
    for r in results:  # each process saw its own tokens strictly increase
        assert r["tokens"] == sorted(r["tokens"])
    # the guard table ends at the newest token ever granted
    assert await conn.fetchval(
        "SELECT token FROM omninode_locks.fences WHERE resource = 'hammer-resource'"
    ) == max(tokens)
    granted = await conn.fetchval(
        "SELECT count(*) FROM omninode_locks.events WHERE event_type = 'lock_acquired' AND lock_name = 'hammer'"
    )
    assert granted == len(tokens), "the outbox must record exactly the grants that happened"
    await conn.close()
    await check_counters(dsn)


KEY_SCRIPT = """
import asyncio, sys
from omninode_bridge.locks import LockClient, LockSettings
async def main():
    async with LockClient.connect(sys.argv[1], settings=LockSettings(pool_min=1, pool_max=1), cleanup=False) as locks:
        try:
            lease = await locks.acquire("same-name", "proc-" + sys.argv[2], ttl=30)
            print("granted", lease.token)
        except Exception as err:
            print("refused", err.code)
asyncio.run(main())
"""


def test_two_processes_contend_for_the_same_key(dsn: str) -> None:
    """The original used Python's salted hash(): two processes never excluded each other."""
    outputs = []
    for i, seed in enumerate(("1", "2")):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-c", KEY_SCRIPT, dsn, str(i)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split())
    assert outputs[0][0] == "granted"
    assert outputs[1] == ["refused", "LOCK_HELD_BY_OTHER"]
