"""Test support stays out of the runtime: no module the application runs imports from ``tests``.

The runtime is every top-level folder of the repository that holds Python code (``ctspine``,
``viewer``, ``inference``, ...), plus the top-level scripts such as ``manage.py``; ``tests/`` and
``bench/`` are not runtime (benchmark scripts may use ``tests/support``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

NOT_RUNTIME = {"tests", "bench"}


def runtime_modules(root: Path) -> list[Path]:
    """The ``.py`` files of every top-level folder under ``root`` but the hidden ones (the
    virtual environment) and NOT_RUNTIME, and the top-level scripts."""
    folders = [
        path
        for path in sorted(root.iterdir())
        if path.is_dir() and not path.name.startswith(".") and path.name not in NOT_RUNTIME
    ]
    files = [file for folder in folders for file in sorted(folder.rglob("*.py"))]
    return [*sorted(root.glob("*.py")), *files]


def imported_modules(source: str) -> set[str]:
    """Absolute module names a module's source imports (``from x import y`` counts as ``x``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imports_tests(source: str) -> bool:
    return any(name == "tests" or name.startswith("tests.") for name in imported_modules(source))


def test_the_check_sees_every_kind_of_import_from_tests():
    assert imports_tests("from tests.support.model_folder import build_tiny_model_folder")
    assert imports_tests("import tests.support.model_folder as folder")
    assert imports_tests("def f():\n    from tests import conftest\n")  # function-local too
    assert not imports_tests("from inference.predictor import VertebraPredictor")
    assert not imports_tests("import testsuite\nfrom .tests import x")


def test_no_runtime_module_imports_from_tests():
    modules = runtime_modules(REPO)
    relative = {str(path.relative_to(REPO)) for path in modules}
    # The scan covers the apps, the core and the site (not a vacuous pass on an empty list).
    assert {"manage.py", "inference/predictor.py", "inference/tasks.py"} <= relative
    assert any(name.startswith("ctspine/") for name in relative)
    assert any(name.startswith("ctspine_site/") for name in relative)
    assert not any(name.startswith(("tests/", "bench/")) for name in relative)
    offenders = [str(p.relative_to(REPO)) for p in modules if imports_tests(p.read_text())]
    assert offenders == []
