"""Gunicorn on 127.0.0.1 under a bounded load from a small Python HTTP client.

The client opens one connection per request (gunicorn's sync workers close every
connection), sends a pre-built GET and reads to EOF. Every run is bounded both in time
and in request count, only targets the loopback address, and the server is always
stopped (terminate, then kill).

Lost updates are exact: every successful ``/rw`` adds 1 to a counter, so after the load
``lost = successful increments - (final counter - initial counter)``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from impls import Impl

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
#: Per-request socket timeout (s): a stuck request fails, it never hangs the run.
SOCKET_TIMEOUT = 15.0


@dataclass
class Reply:
    status: int
    body: str
    cookie: str | None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminates a server, then kills it if it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def get(port: int, path: str, cookie_name: str, cookie: str | None) -> Reply:
    """One GET over a fresh connection; returns status, body and any new cookie."""
    header = f"Cookie: {cookie_name}={cookie}\r\n" if cookie else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{header}"
        "Connection: close\r\n\r\n"
    ).encode()
    chunks = []
    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    return Reply(status, body.decode("latin-1"), _new_cookie(lines[1:], cookie_name))


def _new_cookie(header_lines: list[str], cookie_name: str) -> str | None:
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.lower() == "set-cookie":
            key, _, rest = value.strip().partition("=")
            if key == cookie_name:
                return rest.split(";", 1)[0].strip('"')
    return None


class Server(NamedTuple):
    """A running gunicorn: its port and its master's pid (the workers' parent)."""

    port: int
    pid: int


@contextlib.contextmanager
def gunicorn(
    python: Path,
    impl: Impl,
    workers: int,
    *,
    worker_class: str = "sync",
    threads: int = 1,
    data_dir: str | None = None,
) -> Iterator[Server]:
    """Runs gunicorn on ``data_dir`` (default: a fresh one, removed afterwards);
    yields its port and master pid."""
    own_dir = data_dir is None
    if data_dir is None:
        data_dir = tempfile.mkdtemp(prefix=f"bench-gunicorn-{impl.name}-")
    port = free_port()
    command = [
        str(python.parent / "gunicorn"),
        "--workers", str(workers),
        "--worker-class", worker_class,
        "--threads", str(threads),
        "--bind", f"{HOST}:{port}",
        "--backlog", "2048",
        "--log-level", "warning",
        "--chdir", str(BENCH),
        f'apps:create_app("{impl.name}", "{data_dir}")',
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, impl, server)
        yield Server(port, server.pid)
    finally:
        stop(server)
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def wait_ready(port: int, impl: Impl, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn for {impl.name} exited ({server.returncode})")
        with contextlib.suppress(OSError):
            if get(port, "/free", impl.cookie_name, None).status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn for {impl.name} did not start in 30 s")


@dataclass
class Tally:
    """What the client threads saw."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    increments: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def parallel(count: int, job: Any) -> None:
    threads = [threading.Thread(target=job, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def create_sessions(port: int, impl: Impl, count: int, threads: int) -> list[str]:
    """``count`` sessions made through the app (counter 0 each); returns the cookies."""
    cookies: list[str | None] = [None] * count

    def job(worker: int) -> None:
        for i in range(worker, count, threads):
            reply = get(port, "/setup/0", impl.cookie_name, None)
            cookies[i] = reply.cookie

    parallel(threads, job)
    if any(c is None for c in cookies):
        raise RuntimeError(f"{impl.name}: a session was not created")
    return [c for c in cookies if c is not None]


def counters(port: int, impl: Impl, cookies: list[str], threads: int) -> list[int]:
    values = [0] * len(cookies)

    def job(worker: int) -> None:
        for i in range(worker, len(cookies), threads):
            values[i] = int(get(port, "/ro", impl.cookie_name, cookies[i]).body)

    parallel(threads, job)
    return values


def drive(
    port: int,
    impl: Impl,
    cookies: list[str],
    threads: int,
    seconds: float,
    max_requests: int,
) -> tuple[Tally, float]:
    """Each thread cycles through its share of ``cookies`` sending ``/rw``.

    With one cookie every thread shares it. The cookie jar follows Set-Cookie (needed by
    the signed-cookie session, whose value changes on every write).
    """
    tally = Tally()
    jar = list(cookies)
    deadline = time.monotonic() + seconds
    budget = max_requests // threads

    def job(worker: int) -> None:
        mine = list(range(worker % len(jar), len(jar), threads)) or [0]
        latencies: list[float] = []
        errors = 0
        done: dict[int, int] = {}
        for sent in range(budget):
            if time.monotonic() >= deadline:
                break
            slot = mine[sent % len(mine)]
            start = time.perf_counter()
            try:
                reply = get(port, "/rw", impl.cookie_name, jar[slot])
            except OSError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            if reply.status != 200:
                errors += 1
                continue
            done[slot] = done.get(slot, 0) + 1
            if reply.cookie:
                jar[slot] = reply.cookie
        with tally.lock:
            tally.latencies.extend(latencies)
            tally.errors += errors
            for slot, n in done.items():
                tally.increments[slot] = tally.increments.get(slot, 0) + n

    started = time.monotonic()
    parallel(threads, job)
    elapsed = time.monotonic() - started
    cookies[:] = jar
    return tally, elapsed


def load_run(
    python: Path,
    impl: Impl,
    workers: int,
    sessions: int,
    seconds: float,
    max_requests: int,
) -> dict[str, Any]:
    """One gunicorn run: ``sessions`` distinct sessions (1 = one shared session)."""
    threads = 2 * workers
    with gunicorn(python, impl, workers) as (port, _):
        cookies = create_sessions(port, impl, sessions, threads)
        before = counters(port, impl, cookies, threads)
        cpu = time.process_time()
        tally, elapsed = drive(port, impl, cookies, threads, seconds, max_requests)
        cpu = time.process_time() - cpu
        after = counters(port, impl, cookies, threads)
    ok = sum(tally.increments.values())
    lost = sum(
        max(0, tally.increments.get(i, 0) - (after[i] - before[i]))
        for i in range(len(cookies))
    )
    latencies = sorted(tally.latencies) or [0.0]
    return {
        "workers": workers,
        "sessions": sessions,
        "client_threads": threads,
        "seconds": elapsed,
        "ok": ok,
        "errors": tally.errors,
        "req_per_s": ok / elapsed if elapsed else 0.0,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "lost_updates": lost,
        "client_cpu_s_per_s": cpu / elapsed if elapsed else 0.0,
    }
