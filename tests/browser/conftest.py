"""A real browser for the storefront widget (and, later, the console): Debian's Chromium driven by Playwright.

Playwright's own browser download cannot be reached here, so the system Chromium is used
(``HUB_TEST_CHROMIUM`` or ``/usr/bin/chromium``; ``./scripts/test.sh`` installs it when it is missing and the
machine allows). Without it the tests are skipped with the reason — except under ``CI=true``, where a missing
browser is a failure. A failing test leaves a screenshot of its page in the test's folder
(``failure-<test>.png``); ``HUB_UPDATE_SCREENSHOTS=1`` also writes the README's screenshots into ``docs/images``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("HUB_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        message = "no Chromium (apt-get install chromium, or set HUB_TEST_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run under CI=true: {message}")
        pytest.skip(message)
    return path


@pytest.fixture
async def page(chromium: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh browser page; on failure its screenshot is saved next to the test's files."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = await browser.new_context(viewport={"width": 1100, "height": 800})
        page = await context.new_page()
        try:
            yield page
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                shot = tmp_path / f"failure-{request.node.name}.png"
                await page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the failed page: {shot}")
            await browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


async def readme_screenshot(page: Any, name: str, locator: Any = None) -> None:
    """With HUB_UPDATE_SCREENSHOTS=1, the README's picture of this page (or element) is taken now."""
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") != "1":
        return
    target = ROOT / "docs" / "images" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    await (locator or page).screenshot(path=str(target))


async def eventually(check: Any, what: str, timeout: float = 60) -> Any:
    """Await ``check()`` until it returns something true (returned), yielding to the event loop (Playwright runs
    on it) between tries; an ``AssertionError`` naming ``what`` when the time is up."""
    import asyncio
    import inspect

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.1)
