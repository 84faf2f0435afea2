"""Example: a shopping cart kept in the server-side session.

Run it with ``flask --app examples/cart_app.py run`` and open http://127.0.0.1:5000/.

What it shows:

* In-place changes are saved: ``session["cart"].append(item)`` and
  ``session["cart"].remove(item)`` need no ``session.modified = True``, because the
  extension compares the pickled data with what it loaded.
* Concurrent requests of one session (two tabs, double clicks) do not lose items: each
  request holds its session from first use to the response.
* Only visitors who put something in the cart get a stored session; browsing the
  catalogue stores nothing and sets no cookie. An emptied cart deletes the session.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template_string, session, url_for
from flask_beaker_session import session as beaker_session
from werkzeug.wrappers import Response

HERE = Path(__file__).parent

#: The catalogue: product id -> (name, price in cents).
PRODUCTS: dict[str, tuple[str, int]] = {
    "apple": ("Apple", 50),
    "bread": ("Bread", 320),
    "tea": ("Green tea", 495),
}

CATALOGUE = """<!doctype html>
<title>Shop</title>
<h1>Shop</h1>
<p><a id="cart-link" href="{{ url_for('show_cart') }}">Cart ({{ count }})</a></p>
<ul>
{% for pid, (name, price) in products.items() %}
  <li>{{ name }}: {{ '%.2f' % (price / 100) }}
    <form method="post" action="{{ url_for('add', product_id=pid) }}"
          style="display:inline"><button id="add-{{ pid }}">Add</button></form></li>
{% endfor %}
</ul>
"""

CART = """<!doctype html>
<title>Cart</title>
<h1>Cart</h1>
{% if lines %}
<table id="cart">
{% for pid, name, quantity, subtotal in lines %}
  <tr id="line-{{ pid }}"><td>{{ name }}</td><td class="qty">{{ quantity }}</td>
    <td>{{ '%.2f' % (subtotal / 100) }}</td>
    <td><form method="post" action="{{ url_for('remove', product_id=pid) }}">
      <button id="remove-{{ pid }}">Remove one</button></form></td></tr>
{% endfor %}
</table>
<p>Total: <span id="total">{{ '%.2f' % (total / 100) }}</span></p>
<form method="post" action="{{ url_for('clear') }}"><button id="clear">Empty cart</button></form>
{% else %}
<p id="empty">Your cart is empty.</p>
{% endif %}
<p><a href="{{ url_for('index') }}">Continue shopping</a></p>
"""


def default_config() -> dict[str, Any]:
    """The example's settings; the environment can override the data dir and the key."""
    return {
        "SESSION_EXPIRES": False,  # persistent cookie: the cart survives a browser restart
        "SESSION_TIMEOUT": 7 * 24 * 3600,  # kept for a week without visits
        "SESSION_DATA_DIR": os.environ.get("SESSION_DATA_DIR", str(HERE / ".sessions-cart")),
        "SECRET_KEY": os.environ.get("SECRET_KEY", "dev only: change me in production"),
    }


def cart_lines(cart: list[str]) -> list[tuple[str, str, int, int]]:
    """``(product id, name, quantity, subtotal in cents)`` per product, catalogue order."""
    counts = Counter(cart)
    return [
        (pid, name, counts[pid], counts[pid] * price)
        for pid, (name, price) in PRODUCTS.items()
        if counts[pid]
    ]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The cart example; ``config`` overrides :func:`default_config`."""
    app = Flask(__name__)
    app.config.update(default_config())
    app.config.update(config or {})
    beaker_session.init_app(app)

    @app.route("/")
    def index() -> str:
        # Reading does not create a session: a visitor with an empty cart stores nothing.
        count = len(session.get("cart", []))
        return render_template_string(CATALOGUE, products=PRODUCTS, count=count)

    @app.route("/add/<product_id>", methods=["POST"])
    def add(product_id: str) -> Response:
        if product_id not in PRODUCTS:
            abort(404)
        if "cart" not in session:
            session["cart"] = []
        session["cart"].append(product_id)  # in place: saved without session.modified
        return redirect(url_for("show_cart"))

    @app.route("/remove/<product_id>", methods=["POST"])
    def remove(product_id: str) -> Response:
        cart = session.get("cart", [])
        if product_id in cart:
            cart.remove(product_id)  # in place, again
        return redirect(url_for("show_cart"))

    @app.route("/clear", methods=["POST"])
    def clear() -> Response:
        # The cart was the only key: the session is now empty, so it is deleted
        # (record removed, cookie expired).
        session.pop("cart", None)
        return redirect(url_for("show_cart"))

    @app.route("/cart")
    def show_cart() -> str:
        lines = cart_lines(session.get("cart", []))
        total = sum(line[3] for line in lines)
        return render_template_string(CART, lines=lines, total=total)

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
