"""One cached virtualenv per implementation, under ``bench/.venvs/`` (the Redis
variants run in the venv of their file-store sibling, see ``Impl.venv``).

A venv is rebuilt only when its stamp changes: the stamp holds the requirements and, for
this package, a digest of the sources that go into the wheel (``src/``, ``python/``,
``Cargo.toml``, ``Cargo.lock``, ``pyproject.toml``), so the release build runs only when
the sources changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from impls import COMMON_REQUIREMENTS, IMPLS, Impl

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"
#: The development venv that ``make test`` creates: Flask and Werkzeug are pinned to its
#: versions when it exists (else the newest releases are installed).
DEV_VENV = REPO / ".venv"
#: Where ``--baseline REF`` exports the sources of REF (``git archive``).
BASELINES = BENCH / ".baselines"
#: Environment variable through which ``run.py --baseline REF`` names the commit.
BASELINE_ENV = "BENCH_BASELINE_REF"
SOURCE_PATHS = ("src", "python", "Cargo.toml", "Cargo.lock", "pyproject.toml")
SKIPPED_SUFFIXES = (".so", ".pyc", ".pyd")


def log(message: str) -> None:
    """Progress on stderr (stdout carries the results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def source_digest() -> str:
    """Digest of every source file that goes into this package's wheel."""
    digest = hashlib.sha256()
    for name in SOURCE_PATHS:
        root = REPO / name
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if not path.is_file() or path.suffix in SKIPPED_SUFFIXES:
                continue
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(REPO)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def pinned_flask() -> list[str]:
    """Flask and Werkzeug pinned to the versions of the development venv."""
    pins = []
    for dist in ("flask", "werkzeug"):
        version = _dev_venv_version(dist)
        pins.append(f"{dist}=={version}" if version else dist)
    return pins


def _dev_venv_version(dist: str) -> str | None:
    pip = DEV_VENV / "bin" / "pip"
    if not pip.exists():
        return None
    out = subprocess.run(
        [str(pip), "show", dist], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def baseline_commit() -> str:
    """The full commit id of ``--baseline REF`` (``BENCH_BASELINE_REF``)."""
    ref = os.environ.get(BASELINE_ENV)
    if not ref:
        raise SystemExit(
            f"the baseline implementation needs {BASELINE_ENV} (run.py --baseline)"
        )
    out = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"--baseline {ref}: not a commit of this repository")
    return out.stdout.strip()


def baseline_tree() -> Path:
    """The sources of the baseline commit, exported once under ``bench/.baselines/``."""
    commit = baseline_commit()
    root = BASELINES / commit
    if not (root / "pyproject.toml").exists():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def requirements(impl: Impl) -> list[str]:
    """What ``pip install`` gets for ``impl`` (ours adds the working tree, the baseline
    the exported tree of its commit)."""
    reqs = [*pinned_flask(), *COMMON_REQUIREMENTS, *impl.requirements]
    if impl.name == "ours":
        reqs.append(str(REPO))
    elif impl.name == "baseline":
        reqs.append(str(baseline_tree()))
    return reqs


def stamp_for(impl: Impl) -> dict[str, object]:
    stamp: dict[str, object] = {
        "requirements": requirements(impl),
        "python": sys.version,
    }
    if impl.name == "ours":
        stamp["sources"] = source_digest()
    elif impl.name == "baseline":
        stamp["commit"] = baseline_commit()
    return stamp


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure_venv(impl: Impl) -> Path:
    """Creates (or reuses) the venv of ``impl``; returns its interpreter."""
    root = VENVS / impl.name
    stamp_file = root / "bench-stamp.json"
    stamp = stamp_for(impl)
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return venv_python(impl.name)
    log(f"building venv {impl.name} (requirements or sources changed)")
    started = time.monotonic()
    if root.exists():
        shutil.rmtree(root)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(venv_python(impl.name)), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *requirements(impl)], check=True, cwd=BENCH)
    stamp_file.write_text(json.dumps(stamp, indent=1))
    log(f"venv {impl.name} ready in {time.monotonic() - started:.0f} s")
    return venv_python(impl.name)


def ensure_all(names: list[str]) -> dict[str, Path]:
    """The interpreter of each implementation (several may share one venv)."""
    built: dict[str, Path] = {}
    for venv in dict.fromkeys(IMPLS[name].venv_name for name in names):
        built[venv] = ensure_venv(IMPLS[venv])
    return {name: built[IMPLS[name].venv_name] for name in names}


def freeze(python: Path) -> list[str]:
    """Installed distributions of a venv (recorded in the results)."""
    out = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [line for line in out.splitlines() if line and not line.startswith("pip==")]


if __name__ == "__main__":
    ensure_all(sys.argv[1:] or list(IMPLS))
