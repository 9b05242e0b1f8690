"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): a lock
taken through the API appears and disappears on release with no page reload."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from svc_helpers import Service

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("OMNINODE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
SHOTS = Path(__file__).resolve().parents[3] / ".omninode" / "screenshots"


@pytest.fixture
async def page(service: Service) -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1400, "height": 820})
        yield page
        await browser.close()


async def test_lock_appears_and_disappears_live(page: Any, service: Service, http: httpx.AsyncClient) -> None:
    loads: list[str] = []
    page.on("load", lambda: loads.append("load"))
    await page.goto(service.url + "/")
    await page.wait_for_selector("#conn.live", timeout=15_000)
    await page.wait_for_function("document.querySelector('#t-locks').textContent !== '–'")

    lease = (
        await http.post(
            "/v1/locks/billing:nightly/acquire",
            json={"owner_id": "worker-7", "ttl": 120, "metadata": {"run": 1}},
        )
    ).json()
    for i in range(3):
        await http.post(
            f"/v1/locks/reports:{i}/acquire", json={"owner_id": f"reader-{i}", "mode": "shared", "ttl": 60}
        )
    row = page.locator('tr[data-lock="billing:nightly"]')
    await row.wait_for(timeout=10_000)
    text = await row.inner_text()
    assert "worker-7" in text and "exclusive" in text and f"#{lease['token']}" in text
    assert lease["lease_id"] not in await page.content()
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)

    await http.post("/v1/locks/billing:nightly/release", json={"lease_id": lease["lease_id"]})
    await row.wait_for(state="detached", timeout=10_000)
    events = await page.locator("#event-rows").inner_text()
    assert "released" in events and "billing:nightly" in events
    assert loads == ["load"]  # one page load: every change arrived over the stream


async def test_dashboard_with_tokens_reads_the_token_from_the_fragment(module_dsn: str) -> None:
    if not HAVE_CHROMIUM:
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.async_api import async_playwright

    svc = await Service(module_dsn, OMNINODE_CLIENT_TOKENS="dash-token").start()
    try:
        async with async_playwright() as pw, httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page()
            await page.goto(svc.url + "/")  # no token: the stream is refused, and the page says so
            await page.wait_for_selector("#conn.down", timeout=15_000)
            assert "401" in await page.locator("#conn-text").inner_text()
            await page.goto(svc.url + "/#token=dash-token")
            await page.reload()
            await page.wait_for_selector("#conn.live", timeout=15_000)
            auth = {"Authorization": "Bearer dash-token"}
            await http.post("/v1/locks/tokened/acquire", json={"owner_id": "t"}, headers=auth)
            await page.locator('tr[data-lock="tokened"]').wait_for(timeout=10_000)
            await browser.close()
        assert "dash-token" not in svc.output()
    finally:
        await svc.stop()
