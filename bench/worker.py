"""Runs inside one implementation's virtualenv; times requests with Flask's test client.

Two modes:

* ``worker.py serve IMPL DATA_DIR``: a JSON-lines loop. Each line on stdin is a command
  (``{"op": "micro", "n": 200}``, ...); each answer is one JSON line on stdout. The
  runner keeps one such process per implementation and interleaves them round by round.
* ``worker.py syscalls IMPL DATA_DIR SCENARIO[,SCENARIO...] N``: warms every route up,
  then runs each scenario N times between two marker syscalls and exits; the runner
  traces it with ``strace -f`` and counts the syscalls between the markers.

Times are per request, in nanoseconds, measured around ``client.get`` only. A scenario
with a *prepare* request (``login``: a logout before each login) runs it before each
measured request, outside the timing and outside the syscall markers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from flask import Flask
from flask.testing import FlaskClient

import redisbench
from apps import create_app
from impls import IMPLS, REDIS_URL_ENV

#: Payload sizes of the "payload" scenarios (bytes of random data next to the counter).
PAYLOADS = {"100B": 100, "10KB": 10_000, "1MB": 1_000_000}
#: The session-free route without cookie: every overhead is relative to it.
BASELINE = "free"
#: Path prefix of the marker syscalls (never exists).
MARKER = "/nonexistent-bench-marker"
#: Scenarios that run only when asked for by name (``run.py --variants``): a login
#: (each measured request sets the user's id on a session that has data but no user;
#: a logout before each, not measured), a read-write on a logged-in session, and issue
#: 17's 1 MB row (read the blob's length, increment a counter).
EXTRA_SCENARIOS = ("login", "rw_user", "blob_1MB")


class Scenario(NamedTuple):
    """One measured request, whether it moves a 1 MB session, and the request to run
    before each measured one (None: none)."""

    request: Callable[[], Any]
    big: bool = False
    prepare: Callable[[], Any] | None = None


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def summarise(samples: list[int]) -> dict[str, float]:
    return {
        "mean_ns": statistics.fmean(samples),
        "median_ns": statistics.median(samples),
        "p90_ns": percentile(samples, 0.9),
        "n": len(samples),
    }


def cookie_header(name: str, value: str) -> dict[str, str]:
    return {"Cookie": f"{name}={value}"}


def set_cookie_value(headers: Any, name: str) -> str | None:
    """The value a response sets for cookie ``name`` (None if it sets none)."""
    for line in headers.getlist("Set-Cookie"):
        key, _, rest = line.partition("=")
        if key.strip() == name:
            value: str = rest.split(";", 1)[0].strip('"')
            return value
    return None


class Bench:
    """One app, its clients and the sessions the scenarios use."""

    def __init__(self, impl: str, data_dir: str) -> None:
        self.impl = IMPLS[impl]
        self.data_dir = data_dir
        self.app: Flask = create_app(impl, data_dir)
        self.anonymous = self.app.test_client(use_cookies=False)
        self.empty_jar = self.app.test_client()
        self.clients: dict[str, FlaskClient] = {}
        self.stored_ids: list[str] = []

    # -- sessions ------------------------------------------------------------------

    def client_with_session(self, size: int) -> FlaskClient:
        """A cookie-jar client whose session holds a counter and ``size`` bytes."""
        key = f"s{size}"
        if key not in self.clients:
            client = self.app.test_client()
            self.check(client.get(f"/setup/{size}"))
            self.clients[key] = client
        return self.clients[key]

    def check_call(self, request: Callable[[], Any]) -> Any:
        return self.check(request())

    def check(self, response: Any) -> Any:
        if response.status_code != 200:
            raise RuntimeError(f"{self.impl.name}: HTTP {response.status_code}")
        return response

    # -- timing --------------------------------------------------------------------

    def time_requests(
        self,
        n: int,
        request: Callable[[], Any],
        prepare: Callable[[], Any] | None = None,
    ) -> list[int]:
        samples = []
        clock = time.perf_counter_ns
        for _ in range(n):
            if prepare is not None:
                self.check(prepare())
            start = clock()
            response = request()
            samples.append(clock() - start)
            if response.status_code != 200:
                raise RuntimeError(f"{self.impl.name}: HTTP {response.status_code}")
        return samples

    def logged_in_client(self) -> FlaskClient:
        """A cookie-jar client whose session holds a counter and a user's id."""
        if "user" not in self.clients:
            client = self.app.test_client()
            self.check(client.get("/setup/0"))
            self.check(client.get("/login"))
            self.clients["user"] = client
        return self.clients["user"]

    def scenarios(self, only: list[str] | None = None) -> dict[str, Scenario]:
        """Name -> the scenario.

        ``only``: just these scenarios (and the baseline); the sessions of the others
        are not even created. ``EXTRA_SCENARIOS`` run only when named in ``only``.
        """
        wanted = None if only is None else {BASELINE, *only}

        def keep(name: str) -> bool:
            return wanted is None or name in wanted

        def extra(name: str) -> bool:
            return wanted is not None and name in wanted

        table: dict[str, Scenario] = {
            BASELINE: Scenario(lambda: self.empty_jar.get("/free")),
        }
        if any(map(keep, ("free_cookie", "read_only", "read_write"))):
            small = self.client_with_session(0)
            table["free_cookie"] = Scenario(lambda: small.get("/free"))
            table["read_only"] = Scenario(lambda: small.get("/ro"))
            table["read_write"] = Scenario(lambda: small.get("/rw"))
        table["new_session"] = Scenario(lambda: self.anonymous.get("/rw"))
        if extra("login"):
            # Its own session (counter, no user): logged out before each login.
            guest = self.app.test_client()
            self.check(guest.get("/setup/0"))
            table["login"] = Scenario(
                lambda: guest.get("/login"), prepare=lambda: guest.get("/logout")
            )
        if extra("rw_user"):
            user = self.logged_in_client()
            table["rw_user"] = Scenario(lambda: user.get("/rw"))
        for label, size in PAYLOADS.items():
            rw, ro, blob = f"rw_{label}", f"ro_small_key_{label}", f"blob_{label}"
            wants_blob = extra(blob)
            if size > self.impl.max_payload or not (keep(rw) or keep(ro) or wants_blob):
                continue
            client = self.client_with_session(size)
            big = size >= 1_000_000
            table[rw] = Scenario(functools.partial(client.get, "/rw"), big)
            if big:
                table[ro] = Scenario(functools.partial(client.get, "/ro"), big)
            if wants_blob:
                table[blob] = Scenario(functools.partial(client.get, "/blob"), big)
        return {name: entry for name, entry in table.items() if keep(name)}

    def micro(self, n: int, only: list[str] | None = None) -> dict[str, Any]:
        """One round of the micro scenarios (all, or ``only`` these and the baseline),
        ``n`` requests each (fewer for 1 MB)."""
        results = {}
        for name, scenario in self.scenarios(only).items():
            count = max(10, n // 10) if scenario.big else n
            if scenario.prepare is not None:
                self.check(scenario.prepare())
            scenario.request()  # warm-up (imports, first-use paths)
            results[name] = summarise(
                self.time_requests(count, scenario.request, scenario.prepare)
            )
        return results

    def redis_cost(self, n: int, only: list[str] | None = None) -> dict[str, Any]:
        """Redis round trips and commands per request, per scenario (Redis impls)."""
        port = redisbench.port_of(os.environ[REDIS_URL_ENV])
        results = {}
        for name, scenario in self.scenarios(only).items():
            scenario.request()  # warm-up (script loading, first connection)
            checked = functools.partial(self.check_call, scenario.request)
            results[name] = redisbench.cost(port, n, checked)
        return results

    # -- read-only rewrite check ----------------------------------------------------

    def snapshot(self) -> dict[str, tuple[int, int, str]]:
        """Every file under the data dir: (size, mtime_ns, digest of the bytes)."""
        files = {}
        for path in Path(self.data_dir).rglob("*"):
            if path.is_file():
                info = path.stat()
                digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
                files[str(path)] = (info.st_size, info.st_mtime_ns, digest)
        return files

    def rewrite_check(self, n: int) -> dict[str, Any]:
        """Runs ``n`` read-only requests; reports files rewritten and cookies sent."""
        client = self.client_with_session(0)
        client.get("/ro")
        time.sleep(0.02)  # so that a rewrite shows in the mtime even on coarse clocks
        before = self.snapshot()
        set_cookies = 0
        for _ in range(n):
            response = self.check(client.get("/ro"))
            set_cookies += (
                set_cookie_value(response.headers, self.impl.cookie_name) is not None
            )
        after = self.snapshot()
        common = before.keys() & after.keys()
        return {
            "requests": n,
            "files": len(before),
            "bytes_changed": sum(before[p][2] != after[p][2] for p in common),
            "mtime_changed": sum(before[p][1] != after[p][1] for p in common),
            "files_created": len(after.keys() - before.keys()),
            "files_removed": len(before.keys() - after.keys()),
            "set_cookie_responses": set_cookies,
        }

    # -- store size -------------------------------------------------------------------

    def populate(self, total: int, budget_s: float) -> dict[str, Any]:
        """Creates sessions through the app until ``total`` exist (ids are kept).

        Gives up after ``budget_s`` seconds ("stalled": a store that evicts and prunes
        on every write cannot be grown in useful time).
        """
        started = time.perf_counter()
        deadline = started + budget_s
        created = 0
        while len(self.stored_ids) < total and time.perf_counter() < deadline:
            response = self.check(self.anonymous.get("/setup/0"))
            sid = set_cookie_value(response.headers, self.impl.cookie_name)
            if sid is None:
                raise RuntimeError(f"{self.impl.name}: no session cookie")
            self.stored_ids.append(sid)
            created += 1
        return {
            "created": created,
            "seconds": time.perf_counter() - started,
            "stored": len(self.stored_ids),
            "stalled": len(self.stored_ids) < total,
        }

    def write_ids(self, path: str) -> int:
        """Writes the populated session ids to ``path``, one per line (the cookies the
        ceiling run's ``wrk`` sends); returns how many."""
        Path(path).write_text("".join(f"{sid}\n" for sid in self.stored_ids))
        return len(self.stored_ids)

    def store_round(self, n: int) -> dict[str, Any]:
        """Baseline, existing-session read-write (random stored ids) and new session."""
        name = self.impl.cookie_name
        ids = random.sample(self.stored_ids, min(n, len(self.stored_ids)))
        picks = iter(ids * (n // len(ids) + 1))
        client = self.anonymous
        return {
            BASELINE: summarise(self.time_requests(n, lambda: client.get("/free"))),
            "read_write": summarise(
                self.time_requests(
                    n,
                    lambda: client.get("/rw", headers=cookie_header(name, next(picks))),
                )
            ),
            "new_session": summarise(self.time_requests(n, lambda: client.get("/rw"))),
        }

    def survivors(self, sample: int) -> dict[str, Any]:
        """How many of (a sample of) the stored sessions still hold their data."""
        ids = self.stored_ids
        checked = ids if len(ids) <= sample else random.sample(ids, sample)
        name = self.impl.cookie_name
        lost = 0
        for sid in checked:
            response = self.anonymous.get("/ro", headers=cookie_header(name, sid))
            lost += response.get_data(as_text=True) == "-1"
        return {"stored": len(ids), "checked": len(checked), "lost": lost}


def serve(bench: Bench) -> None:
    """The JSON-lines command loop."""
    ops: dict[str, Callable[..., Any]] = {
        "micro": bench.micro,
        "rewrite_check": bench.rewrite_check,
        "redis_cost": bench.redis_cost,
        "populate": bench.populate,
        "write_ids": bench.write_ids,
        "store_round": bench.store_round,
        "survivors": bench.survivors,
    }
    print(json.dumps({"ready": bench.impl.name, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "exit":
            break
        try:
            answer = {"ok": ops[op](**command)}
        except Exception as exc:  # reported to the runner, which decides
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


def marker(label: str) -> None:
    """A syscall the strace parser looks for: separates the phases of the trace."""
    with contextlib.suppress(OSError):
        os.stat(f"{MARKER}/{label}")


def syscalls(bench: Bench, scenarios: list[str], n: int) -> None:
    """Warms every scenario up once, then runs each of ``scenarios`` ``n`` times.

    Every scenario is set up and warmed up, unless an extra one is asked for: then
    only those asked for. A scenario with a prepare request gets its markers around
    each measured request (the parser adds the segments up), so the prepare requests
    are not counted.
    """
    extras = any(name in EXTRA_SCENARIOS for name in scenarios)
    table = bench.scenarios(scenarios if extras else None)
    for entry in table.values():
        if entry.prepare is not None:
            bench.check(entry.prepare())
        bench.check(entry.request())
    for name in scenarios:
        entry = table[name]
        if entry.prepare is None:
            marker(f"{name}/start")
            for _ in range(n):
                entry.request()
            marker(f"{name}/end")
            continue
        for _ in range(n):
            bench.check(entry.prepare())
            marker(f"{name}/start")
            entry.request()
            marker(f"{name}/end")


def main(argv: list[str]) -> None:
    mode, impl, data_dir = argv[:3]
    bench = Bench(impl, data_dir)
    if mode == "serve":
        serve(bench)
    elif mode == "syscalls":
        syscalls(bench, argv[3].split(","), int(argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
