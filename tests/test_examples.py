"""The apps in ``examples/`` work as their docstrings say (driven by the test client)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

import pytest
from _examples import load_example
from flask import Flask
from flask.testing import FlaskClient
from helpers import client_with, cookie_of, record_files
from markupsafe import escape


@pytest.fixture
def demo(data_dir: Path) -> ModuleType:
    return load_example("app", data_dir)


@pytest.fixture
def login(data_dir: Path) -> ModuleType:
    return load_example("login_app", data_dir)


@pytest.fixture
def cart(data_dir: Path) -> ModuleType:
    return load_example("cart_app", data_dir)


def set_cookie_headers(response: object) -> list[str]:
    return response.headers.getlist("Set-Cookie")  # type: ignore[attr-defined, no-any-return]


def replay(app: Flask, sid: str) -> FlaskClient:
    """A fresh client holding only the cookie value ``sid`` (e.g. a stolen copy)."""
    client = client_with(app, sid)
    return client


# -- every example -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app", "login_app", "cart_app"])
def test_module_app_uses_environment(name: str, data_dir: Path) -> None:
    """Each example exposes ``app`` and ``create_app``; the module-level app takes its data
    dir and key from SESSION_DATA_DIR / SECRET_KEY, and ``create_app(config)`` overrides."""
    module = load_example(name, data_dir, secret_key="from-the-environment")
    assert isinstance(module.app, Flask)
    assert module.app.config["SESSION_DATA_DIR"] == str(data_dir)
    assert module.app.config["SECRET_KEY"] == "from-the-environment"
    other = module.create_app({"SESSION_DATA_DIR": str(data_dir / "other")})
    assert other.config["SESSION_DATA_DIR"] == str(data_dir / "other")
    assert other is not module.app


@pytest.mark.parametrize("name", ["app", "login_app", "cart_app"])
def test_default_data_dir_is_next_to_the_file(
    name: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SESSION_DATA_DIR the data dir is a folder beside the example, whatever the
    working directory, and a development SECRET_KEY is set (records are authenticated)."""
    module = load_example(name, data_dir)
    monkeypatch.delenv("SESSION_DATA_DIR", raising=False)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.chdir(data_dir.parent)
    config = module.default_config()
    folder = Path(config["SESSION_DATA_DIR"])
    assert folder.parent == Path(module.__file__).parent
    assert folder.name.startswith(".sessions")
    assert config["SECRET_KEY"]


# -- the demo (the original README's routes) -----------------------------------------


def test_demo_index_stores_nothing(demo: ModuleType, data_dir: Path) -> None:
    """The index page does not use the session: no cookie, no file."""
    response = demo.app.test_client().get("/")
    assert response.status_code == 200
    assert "/create" in response.text
    assert set_cookie_headers(response) == []
    assert record_files(data_dir) == []


def test_demo_index_explains_every_route(demo: ModuleType) -> None:
    """Every route of the app is linked from the index with its sentence, and a visitor
    without a session is told so."""
    page = demo.app.test_client().get("/").text
    routes = {r.rule for r in demo.app.url_map.iter_rules()} - {"/", "/static/<path:filename>"}
    assert set(demo.ROUTES) == routes
    for path, sentence in demo.ROUTES.items():
        assert f'href="{path}"' in page
        assert str(escape(sentence)) in page
    assert 'id="no-session"' in page and 'id="session-id"' not in page


def test_demo_index_shows_the_session(demo: ModuleType, data_dir: Path) -> None:
    """With a session, the index shows its id (the cookie's value), contents, creation and
    last-access times, and the file it is stored in, which exists; nothing is rewritten."""
    client = demo.app.test_client()
    client.get("/create")
    sid = cookie_of(client)
    assert sid is not None
    page = client.get("/").text
    assert f'<code id="session-id">{sid}</code>' in page
    assert "var_1 = session 1" in page and "var_2 = 5" in page
    assert "var_3 = YourObject(&#39;an object&#39;)" in page
    for field in ("session-created", "session-last-accessed"):
        shown = re.search(rf'id="{field}">([^<]*)<', page)
        assert shown is not None and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC ", shown[1])
    stored = re.search(r'id="session-stored">([^<]*)<', page)
    assert stored is not None
    assert [Path(stored[1])] == record_files(data_dir)
    assert set_cookie_headers(client.get("/")) == []  # showing it does not re-send the cookie


def test_demo_create_read_delete_delete_all(demo: ModuleType, data_dir: Path) -> None:
    """create stores three values (one a user-defined object), read shows them, delete
    pops one key, delete_all removes the record and expires the cookie."""
    client = demo.app.test_client()
    assert client.get("/read").text == "nothing in the session yet: visit /create"
    assert record_files(data_dir) == []

    created = client.get("/create")
    assert created.text == "created"
    cookie = set_cookie_headers(created)
    assert len(cookie) == 1 and "Expires=" in cookie[0]  # SESSION_EXPIRES = False
    assert len(record_files(data_dir)) == 1
    assert client.get("/read").text == "session 1 - 5 - YourObject('an object')"

    assert client.get("/delete").get_json() is False
    assert client.get("/read").text == "nothing in the session yet: visit /create"
    sid = cookie_of(client)
    assert sid is not None and len(record_files(data_dir)) == 1

    deleted = client.get("/delete_all")
    assert deleted.text == "deleted"
    assert any(
        "Max-Age=0" in h or "Expires=Thu, 01 Jan 1970" in h for h in set_cookie_headers(deleted)
    )
    assert record_files(data_dir) == []
    assert cookie_of(client) is None
    assert replay(demo.app, sid).get("/counter").text.startswith("visit number 1 ")


def test_demo_counter_counts(demo: ModuleType) -> None:
    """/counter increments a value kept across requests of one client only."""
    first, second = demo.app.test_client(), demo.app.test_client()
    assert [first.get("/counter").text.split()[2] for _ in range(3)] == ["1", "2", "3"]
    assert second.get("/counter").text.split()[2] == "1"


# -- the login example ----------------------------------------------------------------


def log_in(client: FlaskClient, user: str = "alice", password: str = "wonderland") -> str:
    response = client.post(
        "/login", data={"username": user, "password": password}, follow_redirects=True
    )
    assert response.status_code == 200, response.text
    return response.text


def test_login_protected_page_needs_login(login: ModuleType, data_dir: Path) -> None:
    """An anonymous visit to the private page redirects to the login form, which shows
    the flash message once; the emptied session is then deleted."""
    client = login.app.test_client()
    response = client.get("/private")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query) == {"next": ["/private"]}
    assert len(record_files(data_dir)) == 1  # the pending flash message
    form = client.get(f"{location.path}?{location.query}")
    assert "Please log in to see that page." in form.text
    assert 'name="next" value="/private"' in form.text
    assert record_files(data_dir) == [] and cookie_of(client) is None
    assert "Please log in" not in client.get("/login").text


def test_login_wrong_password(login: ModuleType) -> None:
    """A wrong password gives 401 with an error message and no logged-in user."""
    client = login.app.test_client()
    response = client.post("/login", data={"username": "alice", "password": "nope"})
    assert response.status_code == 401
    assert "Wrong user name or password." in response.text
    assert "You are not logged in." in client.get("/").text
    unknown = client.post("/login", data={"username": "mallory", "password": ""})
    assert unknown.status_code == 401


def test_login_session_survives_navigation(login: ModuleType, data_dir: Path) -> None:
    """After login the private page greets the user and counts views across requests;
    the success message is shown once."""
    client = login.app.test_client()
    page = log_in(client)
    assert "Logged in as alice." in page and "Hello alice!" in page
    assert '<span id="visits">1</span>' in page
    assert "Welcome back, alice." in client.get("/").text
    assert '<span id="visits">2</span>' in client.get("/private").text
    assert "Logged in as alice." not in client.get("/private").text
    assert len(record_files(data_dir)) == 1


def test_login_regenerates_the_id(login: ModuleType, data_dir: Path) -> None:
    """The id the browser had before login (here one holding a pending message) is dead
    after login: replaying it shows an anonymous visitor; the message moved along."""
    client = login.app.test_client()
    client.get("/private")  # anonymous: a session holding "Please log in"
    before = cookie_of(client)
    assert before is not None
    response = client.post("/login", data={"username": "bob", "password": "builder", "next": "/"})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    after = cookie_of(client)
    assert after is not None and after != before
    assert len(record_files(data_dir)) == 1
    home = client.get("/").text
    assert "Welcome back, bob." in home
    assert "Please log in to see that page." in home and "Logged in as bob." in home
    assert "You are not logged in." in replay(login.app, before).get("/").text


def test_logout_deletes_the_session(login: ModuleType, data_dir: Path) -> None:
    """Logout removes the record at once: the old cookie value replayed later is an
    anonymous visitor. The goodbye message lives in a new session that is deleted once
    shown, leaving no record and no cookie."""
    client = login.app.test_client()
    log_in(client)
    sid = cookie_of(client)
    assert sid is not None
    response = client.post("/logout")
    assert response.status_code == 302
    new_sid = cookie_of(client)
    assert new_sid is not None and new_sid != sid  # the message's session
    assert len(record_files(data_dir)) == 1
    home = client.get("/")
    assert "You are logged out." in home.text and "You are not logged in." in home.text
    assert record_files(data_dir) == [] and cookie_of(client) is None
    stolen = replay(login.app, sid).get("/private")
    assert stolen.status_code == 302 and "/login" in stolen.headers["Location"]


def test_logout_is_post_only(login: ModuleType) -> None:
    """A link or an image on another site cannot log the user out (GET is refused)."""
    client = login.app.test_client()
    log_in(client)
    assert client.get("/logout").status_code == 405
    assert "Welcome back, alice." in client.get("/").text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\x"])
def test_login_never_redirects_off_site(login: ModuleType, target: str) -> None:
    """The ``next`` parameter only accepts local paths."""
    client = login.app.test_client()
    response = client.post(
        "/login", data={"username": "alice", "password": "wonderland", "next": target}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/private"


def test_login_page_escapes_user_input(login: ModuleType) -> None:
    """The ``next`` value is HTML-escaped in the form."""
    page = login.app.test_client().get('/login?next=/"><script>x</script>').text
    assert "<script>x</script>" not in page


# -- the cart example -----------------------------------------------------------------


def test_cart_browsing_stores_nothing(cart: ModuleType, data_dir: Path) -> None:
    """Viewing the catalogue and an empty cart sets no cookie and writes no file."""
    client = cart.app.test_client()
    for path in ("/", "/cart"):
        response = client.get(path)
        assert response.status_code == 200
        assert set_cookie_headers(response) == []
    assert "Your cart is empty." in client.get("/cart").text
    assert record_files(data_dir) == []


def test_cart_in_place_changes_are_saved(cart: ModuleType, data_dir: Path) -> None:
    """Items appended to and removed from ``session['cart']`` in place persist."""
    client = cart.app.test_client()
    for item in ("apple", "tea", "apple"):
        assert client.post(f"/add/{item}").status_code == 302
    page = client.get("/cart").text
    assert '<tr id="line-apple"><td>Apple</td><td class="qty">2</td>' in page
    assert '<tr id="line-tea"><td>Green tea</td><td class="qty">1</td>' in page
    assert '<span id="total">5.95</span>' in page
    assert "Cart (3)" in client.get("/").text

    client.post("/remove/apple")
    page = client.get("/cart").text
    assert '<td class="qty">1</td>' in page and '<span id="total">5.45</span>' in page
    sid = cookie_of(client)
    assert sid is not None
    assert "Cart (2)" in replay(cart.app, sid).get("/").text
    assert len(record_files(data_dir)) == 1


def test_cart_emptied_deletes_the_session(cart: ModuleType, data_dir: Path) -> None:
    """Emptying the cart removes its only key: the record is deleted, the cookie too."""
    client = cart.app.test_client()
    client.post("/add/bread")
    assert len(record_files(data_dir)) == 1
    response = client.post("/clear", follow_redirects=True)
    assert "Your cart is empty." in response.text
    assert record_files(data_dir) == [] and cookie_of(client) is None


def test_cart_unknown_product(cart: ModuleType, data_dir: Path) -> None:
    """Adding an unknown product is a 404 and stores nothing."""
    client = cart.app.test_client()
    assert client.post("/add/caviar").status_code == 404
    assert record_files(data_dir) == [] and cookie_of(client) is None


def test_cart_concurrent_adds_are_all_kept(cart: ModuleType) -> None:
    """Parallel requests of one session (double clicks, several tabs) lose no item."""
    first = cart.app.test_client()
    first.post("/add/apple")
    sid = cookie_of(first)
    assert sid is not None
    threads, adds = 6, 5

    def shopper() -> None:
        client = replay(cart.app, sid)
        for _ in range(adds):
            # Past SESSION_MAX_WAITERS a request is refused at once (503, Retry-After):
            # retried, as a client would; no refused add is half-done.
            while (status := client.post("/add/tea").status_code) == 503:
                time.sleep(0.01)
            assert status == 302

    workers = [threading.Thread(target=shopper) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    page = first.get("/cart").text
    assert f'<td class="qty">{threads * adds}</td>' in page
    assert f"Cart ({threads * adds + 1})" in first.get("/").text
