"""Real headless Chromium and a real gateway, together in a network namespace that has only loopback.

Chromium offers ICE candidates on every interface it sees; inside a fresh namespace the only one
is 127.0.0.1, so no test traffic can reach the machine's other interface. Playwright talks to
Chromium over a pipe, so it crosses the namespace boundary; HTTP checks run inside the page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chromium import FLAGS, chromium_in, loopback_netns
from tests.integration.conftest import GatewayProcess


@pytest.fixture(scope="session")
def netns() -> Iterator[str]:
    with loopback_netns("cherry-browser", "browser tests") as name:
        yield name


@pytest.fixture(scope="session")
def gateway(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # Covers every 2 s instead of 10: the room-list test watches a few rounds.
    proc = GatewayProcess([], "[snapshots]\ninterval_s = 2.0\n", tmp_path_factory.mktemp("browser-gw"), netns=netns,
                          port=8080, module="gateway")
    yield proc
    proc.stop()


# Module scope: sync Playwright runs an event loop in this thread while it is open, and the asyncio
# tests of other modules need the thread to themselves.
@pytest.fixture(scope="module")
def browser(netns: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    wrapper = chromium_in(netns, tmp_path_factory.mktemp("chromium"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(wrapper), headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):  # type: ignore[no-untyped-def]
    # bypass_csp: Playwright's wait_for_function evaluates its predicate string, which the pages' policy
    # (no eval) refuses; test_pages.py checks the pages themselves under their policy.
    context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    yield context
    context.close()
