"""The notebooks in git are exactly what notebooks/build_notebooks.py writes: no outputs, no stale cells.
(They are executed by `pytest --nbmake notebooks/` in CI.)"""

from __future__ import annotations

import importlib.util

from nanobanana.config import REPO_ROOT


def test_notebooks_are_output_free_and_match_their_generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", REPO_ROOT / "notebooks/build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python notebooks/build_notebooks.py"
