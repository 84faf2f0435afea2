"""Helpers for the PostgreSQL tests: a real, throwaway PostgreSQL cluster the tests create
(``initdb``), start, stop, kill and restart themselves (``conftest.postgres_server`` is the
one shared by the run), and ``psql`` to look at what the backend stored.

The server binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, not on ``PATH``)
or whatever ``PATH`` has: when they are missing the PostgreSQL tests are skipped on a
developer machine, but fail under CI (``CI`` set), where ``.ci/run`` installs them.
``initdb`` refuses to run as root: then the cluster belongs to the ``postgres`` user
(``runuser``), in a temp dir of its own under the system temp dir (pytest's are 0700 root).
The server listens on a free port of 127.0.0.1 and on a Unix socket in that dir, trusts
every local connection, and skips fsync (the data is thrown away). It also offers TLS with
a certificate for 127.0.0.1 from a private CA (``ca_pem``; trustme), and ``other_ca_pem``
is a CA that did not sign it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import require_posix
from redis_server import free_port, in_ci


def pg_bin(name: str) -> str:
    """Path of PostgreSQL program ``name``; skips the test if missing, except under CI,
    and on Windows."""
    require_posix("PostgreSQL server (initdb, runuser, Unix sockets)")
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0,
    )
    path = found[-1] if found else shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"PostgreSQL's {name} is not installed (CI installs it with apt-get)")
        pytest.skip(f"PostgreSQL's {name} is not installed")
    return path


def digest(sid: str) -> str:
    """The row key of a session (the id itself is never stored)."""
    return hashlib.sha256(sid.encode()).hexdigest()


def table_for(name: str) -> str:
    """A table name of one test (valid identifier, short)."""
    return "t_" + hashlib.sha1(name.encode()).hexdigest()[:20]


class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1 owned by the tests; ``stop``/``kill`` then
    ``start`` bring it back on the same port with its data."""

    def __init__(self) -> None:
        self.initdb = pg_bin("initdb")
        self.pg_ctl = pg_bin("pg_ctl")
        self.psql_bin = pg_bin("psql")
        self.as_user: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="fbs-pg-"))
        if os.geteuid() == 0:
            import pwd  # POSIX only: imported here, so that collection works on Windows

            user = pwd.getpwnam("postgres")
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.workdir / "data"
        self.log = self.workdir / "server.log"
        self.port = free_port()
        self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync", "--no-instructions"])  # fmt: skip
        self.ca_pem, self.other_ca_pem = self._certificates()

    def _certificates(self) -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1 in the data dir (owned by the server's
        user, key 0600 as the server demands), and the PEM files of two CAs."""
        import trustme

        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        ca_pem, other = self.workdir / "ca.pem", self.workdir / "other-ca.pem"
        ca.cert_pem.write_to_path(str(ca_pem))
        trustme.CA().cert_pem.write_to_path(str(other))
        key, cert = self.data / "server.key", self.data / "server.crt"
        issued.private_key_pem.write_to_path(str(key))
        issued.cert_chain_pems[0].write_to_path(str(cert))
        os.chmod(key, 0o600)
        if self.as_user:
            import pwd

            user = pwd.getpwnam("postgres")
            for path in (key, cert):
                os.chown(path, user.pw_uid, user.pw_gid)
        return ca_pem, other

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            cwd=self.workdir,
        )

    def url(self, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=32MB -c ssl=on"
        )
        for _attempt in range(3):
            try:
                self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log),
                           "-o", options, "-w", "-t", "30", "start"])  # fmt: skip
                return self
            except subprocess.CalledProcessError:
                self.port = free_port()  # someone took the port between check and use
                options = options.replace(options.split()[1], str(self.port), 1)
                time.sleep(0.2)
        raise RuntimeError(f"postgres did not start; log:\n{self.log.read_text()}")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, the server shuts down cleanly;
        ``immediate``: it dies at once (crash recovery at the next start)."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        status = subprocess.run(
            [*self.as_user, self.pg_ctl, "-D", str(self.data), "status"],
            capture_output=True,
            cwd=self.workdir,
        )
        return status.returncode == 0

    def psql(self, sql: str, user: str = "postgres") -> str:
        """Runs ``sql`` (unaligned, tuples only) and returns its output, stripped."""
        out = subprocess.run(
            [self.psql_bin, "-h", "127.0.0.1", "-p", str(self.port), "-U", user,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return out.stdout.strip()

    def raw(self, table: str, sid: str) -> bytes | None:
        """The stored record of ``sid`` in ``table``, or None."""
        exists = self.psql(f"SELECT to_regclass('\"{table}\"') IS NOT NULL")
        if exists != "t":
            return None
        out = self.psql(f"SELECT encode(record, 'hex') FROM \"{table}\" WHERE id = '{digest(sid)}'")
        return None if out == "" else bytes.fromhex(out)

    def overwrite(self, table: str, sid: str, value: bytes) -> None:
        self.psql(
            f"UPDATE \"{table}\" SET record = decode('{value.hex()}', 'hex') "
            f"WHERE id = '{digest(sid)}'"
        )

    def connections(self, application: str = "flask-beaker-session") -> int:
        """Client connections of ``application`` open now."""
        return int(
            self.psql(
                f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}'"
            )
        )

    def close(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A started ``PostgresServer`` (a fresh cluster), stopped and removed on exit."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
