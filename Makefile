# The one entry point. `make demo` and `make test` work on a fresh machine with Python 3.9+
# and Rust: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: help venv demo test test-rust test-py test-oldest test-flask typecheck lint fmt clean bench bench-full
.PHONY: test-windows check-macos

help:
	@echo "make demo   - install and run the demo app on http://127.0.0.1:$(PORT)/"
	@echo "make test   - install test dependencies, run the Rust and Python test suites"
	@echo "make lint   - cargo fmt --check, clippy -D warnings, ruff"
	@echo "make typecheck   - mypy --strict on the package and a usage file, stubtest on _core"
	@echo "make test-oldest - the Python suite on the oldest Flask/Werkzeug we support"
	@echo "make test-flask  - Flask's own session tests (from its sdist) with this package as the session"
	@echo "make test-windows - the Rust core's tests cross-compiled for Windows, run under Wine"
	@echo "make check-macos  - clippy for the Apple targets (zig as the C cross compiler)"
	@echo "make fmt    - format Rust and Python sources"
	@echo "make bench  - quick benchmark against the original, Flask-Session and Flask's cookie (< 5 min)"
	@echo "make bench-full   - the full benchmark (bench/README.md; ~25 min)"
	@echo "   BASELINE=<git ref> adds this package at that commit to either run (before/after)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python

demo: venv
	$(BIN)/pip install --quiet .
	cd examples && ../$(BIN)/python app.py

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
	rm -rf $(VENV) $(OLD_VENV) target
