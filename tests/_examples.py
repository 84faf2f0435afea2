"""Loads the scripts in ``examples/`` as modules (they are not a package)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str, data_dir: Path, secret_key: str | None = None) -> ModuleType:
    """Imports ``examples/<name>.py`` with ``SESSION_DATA_DIR`` (and ``SECRET_KEY``) set
    in the environment during the import, as a user would run it.

    The module is registered in ``sys.modules`` under ``example_<name>`` so that objects
    of its classes can be pickled into the session.
    """
    module_name = f"example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = {key: os.environ.get(key) for key in ("SESSION_DATA_DIR", "SECRET_KEY")}
    os.environ["SESSION_DATA_DIR"] = str(data_dir)
    if secret_key is not None:
        os.environ["SECRET_KEY"] = secret_key
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return module
