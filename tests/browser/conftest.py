"""The console in a real browser: Debian's chromium driven by Playwright (never `playwright
install`: its download cannot work here). A missing browser, font or Playwright is a skip on
a developer's machine and a failure where SLUICE_BROWSER_REQUIRED=1 (.ci/run installs them).
A failing test leaves a screenshot under test-artifacts/console/ (SLUICE_ARTIFACTS_DIR)."""

import importlib.util
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.console.site import create_site
from producers import Client, RecordingDispatcher
from schemas.settings import Settings
from schemas.tenants import Role
from storage.apikeys import ApiKeys

REQUIRED = "SLUICE_BROWSER_REQUIRED"
ROOT = Path(__file__).resolve().parents[2]
FONTS = {"Noto Sans CJK SC": "fonts-noto-cjk", "Noto Sans Arabic": "fonts-noto-core"}


def need(found: Any, message: str) -> Any:
    if found:
        return found
    if os.environ.get(REQUIRED) == "1":
        pytest.fail(f"{message} ({REQUIRED}=1: the browser tests must run here)")
    pytest.skip(message)


def chromium_path() -> str:
    found = os.environ.get("SLUICE_CHROMIUM") or shutil.which("chromium")
    found = found or shutil.which("chromium-browser")
    return str(need(found, "chromium is not installed: apt-get install chromium"))


def check_fonts() -> None:
    fc = need(shutil.which("fc-list"), "fontconfig is not installed: apt-get install fontconfig")
    families = subprocess.run([fc, ":", "family"], capture_output=True, text=True).stdout
    for family, package in FONTS.items():
        need(family in families, f"the font {family} is not installed: apt-get install {package}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One chromium for this folder's tests, closed after them: Playwright's sync API keeps
    an asyncio loop running in this thread while it is open, and later tests' asyncio.run()
    must find none."""
    executable = chromium_path()
    check_fonts()
    need(importlib.util.find_spec("playwright"), "Playwright is not installed: make install")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    if request.node.stash.get(FAILED, False):
        folder = Path(os.environ.get("SLUICE_ARTIFACTS_DIR", ROOT / "test-artifacts")) / "console"
        folder.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(folder / f"{request.node.name}.png"), full_page=True)
    context.close()


class Site:
    """The console served by uvicorn on a loopback port, over a ledger of its own."""

    def __init__(self, client: Client, url: str, key: str, operator_key: str) -> None:
        self.client = client
        self.url = url
        self.key = key
        self.operator_key = operator_key


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    import uvicorn

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path}/ledger.db",
        broker_url="redis://127.0.0.1:1/0",  # never reached: the dispatcher records
        input_roots=str(tmp_path),
    )
    client = Client(settings, RecordingDispatcher())
    keys = ApiKeys(client.ledger.engine)
    key = keys.create("acme").key
    operator_key = keys.create("default", role=Role.OPERATOR).key
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait here until uvicorn serves: no start-up race
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_site(client=client), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield Site(client, f"http://127.0.0.1:{port}", key, operator_key)
    server.should_exit = True
    thread.join(10)
    sock.close()
