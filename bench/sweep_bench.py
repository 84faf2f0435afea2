"""The sweeper against ``find DIR -type f -mmin +N -delete`` on the same tree.

The issue asks: within 2x of find at 1M sessions (10 % expired), linear cost.

A tree of N record files is laid out as the file store does (``fbs1/<shard>/<64 hex>``).
Every record is a copy of one of two real records made by the Rust store: a live one
(saved now, fresh mtime) and an expired one (created and saved 2 h ago, mtime set back
2 h with ``os.utime``); every tenth record is expired. The sweeper reads no tag, only
the header, so copies are swept exactly like records written one by one.

Each round times, in rotating order, on the same tree restored to the identical state
before every run (the removed 10 % are re-created under the same names):

* ``find``  - ``find DIR -type f -mmin +30 -delete`` (one thread, as cron would run it);
* ``ours1`` - ``Store.walk(now, 'sweep', threads=1)`` with a 30 min idle timeout;
* ``ours``  - the same with the default thread count (the CPU count, as the CLI).

Every run is checked: exactly the expired records are gone. Before every run the tree
is written back (``sync``) and its metadata is in the page cache, alike for all three.
Medians over the rounds are reported, with the ratio ours/find and the time per stored
session at each size (linearity).

Usage::

    python bench/sweep_bench.py              # 100k and 1M records, 3 rounds
    python bench/sweep_bench.py --quick      # 100k only, 3 rounds
    python bench/sweep_bench.py --n 300000 --rounds 5
    python bench/sweep_bench.py --core here  # this interpreter's build (debug in dev)

By default the Rust core is a release build made for this script (cached under the
work dir, keyed by a digest of the sources): ``maturin develop`` makes debug builds.
Trees live under ``--work`` (default: the system temp dir) and are removed at the end.
One record takes one 4 KiB block and one inode: 1M records need ~4.2 GB and 1M inodes;
the script checks ``statvfs`` first and stops if they do not fit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
SOURCE_PATHS = ("src", "python", "Cargo.toml", "Cargo.lock", "pyproject.toml")
#: Idle timeout of the sweep and ``-mmin`` of find (minutes).
TIMEOUT_MIN = 30
#: Age of the expired records (seconds): well past the timeout for both tools.
EXPIRED_AGE = 7200.0
EXPIRED_EVERY = 10
METHODS = ("find", "ours1", "ours")
CHILD_ENV = "FBS_SWEEP_BENCH_CHILD"


def log(message: str) -> None:
    print(
        f"[sweep-bench {time.strftime('%H:%M:%S')}] {message}",
        file=sys.stderr,
        flush=True,
    )


# -- a release build of the core ----------------------------------------------------


def source_digest() -> str:
    digest = hashlib.sha256()
    for name in SOURCE_PATHS:
        root = REPO / name
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if (
                path.is_file()
                and path.suffix not in (".so", ".pyc")
                and ("__pycache__" not in path.parts)
            ):
                digest.update(str(path.relative_to(REPO)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def release_site(work: Path) -> Path:
    """A directory with the package and a release-built ``_core`` (built if needed)."""
    site = work / f"fbs-release-{source_digest()}"
    if (site / "flask_beaker_session").is_dir():
        return site
    log("building the core in release mode (once per source change; a few minutes)")
    wheels = work / "fbs-release-wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    env = {**os.environ, "CARGO_TARGET_DIR": str(work / "fbs-release-target")}
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "-w",
        str(wheels),
    ]
    try:
        import maturin  # noqa: F401  (present in the dev venv: build without isolation)

        cmd.append("--no-build-isolation")
    except ImportError:
        pass
    subprocess.run([*cmd, str(REPO)], check=True, env=env)
    (wheel,) = wheels.glob("*.whl")
    tmp = site.with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
    tmp.rename(site)
    keep = (site.name, wheels.name, "fbs-release-target")
    for stale in work.glob("fbs-release-*"):  # builds of older sources
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale, ignore_errors=True)
    return site


# -- the tree -------------------------------------------------------------------------


#: Hex characters of a record's shard directory name (read from the core's own layout).
SHARD_CHARS = 2


def _store(core: Any, data_dir: Path) -> Any:
    """The file store the app would build: keyed records, a 30 min idle timeout."""
    return core.Store(
        core.StoreConfig(
            backend=core.FileBackend(data_dir=data_dir),
            keys=[b"bench-key"],
            idle_timeout=TIMEOUT_MIN * 60.0,
        )
    )


def templates(scratch: Path) -> tuple[bytes, bytes]:
    """Bytes of a live and of an expired record, written by the Rust store (and the
    store's shard layout, taken from where it put them)."""
    global SHARD_CHARS
    from flask_beaker_session import _core

    store = _store(_core, scratch)
    now = time.time()
    payload = pickle.dumps({"user_id": 42, "csrf": "x" * 32, "cart": [1, 2, 3]})
    out = []
    for when in (now, now - EXPIRED_AGE):
        sid = store.new_id()
        store.create(sid, payload, when, when)
        digest = hashlib.sha256(sid.encode()).hexdigest()
        (path,) = (scratch / "fbs1").glob(f"*/{digest}")
        SHARD_CHARS = len(path.parent.name)
        assert digest.startswith(path.parent.name)
        out.append(path.read_bytes())
    return out[0], out[1]


def name(i: int) -> str:
    return hashlib.sha256(b"bench-session-%d" % i).hexdigest()


def is_expired(i: int) -> bool:
    return i % EXPIRED_EVERY == 0


def write_records(
    root: Path, indices: range | list[int], live: bytes, old: bytes
) -> None:
    """Writes the records of ``indices`` (4 threads: system calls release the GIL)."""
    chunks = [indices[k::4] for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        for _ in pool.map(lambda chunk: _write(root, chunk, live, old), chunks):
            pass


def _write(root: Path, indices: range | list[int], live: bytes, old: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    then = time.time() - EXPIRED_AGE
    records = root / "fbs1"
    for i in indices:
        digest = name(i)
        fd = os.open(records / digest[:SHARD_CHARS] / digest, flags, 0o600)
        try:
            if is_expired(i):
                os.write(fd, old)
                os.utime(fd, (then, then))
            else:
                os.write(fd, live)
        finally:
            os.close(fd)


def build_tree(root: Path, n: int, live: bytes, old: bytes) -> None:
    records = root / "fbs1"
    for shard in range(16**SHARD_CHARS):
        shard_dir = f"{shard:0{SHARD_CHARS}x}"
        (records / shard_dir).mkdir(parents=True, mode=0o700, exist_ok=True)
    write_records(root, range(n), live, old)


def count_files(root: Path) -> int:
    total = 0
    for shard in os.scandir(root / "fbs1"):
        with os.scandir(shard.path) as entries:
            total += sum(1 for _ in entries)
    return total


def restore(root: Path, n: int, live: bytes, old: bytes) -> None:
    """Re-creates the expired records a run removed (and checks nothing else went)."""
    expired = [i for i in range(0, n, EXPIRED_EVERY)]
    left = count_files(root)
    if left == n:
        return
    if left != n - len(expired):
        raise SystemExit(
            f"tree has {left} files, expected {n - len(expired)} after a sweep"
        )
    write_records(root, expired, live, old)


# -- the runs -------------------------------------------------------------------------


def run_find(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "find",
            str(root / "fbs1"),
            "-type",
            "f",
            "-mmin",
            f"+{TIMEOUT_MIN}",
            "-delete",
        ],
        check=True,
    )
    return time.perf_counter() - started


def run_ours(root: Path, threads: int) -> float:
    from flask_beaker_session import _core

    store = _store(_core, root)
    started = time.perf_counter()
    report = store.walk(time.time(), _core.WalkMode.Sweep, threads)
    elapsed = time.perf_counter() - started
    if report.errors or report.removed != report.expired:
        raise SystemExit(f"unexpected sweep report: {report}")
    return elapsed


def measure(
    root: Path, n: int, rounds: int, live: bytes, old: bytes
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    threads = os.cpu_count() or 2
    expected_left = n - len(range(0, n, EXPIRED_EVERY))
    for r in range(rounds):
        order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
        for method in order:
            restore(root, n, live, old)
            # Written back, so removals pay for real blocks (as on a live server).
            os.sync()
            if method == "find":
                elapsed = run_find(root)
            else:
                elapsed = run_ours(root, 1 if method == "ours1" else threads)
            left = count_files(root)
            if left != expected_left:
                raise SystemExit(
                    f"{method} left {left} files, expected {expected_left}"
                )
            times[method].append(elapsed)
            log(f"n={n:,} round {r + 1}/{rounds} {method}: {elapsed:.3f} s")
    return times


def check_space(work: Path, sizes: list[int]) -> None:
    st = os.statvfs(work)
    need_inodes = max(sizes) + 4096 + 1000
    need_bytes = max(sizes) * 4096 * 1.1
    if st.f_favail and st.f_favail < need_inodes:
        raise SystemExit(
            f"{work}: {st.f_favail:,} free inodes, {need_inodes:,} needed; "
            "use a smaller --n"
        )
    if st.f_bavail * st.f_frsize < need_bytes:
        raise SystemExit(f"{work}: not enough free space for {max(sizes):,} records")


def summarise(n: int, times: dict[str, list[float]]) -> dict[str, Any]:
    med = {m: statistics.median(v) for m, v in times.items()}
    return {
        "n": n,
        "expired": len(range(0, n, EXPIRED_EVERY)),
        "median_s": med,
        "runs_s": times,
        "ratio_ours_find": med["ours"] / med["find"],
        "ratio_ours1_find": med["ours1"] / med["find"],
        "ns_per_session": {m: med[m] / n * 1e9 for m in METHODS},
    }


def table(rows: list[dict[str, Any]], threads: int) -> str:
    lines = [
        f"| sessions stored (10 % expired) | find -mmin -delete | ours, 1 thread | "
        f"ours, {threads} threads | ours/find | ours 1 thread/find | ns/session "
        "(find / ours1 / ours) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        med, ns = row["median_s"], row["ns_per_session"]
        lines.append(
            f"| {row['n']:,} | {med['find']:.3f} s | {med['ours1']:.3f} s | "
            f"{med['ours']:.3f} s | {row['ratio_ours_find']:.2f} | "
            f"{row['ratio_ours1_find']:.2f} | "
            f"{ns['find']:.0f} / {ns['ours1']:.0f} / {ns['ours']:.0f} |"
        )
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        growth = {
            m: large["ns_per_session"][m] / small["ns_per_session"][m]
            for m in ("find", "ours")
        }
        lines.append("")
        lines.append(
            f"Linearity: time per stored session at {large['n']:,} / at "
            f"{small['n']:,} = {growth['ours']:.2f} for ours, {growth['find']:.2f} "
            "for find (1.00 = linear)."
        )
    return "\n".join(lines)


def child(args: argparse.Namespace) -> None:
    from flask_beaker_session import _core

    load_start = os.getloadavg()
    sizes = [args.n] if args.n else ([100_000] if args.quick else [100_000, 1_000_000])
    work = Path(tempfile.mkdtemp(prefix="fbs-sweep-", dir=args.work))
    try:
        check_space(work, sizes)
        live, old = templates(work / "templates")
        rows = []
        for n in sizes:
            root = work / f"tree-{n}"
            log(f"building {n:,} records under {root}")
            started = time.perf_counter()
            build_tree(root, n, live, old)
            log(f"built in {time.perf_counter() - started:.0f} s")
            rows.append(summarise(n, measure(root, n, args.rounds, live, old)))
            shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    threads = os.cpu_count() or 2
    markdown = table(rows, threads)
    print(markdown)
    result = {
        "bench": "sweep",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": threads,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "find": subprocess.run(
                ["find", "--version"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[:1],
            "core": _core.__file__,
            "filesystem_dir": str(args.work or tempfile.gettempdir()),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "settings": {
            "timeout_min": TIMEOUT_MIN,
            "expired_every": EXPIRED_EVERY,
            "expired_age_s": EXPIRED_AGE,
            "rounds": args.rounds,
            "record_bytes": len(live),
        },
        "rows": rows,
        "markdown": markdown,
    }
    RESULTS.mkdir(exist_ok=True)
    label = "sweep-quick" if args.quick else "sweep"
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}.json"
    out.write_text(json.dumps(result, indent=1))
    log(f"wrote {out.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, help="one tree of this many records")
    parser.add_argument("--quick", action="store_true", help="100k records only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", help="where the trees are built (default: temp dir)")
    parser.add_argument(
        "--core",
        choices=("release", "here"),
        default="release",
        help="'release': build the core in release mode for this run (default); "
        "'here': use the package this interpreter imports",
    )
    args = parser.parse_args()
    if args.core == "here" or os.environ.get(CHILD_ENV):
        child(args)
        return
    site = release_site(Path(args.work or tempfile.gettempdir()))
    env = {
        **os.environ,
        CHILD_ENV: "1",
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    raise SystemExit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)


if __name__ == "__main__":
    main()
