"""The PostgreSQL comparison's server (standard library only).

``server()``: a throwaway PostgreSQL cluster (``initdb`` in a temp dir, trust
authentication, ``fsync=off``: the data is thrown away) on a free 127.0.0.1 port, its
URL exported in ``BENCH_POSTGRES_URL`` while it runs, always stopped and removed.
``initdb`` refuses to run as root: then the cluster belongs to the ``postgres`` user
(``runuser``). The binaries are Debian's (``apt-get install postgresql``:
``/usr/lib/postgresql/*/bin``) or whatever ``PATH`` has.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

from impls import POSTGRES_URL_ENV
from load import HOST, free_port


def binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return all(binary(n) for n in ("initdb", "pg_ctl", "postgres"))


@contextlib.contextmanager
def server() -> Iterator[dict[str, Any]]:
    """Runs the cluster; yields its version, URL and settings."""
    initdb, pg_ctl, postgres = binary("initdb"), binary("pg_ctl"), binary("postgres")
    assert initdb and pg_ctl and postgres
    directory = tempfile.mkdtemp(prefix="bench-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(directory, "data")
    port = free_port()
    settings = (
        f"-p {port} -k {directory} -c listen_addresses={HOST} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )

    def run(*args: str) -> str:
        return subprocess.run(
            [*as_user, *args], capture_output=True, text=True, check=True, cwd=directory
        ).stdout

    run(
        initdb,
        "-D",
        data,
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
        "--no-instructions",
    )
    run(
        pg_ctl,
        "-D",
        data,
        "-l",
        os.path.join(directory, "log"),
        "-o",
        settings,
        "-w",
        "start",
    )
    previous = os.environ.get(POSTGRES_URL_ENV)
    try:
        url = f"postgresql://postgres@{HOST}:{port}/postgres?sslmode=disable"
        os.environ[POSTGRES_URL_ENV] = url
        version = run(postgres, "--version").strip()
        yield {"version": version, "url": url, "settings": settings}
    finally:
        if previous is None:
            os.environ.pop(POSTGRES_URL_ENV, None)
        else:
            os.environ[POSTGRES_URL_ENV] = previous
        with contextlib.suppress(subprocess.CalledProcessError):
            run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)
