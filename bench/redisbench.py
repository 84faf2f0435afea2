"""The Redis comparison's server and a minimal client (standard library only).

* ``server()``: one ``redis-server`` on a free 127.0.0.1 port with no persistence
  (``--save '' --appendonly no``), its URL exported in ``BENCH_REDIS_URL`` while it
  runs, always stopped (terminate, then kill) and its temporary directory removed.
* ``command()``: one inline command over a fresh connection (PING, INFO, DBSIZE).
* ``counters()``: what the server has done so far (commands by name and read events,
  i.e. client round trips), so that a worker can count what its requests cost.

Imported by ``run.py`` (system Python) and by ``worker.py`` (inside the venvs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from impls import REDIS_URL_ENV
from load import HOST, free_port, stop

#: The server binary (``apt-get install redis-server``).
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


@contextlib.contextmanager
def server() -> Iterator[dict[str, Any]]:
    """Runs the server; yields its version, URL and command line."""
    port = free_port()
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    command = [
        REDIS_SERVER,
        "--bind", HOST,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", directory,
        "--daemonize", "no",
        "--loglevel", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    previous = os.environ.get(REDIS_URL_ENV)
    try:
        version = wait_ready(port, process)
        url = f"redis://{HOST}:{port}/0"
        os.environ[REDIS_URL_ENV] = url
        yield {"version": version, "url": url, "pid": process.pid, "command": command}
    finally:
        if previous is None:
            os.environ.pop(REDIS_URL_ENV, None)
        else:
            os.environ[REDIS_URL_ENV] = previous
        stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def port_of(url: str) -> int:
    return int(urlsplit(url).port or 6379)


def command(port: int, line: str) -> str:
    """One inline command over a fresh connection; its reply (simple string, integer
    or bulk string; an error comes back as ``-ERR ...``)."""
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(line.encode() + b"\r\n")
        reply = b""
        while b"\r\n" not in reply and (chunk := sock.recv(65536)):
            reply += chunk
        head, _, body = reply.partition(b"\r\n")
        if not head.startswith(b"$"):
            return head.decode().lstrip("+:")
        size = int(head[1:])
        while len(body) < size and (chunk := sock.recv(65536)):
            body += chunk
        return body[:size].decode()


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> str:
    """Waits for PONG; returns the server's version."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited ({process.returncode})")
        with contextlib.suppress(OSError):
            if command(port, "PING") == "PONG":
                for line in command(port, "INFO server").splitlines():
                    if line.startswith("redis_version:"):
                        return line.split(":", 1)[1].strip()
                return "?"
        time.sleep(0.05)
    raise RuntimeError("redis-server did not answer PING in 10 s")


def counters(port: int) -> dict[str, int]:
    """Commands executed so far, by name (``cmd:get``, ...; commands run by Lua scripts
    included), and ``reads``: read events on client connections (one per round trip,
    a pipeline being one; our own INFO connections add a constant, see ``cost``)."""
    found: dict[str, int] = {}
    for line in command(port, "INFO commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_") :].partition(":")
            stats = dict(f.split("=", 1) for f in fields.split(","))
            found[f"cmd:{name}"] = int(stats["calls"])
    for line in command(port, "INFO stats").splitlines():
        if line.startswith("total_reads_processed:"):
            found["reads"] = int(line.split(":", 1)[1])
    return found


def cost(port: int, n: int, run: Any) -> dict[str, Any]:
    """Redis work per call of ``run`` (called ``n`` times): round trips, commands and
    commands by name. The counters' own connections are measured and subtracted."""
    empty = _diff(counters(port), counters(port))
    before = counters(port)
    for _ in range(n):
        run()
    delta = _diff(before, counters(port))
    for key, value in empty.items():
        delta[key] = delta.get(key, 0) - value
    by_name = {
        key[4:]: value / n
        for key, value in sorted(delta.items())
        if key.startswith("cmd:") and value
    }
    return {
        "round_trips": delta.get("reads", 0) / n,
        "commands": sum(by_name.values()),
        "by_name": by_name,
        "n": n,
    }


def _diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
