"""The test tree's own rule: helpers shared between test modules live in tests/support/, and no
test module (or conftest) imports another, so each can be read, moved or deleted on its own."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from tests.e2e import test_media` imports a module too.
            folder = TESTS.parent.joinpath(*node.module.split("."))
            names.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (folder / f"{alias.name}.py").is_file()
            )
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if not (path.name.startswith("test_") or path.name == "conftest.py"):
            continue
        for module in imported_modules(path):
            last = module.rsplit(".", 1)[-1]
            if module.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                offenders.append(f"{path.relative_to(TESTS)} imports {module}")
    assert not offenders, offenders
