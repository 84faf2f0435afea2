"""End to end in a real browser: Debian's chromium, driven through chromedriver.

The login example (``examples/login_app.py``) is served on 127.0.0.1 by werkzeug in a
thread; headless chromium logs in, navigates, logs out, and reports the session cookie
as it stored it. Needs ``apt-get install chromium chromium-driver`` and ``pip install
selenium`` (no browser is downloaded). Skipped when the binaries are missing, except
under CI (``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _examples import load_example
from flask import Flask
from helpers import COOKIE, SID_RE, client_with, record_files
from werkzeug.serving import BaseWSGIServer, make_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PERSISTENT_DAYS = 400


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def serve(data_dir: Path) -> Iterator[Callable[..., tuple[Flask, str]]]:
    """Serves the login example with extra config on a free port; yields (app, base URL)."""
    module = load_example("login_app", data_dir)
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(**config: Any) -> tuple[Flask, str]:
        app = module.create_app({"SESSION_DATA_DIR": str(data_dir), **config})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return app, f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless chromium through /usr/bin/chromedriver, with a throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(arg)
    log = tmp_path / "chromedriver.log"
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(log)), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def text_of(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.ID, element_id).text)


def page_text(browser: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.TAG_NAME, "body").text)


def click(browser: Any, element_id: str) -> None:
    """Clicks and waits until the next page has loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("window.__fbsOldPage = true;")
    browser.find_element(By.ID, element_id).click()

    def next_page_loaded(b: Any) -> bool:
        try:
            return bool(
                b.execute_script(
                    "return !window.__fbsOldPage && document.readyState === 'complete';"
                )
            )
        except WebDriverException:  # mid-navigation
            return False

    WebDriverWait(browser, 20).until(next_page_loaded)


def session_cookie(browser: Any) -> dict[str, Any] | None:
    cookies = [c for c in browser.get_cookies() if c["name"] == COOKIE]
    assert len(cookies) <= 1, cookies
    return cookies[0] if cookies else None


def log_in(browser: Any, base: str) -> None:
    """Visits the private page anonymously, is sent to the form, logs in as alice."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/private")
    assert browser.current_url.startswith(f"{base}/login")
    assert "Please log in to see that page." in page_text(browser)
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("wonderland")
    click(browser, "submit")


def test_login_navigate_logout_in_chromium(
    serve: Callable[..., tuple[Flask, str]], driver: Any, data_dir: Path
) -> None:
    """Log in, navigate (the session survives), log out (it is gone, in the browser and
    on the server: the old cookie value replayed elsewhere finds nothing). The cookie as
    chromium stored it: HttpOnly (invisible to JavaScript), SameSite=Lax, Path=/, not
    Secure, and a browser-session cookie (no expiry) by default."""
    app, base = serve()
    driver.get(f"{base}/")
    assert text_of(driver, "status") == "You are not logged in."
    assert session_cookie(driver) is None  # a page that only reads stores nothing

    log_in(driver, base)
    assert driver.current_url == f"{base}/private"
    assert text_of(driver, "greeting") == "Hello alice!"
    assert "Logged in as alice." in page_text(driver)
    assert text_of(driver, "visits") == "1"

    cookie = session_cookie(driver)
    assert cookie is not None
    sid = cookie["value"]
    assert SID_RE.fullmatch(sid)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["secure"] is False
    assert cookie["domain"] == "127.0.0.1"
    assert "expiry" not in cookie  # browser-session cookie (SESSION_EXPIRES = True)
    assert COOKIE not in driver.execute_script("return document.cookie")

    click(driver, "home")
    assert text_of(driver, "status") == "Welcome back, alice."
    assert text_of(driver, "whoami") == "Signed in as alice"
    click(driver, "private-link")
    assert text_of(driver, "visits") == "2"
    driver.refresh()
    assert text_of(driver, "visits") == "3"
    assert session_cookie(driver) == cookie  # same id throughout, not re-sent
    assert len(record_files(data_dir)) == 1

    click(driver, "logout")
    assert driver.current_url == f"{base}/"
    assert "You are logged out." in page_text(driver)
    assert text_of(driver, "status") == "You are not logged in."
    # The goodbye message was the only content of a new session; once shown, that
    # session is deleted too: no cookie in the browser, no record on the server.
    assert session_cookie(driver) is None
    assert record_files(data_dir) == []
    driver.get(f"{base}/private")
    assert driver.current_url.startswith(f"{base}/login")

    client = client_with(app, sid)
    replayed = client.get("/private")
    assert replayed.status_code == 302
    assert "/login" in replayed.headers["Location"]


def test_persistent_cookie_in_chromium(
    serve: Callable[..., tuple[Flask, str]], driver: Any
) -> None:
    """With SESSION_EXPIRES = False chromium keeps a persistent cookie expiring about
    400 days ahead, still HttpOnly and SameSite=Lax."""
    _app, base = serve(SESSION_EXPIRES=False)
    log_in(driver, base)
    assert text_of(driver, "greeting") == "Hello alice!"
    cookie = session_cookie(driver)
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    days_ahead = (cookie["expiry"] - time.time()) / 86400
    assert PERSISTENT_DAYS - 1 < days_ahead <= PERSISTENT_DAYS + 0.01, days_ahead


def test_samesite_setting_reaches_the_browser(
    serve: Callable[..., tuple[Flask, str]], driver: Any
) -> None:
    """Flask's SESSION_COOKIE_SAMESITE is what chromium records."""
    _app, base = serve(SESSION_COOKIE_SAMESITE="Strict")
    log_in(driver, base)
    cookie = session_cookie(driver)
    assert cookie is not None and cookie["sameSite"] == "Strict"


@pytest.fixture
def demo_server(data_dir: Path) -> Iterator[tuple[Any, str]]:
    """Serves the demo (``examples/app.py``) on a free port; yields (module, base URL)."""
    module = load_example("app", data_dir)
    server = make_server("127.0.0.1", 0, module.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield module, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def test_demo_page_in_chromium(
    demo_server: tuple[Any, str], driver: Any, data_dir: Path, tmp_path: Path
) -> None:
    """The demo's index, as chromium renders it: every route explained; no session at
    first; after /create, the session's id (the cookie chromium holds), its contents, its
    times and its file, which exists. The rendered page is saved as a PNG (in
    ``$FBS_SCREENSHOT_DIR`` when set, to look at it)."""
    module, base = demo_server
    driver.set_window_size(1000, 1100)
    driver.get(f"{base}/")
    body = page_text(driver)
    for path, sentence in module.ROUTES.items():
        assert f"{path}: {sentence}" in body
    assert text_of(driver, "no-session").startswith("You have no session yet")
    assert session_cookie(driver) is None

    click(driver, "link-create")
    assert page_text(driver) == "created"
    driver.get(f"{base}/")
    cookie = session_cookie(driver)
    assert cookie is not None
    assert text_of(driver, "session-id") == cookie["value"]
    contents = text_of(driver, "session-contents").splitlines()
    assert contents == ["var_1 = session 1", "var_2 = 5", "var_3 = YourObject('an object')"]
    assert text_of(driver, "session-created").endswith("s ago)")
    assert text_of(driver, "session-last-accessed").endswith("s ago)")
    assert [Path(text_of(driver, "session-stored"))] == record_files(data_dir)

    png = driver.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    (tmp_path / "demo.png").write_bytes(png)
    if os.environ.get("FBS_SCREENSHOT_DIR"):
        target = Path(os.environ["FBS_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        (target / "demo.png").write_bytes(png)
