"""Where the client's CPU goes per try-lock pair: ``python -m bench.client_profile [--dsn DSN]``.

One process, one lock name, N back-to-back ``acquire(wait=0)`` + ``release`` pairs
through :class:`LockClient` under cProfile; prints the client CPU per pair and the
functions with the most own time (``--sort cumulative`` for inclusive time). Uses its
own schema (``omninode_profile``), dropped and recreated, so it disturbs no other bench.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time

import asyncpg

from bench.engine import ROOT
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded

SCHEMA = "omninode_profile"


async def run(dsn: str, pairs: int, sort: str, top: int) -> None:
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await admin.close()
    settings = LockSettings(dsn=dsn, schema=SCHEMA, pool_min=2, pool_max=2)
    async with LockClient.connect(settings=settings, cleanup=False, owner_id="profile") as locks:
        name = f"profile:{time.time_ns():x}"
        for _ in range(200):  # warm-up: prepared statements, caches
            await locks.release(await locks.acquire(name, ttl=30, wait=0))
        profile = cProfile.Profile(time.process_time)  # CPU time, not waiting on the server
        cpu0 = time.process_time()
        profile.enable()
        for _ in range(pairs):
            await locks.release(await locks.acquire(name, ttl=30, wait=0))
        profile.disable()
        cpu = time.process_time() - cpu0
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(sort).print_stats(top)
    print(out.getvalue())
    # counts do not depend on the machine's load, unlike the times above
    profiled = stats.get_stats_profile().func_profiles
    calls = int(vars(stats)["total_calls"])  # an attribute typeshed does not declare
    iterations = int(str(profiled["_run_once"].ncalls).split("/")[0]) if "_run_once" in profiled else 0
    print(
        f"per pair: {calls / pairs:.0f} function calls, {iterations / pairs:.1f} event-loop iterations; "
        f"client CPU under cProfile {cpu / pairs * 1e6:.0f} us ({pairs} pairs)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.client_profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: embedded)")
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    dsn = args.dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    asyncio.run(run(dsn, args.pairs, args.sort, args.top))


if __name__ == "__main__":
    main()
