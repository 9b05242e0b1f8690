"""The per-client rate limit: the token bucket's arithmetic (an injected clock, no I/O)
and a real service started with a low limit answering 429 with ``Retry-After``."""

from __future__ import annotations

import httpx
import pytest
from sec_helpers import SecureService

from omninode_bridge.locks.errors import LockValidationError
from omninode_bridge.service.limits import DEFAULT_RATE, RateLimiter, rate_limit_from_env


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limit = RateLimiter(rate=2.0, burst=3.0, clock=clock)
    assert [limit.take(b"a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take(b"a") == pytest.approx(0.5)  # one token comes back every 1/rate s
    assert limit.take(b"b") == 0.0, "another client has its own bucket"
    clock.now += 0.5
    assert limit.take(b"a") == 0.0
    assert limit.take(b"a") > 0
    clock.now += 60
    assert [limit.take(b"a") for _ in range(3)] == [0.0, 0.0, 0.0], "refills up to the burst only"
    assert limit.take(b"a") > 0


def test_idle_buckets_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    limit = RateLimiter(rate=1.0, burst=1.0, clock=clock)
    for i in range(10_005):
        limit.take(str(i).encode())
        clock.now += 0.001
    clock.now += 5
    limit.take(b"late")
    assert len(limit._buckets) <= 10_001


def test_settings_from_the_environment() -> None:
    assert rate_limit_from_env({}) == (DEFAULT_RATE, DEFAULT_RATE)
    assert rate_limit_from_env({"OMNINODE_RATE_LIMIT": "5"}) == (5.0, 5.0)
    assert rate_limit_from_env({"OMNINODE_RATE_LIMIT": "5", "OMNINODE_RATE_BURST": "20"}) == (5.0, 20.0)
    assert rate_limit_from_env({"OMNINODE_RATE_LIMIT": "0"})[0] == 0.0  # off
    for bad in (
        {"OMNINODE_RATE_LIMIT": "fast"},
        {"OMNINODE_RATE_LIMIT": "-1"},
        {"OMNINODE_RATE_BURST": "0.5"},
    ):
        with pytest.raises(LockValidationError, match="OMNINODE_RATE"):
            rate_limit_from_env(bad)


@pytest.mark.integration
async def test_a_service_with_a_low_limit_answers_429_per_client(sec_dsn: str) -> None:
    svc = await SecureService(sec_dsn, OMNINODE_RATE_LIMIT="0.5", OMNINODE_RATE_BURST="3").start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            client, admin = svc.headers(), svc.headers("admin")
            statuses = [(await http.get("/v1/locks", headers=client)).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            refused = await http.post("/v1/locks/rl/acquire", json={"owner_id": "x"}, headers=client)
            assert refused.status_code == 429
            assert refused.json()["error_code"] == "RATE_LIMITED"
            assert 1 <= int(refused.headers["retry-after"]) <= 2
            assert (await http.get("/v1/locks/rl", headers=admin)).status_code == 404, "refused: nothing done"
            assert (await http.get("/v1/locks", headers=admin)).status_code == 200, (
                "another token, another bucket"
            )
            probes = [(await http.get("/health")).status_code for _ in range(5)]
            assert probes == [200] * 5, "probes are exempt"
    finally:
        await svc.stop()
        svc.remove_log()
