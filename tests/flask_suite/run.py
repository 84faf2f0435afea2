"""Runs Flask's own session tests, unchanged, with this package as every app's session.

``make test-flask``. Downloads the sdist of the Flask installed here, unpacks it into a
temp dir (Flask's code is never committed), installs its test dependencies
(``[dependency-groups] tests`` of its ``pyproject.toml``) and runs::

    pytest -p fbs_flask_plugin tests/test_basic.py tests/test_testing.py \
        tests/test_reqctx.py -k "session or flash"

from there. The plugin (``fbs_flask_plugin.py``) installs this package on every app and
marks the tests that differ on purpose (docs/compatibility.md). Extra arguments are
passed to pytest.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEST_FILES = ["tests/test_basic.py", "tests/test_testing.py", "tests/test_reqctx.py"]
SELECTION = "session or flash"


def test_dependencies(pyproject: Path) -> list[str]:
    """The ``tests`` dependency group of Flask's pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads(pyproject.read_text())
    group = data.get("dependency-groups", {}).get("tests", [])
    return [d for d in group if isinstance(d, str)]


def main(argv: list[str]) -> int:
    started = time.monotonic()
    version = importlib.metadata.version("flask")
    with tempfile.TemporaryDirectory(prefix="flask-suite-") as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"flask=={version}",
                "-d",
                tmp,
            ],
            check=True,
        )
        (archive,) = Path(tmp).glob("flask-*.tar.gz")
        with tarfile.open(archive) as tar:
            if sys.version_info >= (3, 12):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)  # the PyPI sdist of the installed Flask
        source = Path(tmp) / f"flask-{version}"
        deps = test_dependencies(source / "pyproject.toml")
        if deps:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *deps], check=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        print(f"Flask {version}'s own tests ({', '.join(TEST_FILES)}, -k {SELECTION!r})")
        rc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "fbs_flask_plugin",
                "-p",
                "no:cacheprovider",
                "-ra",
                *TEST_FILES,
                "-k",
                SELECTION,
                *argv,
            ],
            cwd=source,
            env=env,
        ).returncode
    print(f"test-flask: {time.monotonic() - started:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
