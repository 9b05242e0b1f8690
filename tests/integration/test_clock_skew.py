"""A client whose clock is hours off behaves correctly: expiry is the database's call.

The skewed client runs under libfaketime (Debian ``faketime``), so every clock it
has - wall and monotonic - is shifted by hours relative to the database.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time

import pytest

from omninode_bridge.locks import LockClient, LockHeldByOtherError

pytestmark = pytest.mark.skipif(shutil.which("faketime") is None, reason="needs Debian's faketime")

SKEWED = """
import asyncio, json, sys, time
from omninode_bridge.locks import LockClient, LockSettings
async def main():
    out = {"wall_clock": time.time()}
    async with LockClient.connect(sys.argv[1], settings=LockSettings(pool_min=1, pool_max=2), cleanup=False) as locks:
        lease = await locks.acquire("skew", "skewed", ttl=2)
        out["token"] = lease.token
        out["remaining"] = lease.remaining()
        print(json.dumps(out), flush=True)
        sys.stdin.readline()                      # the parent checks exclusion meanwhile
        started = time.monotonic()
        waited = await locks.acquire("skew-2", "skewed", ttl=5, wait=10)   # held by the parent
        out = {"waited_s": time.monotonic() - started, "token2": waited.token}
        await locks.release(waited)
        print(json.dumps(out), flush=True)
asyncio.run(main())
"""


@pytest.mark.parametrize("offset", ["+5h", "-3h"])
async def test_skewed_client_neither_expires_early_nor_holds_forever(
    locks: LockClient, dsn: str, offset: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "faketime", "-f", offset, sys.executable, "-c", SKEWED, dsn,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    assert abs(first["wall_clock"] - time.time()) > 2 * 3600, "the child's clock was not skewed"
    assert 1.5 < first["remaining"] <= 2.0
    # Held for real by the database clock: another owner is refused now ...
    with pytest.raises(LockHeldByOtherError):
        await locks.acquire("skew", "normal", ttl=5)
    # ... and gets it once the 2 s TTL has passed on the database clock, not hours off.
    started = time.monotonic()
    lease = await locks.acquire("skew", "normal", ttl=5, wait=5)
    assert time.monotonic() - started < 2.5
    assert lease.token > first["token"]
    # The skewed client waits for a lock we hold and is woken by our release.
    held = await locks.acquire("skew-2", "normal", ttl=30)
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    await asyncio.sleep(0.5)
    await locks.release(held)
    second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    assert 0.4 < second["waited_s"] < 2.0 and second["token2"] > held.token
    assert await proc.wait() == 0
